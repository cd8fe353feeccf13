"""Authorization queries between regions: a signed query, a signed answer bound to its nonce."""

from __future__ import annotations

from typing import Any

import pytest

from regiond.crypto.sign import RegionIdentityKey
from replication import frames
from replication.authorize import (
    MAX_AGE_S,
    AuthorizeError,
    answer_envelope,
    open_answer,
    open_query,
    query_envelope,
)
from replication.frames import Frame, FrameKind

US_KEY = RegionIdentityKey.generate()
EU_KEY = RegionIdentityKey.generate()
AP_KEY = RegionIdentityKey.generate()
US, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-2"
AT_US = {EU: EU_KEY.public_bytes(), AP: AP_KEY.public_bytes()}  # what us-east-1 knows of its peers
AT_EU = {US: US_KEY.public_bytes(), AP: AP_KEY.public_bytes()}
NOW_MS = 1_800_000_000_000
KEY_ID = "mrk-0123456789abcdef0123456789abcdef"
ALICE = "arn:aws:iam::111122223333:user/alice"


def ask(**overrides: Any) -> tuple[bytes, bytes]:
    fields: dict[str, Any] = {
        "source": US, "dest": EU, "principal_arn": ALICE, "action": "kms:UpdatePrimaryRegion", "key_id": KEY_ID,
        "values": {"kms:PrimaryRegion": (EU,), "aws:SourceIp": ("10.0.0.1",)}, "now_ms": NOW_MS,
    }  # fmt: skip
    identity = overrides.pop("identity", US_KEY)
    fields.update(overrides)
    return query_envelope(identity, **fields)


def test_a_query_and_its_answer_round_trip() -> None:
    envelope, nonce = ask()
    query = open_query(envelope, AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS + 1000)
    assert (query.source, query.principal_arn, query.action, query.key_id) == (
        US, ALICE, "kms:UpdatePrimaryRegion", KEY_ID,
    )  # fmt: skip
    assert query.values == {"kms:PrimaryRegion": (EU,), "aws:SourceIp": ("10.0.0.1",)}
    for allowed in (True, False):
        answer = answer_envelope(EU_KEY, query, local_region=EU, allowed=allowed, now_ms=NOW_MS)
        assert open_answer(answer, AT_US, local_region=US, asked=EU, nonce=nonce) is allowed


def test_the_nonces_differ_and_an_answer_fits_only_its_own_query() -> None:
    first, nonce1 = ask()
    _, nonce2 = ask()
    assert nonce1 != nonce2
    query = open_query(first, AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS)
    answer = answer_envelope(EU_KEY, query, local_region=EU, allowed=True, now_ms=NOW_MS)
    with pytest.raises(AuthorizeError, match="another query"):
        open_answer(answer, AT_US, local_region=US, asked=EU, nonce=nonce2)


def test_a_query_is_refused_unless_its_signer_is_the_connected_peer_and_it_is_for_us() -> None:
    envelope, _ = ask()
    with pytest.raises(AuthorizeError, match="connection"):
        open_query(envelope, AT_EU, local_region=EU, peer_region=AP, now_ms=NOW_MS)
    with pytest.raises(AuthorizeError, match="WrongDestination"):
        open_query(envelope, {US: US_KEY.public_bytes()}, local_region=AP, peer_region=US, now_ms=NOW_MS)
    forged, _ = ask(identity=AP_KEY)  # signed by ap-southeast-2 but claiming us-east-1
    with pytest.raises(AuthorizeError, match="BadSignature"):
        open_query(forged, AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS)
    tampered = envelope[:-1] + bytes([envelope[-1] ^ 1])
    with pytest.raises(AuthorizeError):
        open_query(tampered, AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS)


def test_a_stale_or_future_query_is_refused() -> None:
    envelope, _ = ask()
    late = NOW_MS + int(MAX_AGE_S * 1000) + 1
    with pytest.raises(AuthorizeError, match="fresh"):
        open_query(envelope, AT_EU, local_region=EU, peer_region=US, now_ms=late)
    with pytest.raises(AuthorizeError, match="fresh"):
        open_query(envelope, AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS - int(MAX_AGE_S * 1000) - 1)


