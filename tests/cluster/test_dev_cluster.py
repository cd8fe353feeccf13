"""`regiond dev` (what `make run` starts) as a newcomer uses it: start, use, stop, start again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from regiond.crypto import pki
from tests.support.dev import start_dev, stop_dev
from tests.support.modes import loose_modes

START_TIMEOUT_S = 90


def _start(state_dir: Path, *extra: str, banner: list[str] | None = None) -> subprocess.Popen[str]:
    # a usual login umask: whatever regiond writes must be private anyway
    return start_dev(state_dir, "us-east-1", *extra, umask=0o022, timeout_s=START_TIMEOUT_S, banner=banner)


def _stop(proc: subprocess.Popen[str]) -> None:
    stop_dev(proc)


def _client(cluster: dict) -> object:  # type: ignore[type-arg]
    return boto3.client(
        "kms",
        endpoint_url=cluster["regions"]["us-east-1"]["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=cluster["credentials"]["access_key_id"],
        aws_secret_access_key=cluster["credentials"]["secret_access_key"],
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.mark.timeout(240)
def test_dev_cluster_keeps_keys_users_and_access_keys_across_restarts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    proc = _start(state_dir)
    try:
        cluster = json.loads((state_dir / "cluster.json").read_text())
        assert set(cluster) >= {"account_id", "regions", "credentials"}
        assert set(cluster["regions"]["us-east-1"]) >= {"endpoint", "database_url"}
        kms = _client(cluster)
        key_id = kms.create_key(Description="survives restarts")["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"persist")["CiphertextBlob"]  # type: ignore[attr-defined]
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "regiond",
                "iam",
                "--cluster",
                str(state_dir / "cluster.json"),
                "create-user",
                "--account-id",
                "111122223333",
                "--user-name",
                "alice",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        assert json.loads(made.stdout)["arn"] == "arn:aws:iam::111122223333:user/alice"
    finally:
        _stop(proc)

    proc = _start(state_dir)
    try:
        again = json.loads((state_dir / "cluster.json").read_text())
        assert again["credentials"] == cluster["credentials"]
        kms = _client(again)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"persist"  # type: ignore[attr-defined]
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "regiond",
                "iam",
                "--cluster",
                str(state_dir / "cluster.json"),
                "list-users",
                "--account-id",
                "111122223333",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "user/alice" in listed.stdout
    finally:
        _stop(proc)


@pytest.mark.timeout(240)
def test_dev_cluster_writes_nothing_others_can_read(tmp_path: Path) -> None:
    """cluster.json holds the admin's secret and the logs anything a node says (issue 13, finding 11)."""
    state_dir = tmp_path / "state"
    proc = _start(state_dir)
    try:
        cluster = json.loads((state_dir / "cluster.json").read_text())
        _client(cluster).list_keys()  # type: ignore[attr-defined]
        written = {p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*")}
        assert {"cluster.json", "aws-config", "peers.json", "cluster-ca/ca.key", "us-east-1/regiond.log",
                "us-east-1/root.key", "us-east-1/tls/region.key",
                "us-east-1/postgres/pg_password"} <= written  # fmt: skip
        assert loose_modes(state_dir) == []
    finally:
        _stop(proc)
    assert loose_modes(state_dir) == []  # what stopping wrote too


def _aws_cli(config: Path, profile: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The real AWS CLI with only ``config`` (no credentials, region or CA in the environment)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_CONFIG_FILE": str(config),
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "awscli", "--profile", profile, "--output", "json", *args],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.timeout(240)
def test_dev_cluster_writes_an_aws_cli_profile_per_region(tmp_path: Path) -> None:
    """`AWS_CONFIG_FILE=.state/aws-config aws --profile eu-west-1 kms list-keys` works with nothing else set
    (issue 18 item 5), and each profile reaches its own region's node."""
    state_dir = tmp_path / "state"
    banner: list[str] = []
    proc = start_dev(state_dir, "us-east-1,eu-west-1", umask=0o022, timeout_s=START_TIMEOUT_S, banner=banner)
    try:
        cluster = json.loads((state_dir / "cluster.json").read_text())
        config = Path(cluster["aws_config"])
        assert config == (state_dir / "aws-config").resolve()
        assert config.stat().st_mode & 0o777 == 0o600
        assert any(f"AWS_CONFIG_FILE={config} aws --profile us-east-1" in line for line in banner)
        made = _aws_cli(config, "eu-west-1", "kms", "create-key", "--description", "via profile", home=tmp_path)
        assert made.returncode == 0, made.stderr
        arn = json.loads(made.stdout)["KeyMetadata"]["Arn"]
        assert arn.startswith("arn:aws:kms:eu-west-1:111122223333:key/")
        listed = _aws_cli(config, "eu-west-1", "kms", "list-keys", home=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert arn in {k["KeyArn"] for k in json.loads(listed.stdout)["Keys"]}
        other = _aws_cli(config, "us-east-1", "kms", "list-keys", home=tmp_path)
        assert other.returncode == 0, other.stderr
        assert arn not in {k["KeyArn"] for k in json.loads(other.stdout)["Keys"]}
        unknown = _aws_cli(config, "us-west-2", "kms", "list-keys", home=tmp_path)
        assert unknown.returncode != 0 and "us-west-2" in unknown.stderr
    finally:
        _stop(proc)


@pytest.mark.timeout(240)
def test_dev_cluster_with_tls_is_reached_by_the_aws_cli_and_kmsclient_through_its_ca_bundle(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    banner: list[str] = []
    proc = _start(state_dir, "--tls", banner=banner)
    try:
        cluster = json.loads((state_dir / "cluster.json").read_text())
        endpoint = cluster["regions"]["us-east-1"]["endpoint"]
        assert endpoint.startswith("https://")
        assert f"export AWS_CA_BUNDLE={cluster['ca_bundle']}\n" in banner
        creds = cluster["credentials"]
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_CONFIG_FILE": "/dev/null",
               "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_ACCESS_KEY_ID": creds["access_key_id"],
               "AWS_SECRET_ACCESS_KEY": creds["secret_access_key"], "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        aws = [sys.executable, "-m", "awscli", "kms", "list-keys", "--endpoint-url", endpoint]
        untrusted = subprocess.run(aws, env=env, capture_output=True, text=True, timeout=60)
        assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        trusted = subprocess.run(aws, env={**env, "AWS_CA_BUNDLE": cluster["ca_bundle"]}, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        assert trusted.returncode == 0, trusted.stderr

        profile = _aws_cli(state_dir / "aws-config", "us-east-1", "kms", "list-keys", home=tmp_path)
        assert profile.returncode == 0, profile.stderr  # the profile names the CA bundle itself

        kms = boto3.client(
            "kms", endpoint_url=endpoint, region_name="us-east-1", verify=cluster["ca_bundle"],
            aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
        )  # fmt: skip
        key = kms.create_key()["KeyMetadata"]["Arn"]
        kmsclient = [str(Path(sys.executable).parent / "kmsclient"), "--cluster", str(state_dir / "cluster.json")]
        sealed = subprocess.run([*kmsclient, "encrypt", "--key", key, "-i", "-", "-o", "-"], input=b"over tls",
                                capture_output=True, env=env, timeout=60)  # fmt: skip
        assert sealed.returncode == 0, sealed.stderr
        opened = subprocess.run([*kmsclient, "decrypt", "-i", "-", "-o", "-"], input=sealed.stdout,
                                capture_output=True, env=env, timeout=60)  # fmt: skip
        assert opened.returncode == 0 and opened.stdout == b"over tls", opened.stderr
        other_ca = tmp_path / "other-ca.crt"
        other_ca.write_bytes(pki.make_cluster_ca("not the cluster CA")[0])
        refused = subprocess.run([*kmsclient, "decrypt", "-i", "-", "-o", "-"], input=sealed.stdout,
                                 capture_output=True, text=False, env={**env, "AWS_CA_BUNDLE": str(other_ca)},
                                 timeout=60)  # fmt: skip
        assert refused.returncode == 1 and refused.stdout == b""
        message = refused.stderr.decode()
        assert "not trusted" in message and len(message.strip().splitlines()) == 1, message
    finally:
        _stop(proc)
