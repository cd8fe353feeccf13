"""replication.peers: the peers file and server names."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from regiond.crypto.hpke import RegionEncryptionPrivateKey
from regiond.crypto.pki import make_cluster_ca
from regiond.crypto.sign import RegionIdentityKey
from replication.peers import PeersFileError, parse_topology, server_name, topology_document


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _document(**overrides: Any) -> dict[str, Any]:
    ca, _ = make_cluster_ca("test CA")
    regions = {
        name: (
            f"https://127.0.0.1:{7000 + i}",
            RegionIdentityKey.generate().public_bytes(),
            RegionEncryptionPrivateKey.generate().public_key().to_bytes(),
        )
        for i, name in enumerate(("us-east-1", "eu-west-1"))
    }
    doc = topology_document(iam_home_region="us-east-1", ca_cert_pem=ca, regions=regions)
    doc.update(overrides)
    return doc


def test_peers_file_round_trips_and_lists_peers_without_self() -> None:
    doc = json.loads(json.dumps(_document()))
    topo = parse_topology(doc, "eu-west-1")
    assert topo.peer_names == ["us-east-1"]
    assert set(topo.identity_keys()) == {"us-east-1"}  # our own frames are never accepted back
    assert topo.iam_home_region == "us-east-1"
    assert topo.peer("us-east-1").endpoint == "https://127.0.0.1:7000"
    with pytest.raises(PeersFileError):
        topo.peer("eu-west-1")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(iam_home_region="mars-north-1"), "iam_home_region"),
        (lambda d: d.update(ca_cert="not a cert"), "ca_cert"),
        (lambda d: d["regions"]["us-east-1"].update(endpoint="http://127.0.0.1:1"), "https"),
        (lambda d: d["regions"]["us-east-1"].update(identity_public_key="!!"), "base64"),
        (lambda d: d["regions"]["us-east-1"].update(identity_public_key=_b64(b"x" * 31)), "32"),
        (lambda d: d["regions"]["us-east-1"].update(encryption_public_key=_b64(b"x")), "malformed"),
        (lambda d: d["regions"].pop("eu-west-1"), "this region"),
    ],
)
def test_peers_file_refuses_malformed_documents(mutate: Any, message: str) -> None:
    doc = _document()
    mutate(doc)
    with pytest.raises(PeersFileError, match=message):
        parse_topology(doc, "eu-west-1")


def test_server_name_is_per_region() -> None:
    assert server_name("us-east-1") != server_name("eu-west-1")
    assert server_name("us-east-1").startswith("us-east-1.")
