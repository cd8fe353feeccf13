"""kmsclient's settings: where the CA bundle for TLS endpoints comes from, and a bad one refused early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmsclient.config import load_config
from kmsclient.errors import ConfigurationError
from kmsclient.transport import AiohttpTransport
from regiond.crypto import pki

CREDS = {"access_key_id": "AKIAEXAMPLEEXAMPLE00", "secret_access_key": "x" * 40}


def _cluster_file(directory: Path, **members: object) -> Path:
    path = directory / "cluster.json"
    regions = {"us-east-1": {"endpoint": "https://127.0.0.1:1"}}
    path.write_text(json.dumps({"account_id": "111122223333", "regions": regions, "credentials": CREDS, **members}))
    return path


def test_the_cluster_files_ca_bundle_is_found_beside_it_and_aws_ca_bundle_wins(tmp_path: Path) -> None:
    absolute = tmp_path / "ca.crt"
    assert load_config(cluster_file=_cluster_file(tmp_path, ca_bundle=str(absolute)), environ={}).ca_bundle == str(
        absolute
    )
    relative = load_config(cluster_file=_cluster_file(tmp_path, ca_bundle="cluster-ca/ca.crt"), environ={})
    assert relative.ca_bundle == str(tmp_path / "cluster-ca" / "ca.crt")
    chosen = load_config(cluster_file=_cluster_file(tmp_path, ca_bundle="a.crt"), environ={"AWS_CA_BUNDLE": "/b.crt"})
    assert chosen.ca_bundle == "/b.crt"
    assert load_config(cluster_file=_cluster_file(tmp_path), environ={}).ca_bundle is None


BROKEN_PEM = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("content", [None, b"", BROKEN_PEM])
def test_a_missing_or_unreadable_ca_bundle_is_a_one_line_configuration_error(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_bytes(content)
    expected = r"cannot use the CA bundle bundle\.pem: (No such file|not PEM)"
    with pytest.raises(ConfigurationError, match=expected) as info:
        AiohttpTransport(ca_bundle=str(path))
    assert "\n" not in str(info.value) and str(tmp_path) not in str(info.value)


def test_a_ca_bundle_with_a_certificate_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    path.write_bytes(pki.make_cluster_ca("test CA")[0])
    AiohttpTransport(ca_bundle=str(path))
