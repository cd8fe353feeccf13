"""Replication's pure parts: backoff, the epoch rule, the peers file, the channel codec, outbox guards."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import pytest

from regiond.crypto.hpke import RegionEncryptionPrivateKey
from regiond.crypto.pki import make_cluster_ca
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import outbox
from regiond.store.locks import sender_lock_key as lock_key
from regiond.store.outbox import Outbox, OutboxKind
from replication import channel
from replication.apply import epoch_admits
from replication.channel import Ack, ChannelError
from replication.peers import PeersFileError, parse_topology, server_name, topology_document
from replication.sender import MIN_DELAY_S, Backoff

MRK = "mrk-0123456789abcdef0123456789abcdef"
SRK = "0b3f1e2a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


# --- backoff ----------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_then_caps() -> None:
    top = Backoff(base_s=0.1, cap_s=2.0, rand=lambda: 1.0)
    assert [top.delay(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert top.delay(10_000) == 2.0  # no overflow for a long outage


def test_backoff_is_full_jitter_with_a_floor() -> None:
    assert Backoff(base_s=0.1, cap_s=2.0, rand=lambda: 0.5).delay(3) == pytest.approx(0.4)
    assert Backoff(base_s=0.1, cap_s=2.0, rand=lambda: 0.0).delay(3) == MIN_DELAY_S


def test_sender_lock_key_is_a_stable_int4() -> None:
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2", "x" * 64):
        assert -(2**31) <= lock_key(region) < 2**31
        assert lock_key(region) == lock_key(region)
    assert lock_key("us-east-1") != lock_key("eu-west-1")


# --- the epoch rule ---------------------------------------------------------------------------


def test_newer_epoch_is_admitted_from_anyone() -> None:
    assert epoch_admits(3, "eu-west-1", 2, "us-east-1")


def test_same_epoch_is_admitted_only_from_its_primary() -> None:
    assert epoch_admits(2, "us-east-1", 2, "us-east-1")
    assert not epoch_admits(2, "eu-west-1", 2, "us-east-1")


def test_stale_epoch_is_refused_even_from_the_old_primary() -> None:
    assert not epoch_admits(1, "us-east-1", 2, "eu-west-1")
    assert not epoch_admits(1, "us-east-1", 2, "us-east-1")


# --- peers file ---------------------------------------------------------------------------------


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


# --- channel codec --------------------------------------------------------------------------------


def test_batch_round_trips() -> None:
    envelopes = [b"\x01abc", b"", bytes(range(256))]
    assert channel.decode_batch(channel.encode_batch(envelopes)) == envelopes


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([2, []]),  # unknown version
        msgpack.packb([True, []]),  # bool is not a version
        msgpack.packb([1, ["text, not bin"]]),
        msgpack.packb([1, [b"x"] * (channel.MAX_BATCH_FRAMES + 1)]),
        msgpack.packb({"v": 1}),
    ],
)
def test_malformed_batches_are_refused(data: bytes) -> None:
    with pytest.raises(ChannelError):
        channel.decode_batch(data)


def test_ack_round_trips_and_refuses_garbage() -> None:
    ack = Ack("eu-west-1", 42, channel.Refusal.GAP, "expected seq 43, got 45")
    assert channel.decode_ack(channel.encode_ack(ack)) == ack
    for bad in ({"v": 1, "region": "x", "applied": -1}, {"v": 1, "region": "x", "applied": True},
                {"v": 2, "region": "x", "applied": 1}):  # fmt: skip
        with pytest.raises(ChannelError):
            channel.decode_ack(msgpack.packb(bad))


# --- outbox guards (checked before any database work) ----------------------------------------------


class _NoDatabase:
    """Fails the test if the outbox touches the database before its checks."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"outbox used the connection ({name}) before refusing")


async def test_single_region_key_is_refused_by_the_outbox() -> None:
    for kind in (k for k in OutboxKind if k.is_key):
        with pytest.raises(ValueError, match="multi-region"):
            await outbox.append(_NoDatabase(), dests=["eu-west-1"], kind=kind, body={}, key_id=SRK)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multi-region"):
        await outbox.append(_NoDatabase(), dests=["eu-west-1"], kind=OutboxKind.KEY_CREATED, body={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multi-region"):  # uppercase: not a canonical id
        await outbox.append(_NoDatabase(), dests=["x"], kind=OutboxKind.KEY_MATERIAL, body={}, key_id=MRK.upper())  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [{"secret": b"raw bytes"}, {"ratio": 0.5}, {1: "non-string key"}, {"x": object()}])
async def test_outbox_bodies_carry_no_bytes_or_floats(body: dict[Any, Any]) -> None:
    with pytest.raises(ValueError):
        await outbox.append(_NoDatabase(), dests=["x"], kind=OutboxKind.KEY_UPDATED, body=body, key_id=MRK)  # type: ignore[arg-type]


async def test_iam_is_writable_only_in_the_home_region() -> None:
    home = Outbox(region="us-east-1", peers=["us-east-1", "eu-west-1"], iam_home_region="us-east-1")
    away = Outbox(region="eu-west-1", peers=["us-east-1", "eu-west-1"], iam_home_region="us-east-1")
    assert home.is_iam_home and home.peers == ("eu-west-1",)
    assert not away.is_iam_home
    with pytest.raises(RuntimeError, match="written in us-east-1"):
        await away.append_iam(_NoDatabase(), {"op": "account"})  # type: ignore[arg-type]