def test_an_answer_from_another_region_than_the_one_asked_is_refused() -> None:
    envelope, nonce = ask(dest=AP)
    query = open_query(envelope, {US: US_KEY.public_bytes()}, local_region=AP, peer_region=US, now_ms=NOW_MS)
    answer = answer_envelope(AP_KEY, query, local_region=AP, allowed=True, now_ms=NOW_MS)
    with pytest.raises(AuthorizeError, match="asked eu-west-1"):
        open_answer(answer, AT_US, local_region=US, asked=EU, nonce=nonce)


def test_replication_frames_queries_and_answers_are_never_taken_for_one_another() -> None:
    envelope, nonce = ask()
    with pytest.raises(AuthorizeError, match="AUTHORIZE_ANSWER"):
        open_answer(envelope, {US: US_KEY.public_bytes()}, local_region=EU, asked=US, nonce=nonce)
    replicated = Frame(1, FrameKind.KEY_UPDATED, US, EU, 7, 1, {"key_id": KEY_ID}, NOW_MS)
    signed = frames.sign_frame(frames.encode(replicated), US_KEY)
    with pytest.raises(AuthorizeError, match="AUTHORIZE_QUERY"):
        open_query(signed, AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS)
    sequenced = Frame(1, FrameKind.AUTHORIZE_QUERY, US, EU, 7, 0, {"nonce": b"\0" * 16}, NOW_MS)
    with pytest.raises(AuthorizeError, match="unsequenced"):
        open_query(frames.sign_frame(frames.encode(sequenced), US_KEY), AT_EU, local_region=EU, peer_region=US,
                   now_ms=NOW_MS)  # fmt: skip


GOOD_VALUES = [{"key": "aws:SourceIp", "values": ["10.0.0.1"]}]


@pytest.mark.parametrize(
    "body",
    [
        {"nonce": b"short", "principal": ALICE, "action": "a", "key_id": KEY_ID, "values": GOOD_VALUES},
        {"nonce": b"\0" * 16, "principal": "", "action": "a", "key_id": KEY_ID, "values": GOOD_VALUES},
        {"nonce": b"\0" * 16, "principal": ALICE, "action": "a", "key_id": KEY_ID, "values": {"k": ["v"]}},
        {"nonce": b"\0" * 16, "principal": ALICE, "action": "a", "key_id": KEY_ID,
         "values": [{"key": "k", "values": [1]}]},
        {"nonce": b"\0" * 16, "principal": ALICE, "action": "a", "key_id": KEY_ID},
        {"nonce": b"\0" * 16, "principal": ALICE, "action": "x" * 5000, "key_id": KEY_ID, "values": GOOD_VALUES},
        {"nonce": b"\0" * 16, "principal": ALICE, "action": "a", "key_id": KEY_ID,
         "values": [{"key": f"k{i}", "values": []} for i in range(65)]},
        {"nonce": b"\0" * 16, "principal": ALICE, "action": "a", "key_id": KEY_ID, "values": GOOD_VALUES,
         "extra": True},
    ],
    ids=["short-nonce", "empty-principal", "values-a-map", "values-not-strings", "no-values", "huge-action",
         "too-many-values", "unknown-field"],
)  # fmt: skip
def test_a_malformed_query_body_is_refused(body: dict[str, Any]) -> None:
    frame = Frame(1, FrameKind.AUTHORIZE_QUERY, US, EU, 0, 0, body, NOW_MS)
    with pytest.raises(AuthorizeError):
        open_query(frames.sign_frame(frames.encode(frame), US_KEY), AT_EU, local_region=EU, peer_region=US,
                   now_ms=NOW_MS)  # fmt: skip


def test_an_oversized_envelope_is_refused_before_parsing() -> None:
    with pytest.raises(AuthorizeError, match="too large"):
        open_query(b"\x01" * (64 * 1024 + 1), AT_EU, local_region=EU, peer_region=US, now_ms=NOW_MS)
