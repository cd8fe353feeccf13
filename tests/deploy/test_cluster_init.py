"""``regiond cluster init``: the files of a cluster, made without questions, and kept when run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regiond import statedir
from regiond.cli.cluster import cmd_cluster
from regiond.crypto import pki
from regiond.runtime.client_tls import ServerCertificate
from replication.peers import load_topology
from tests.deploy.files import regiond_args

REGIONS = ["--region", "us-east-1=https://a.example:9443", "--region", "eu-west-1=https://b.example:9443"]


def _init(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    args = regiond_args(["cluster", "init", "--dir", str(tmp_path / "c"), *REGIONS, *extra])
    code = cmd_cluster(args)
    out, err = capsys.readouterr()
    return code, out, err


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_cluster_is_made_then_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _init(tmp_path, capsys, "--hostname", "eu-west-1=kms.eu.example")
    assert code == 0
    report = json.loads(out)
    assert report["home_region"] == "us-east-1"
    root = tmp_path / "c"
    topology = load_topology(root / "peers.json", "eu-west-1")
    assert topology.peer("us-east-1").endpoint == "https://a.example:9443"
    assert topology.ca_cert_pem == (root / "ca.crt").read_bytes() == (root / "cluster-ca" / "ca.crt").read_bytes()
    for region in ("us-east-1", "eu-west-1"):
        state = root / region
        assert statedir.load_region_tls(state, statedir.load_root_keyring(state)) is not None
        entry = report["regions"][region]
        ServerCertificate(Path(entry["tls_cert"]), Path(entry["tls_key"]))
        cert = Path(entry["tls_cert"]).read_bytes()
        assert pki.issued_by(cert, topology.ca_cert_pem)
    names = pki.cert_hostnames(Path(report["regions"]["eu-west-1"]["tls_cert"]).read_bytes())
    assert names == {*pki.DEFAULT_HOSTNAMES, "kms.eu.example"}
    before = _files(root)
    assert _init(tmp_path, capsys, "--hostname", "eu-west-1=kms.eu.example")[0] == 0
    assert _files(root) == before, "running again must keep every key and certificate"
    assert _init(tmp_path, capsys, "--hostname", "eu-west-1=kms2.eu.example")[0] == 0
    after = _files(root)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"eu-west-1/client-tls/cert.pem", "eu-west-1/client-tls/key.pem"}


def test_the_ca_may_live_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _init(tmp_path, capsys, "--ca-dir", str(tmp_path / "offline-ca"), "--home-region", "eu-west-1")[0] == 0
    assert (tmp_path / "offline-ca" / "ca.key").is_file() and not (tmp_path / "c" / "cluster-ca").exists()
    assert load_topology(tmp_path / "c" / "peers.json", "us-east-1").iam_home_region == "eu-west-1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--region", "ap-southeast-2=http://c.example:9443"], "must be an https:// URL"),
        (["--region", "us-east-1=https://again:9443"], "each region may be given once"),
        (["--region", "ap-southeast-2"], "--region must be REGION=REPLICATION_ENDPOINT"),
        (["--hostname", "us-west-2=x.example"], "--hostname names us-west-2, which is not a --region"),
        (["--home-region", "us-west-2"], "--home-region us-west-2 is not a --region"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = _init(tmp_path, capsys, *extra)
    assert (code, out) == (2, "")
    assert err.startswith("regiond cluster: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists(), "nothing is written before the arguments are known to be good"
