"""Replication frames: canonical encode/decode, refusal of malformed input, signed envelopes."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regiond.crypto.sign import RegionIdentityKey
from replication import frames
from replication.frames import (
    BadSignatureError,
    Frame,
    FrameError,
    FrameKind,
    UnknownRegionError,
    WrongDestinationError,
)
from replication.messages import RESERVED_KINDS

US = RegionIdentityKey.generate()
EU = RegionIdentityKey.generate()
KNOWN = {"us-east-1": US.public_bytes(), "eu-west-1": EU.public_bytes()}


def make_frame(**overrides: Any) -> Frame:
    fields: dict[str, Any] = {
        "version": 1,
        "kind": FrameKind.KEY_MATERIAL,
        "source": "us-east-1",
        "dest": "eu-west-1",
        "seq": 42,
        "epoch": 3,
        "body": {"key_id": "mrk-0123456789abcdef0123456789abcdef", "sealed": b"\x01\x02", "version": 1},
        "sent_at_ms": 1_700_000_000_000,
    }
    fields.update(overrides)
    return Frame(**fields)


def raw_fields(frame: Frame) -> list[Any]:
    return [
        frame.version,
        int(frame.kind),
        frame.source,
        frame.dest,
        frame.seq,
        frame.epoch,
        frame.body,
        frame.sent_at_ms,
    ]


# --- encode / decode ---------------------------------------------------------------------------


def test_round_trip() -> None:
    frame = make_frame()
    assert frames.decode(frames.encode(frame)) == frame


def test_kind_numbers_are_stable() -> None:
    assert {k.name: k.value for k in FrameKind} == {
        "KEY_CREATED": 1,
        "KEY_MATERIAL": 2,
        "KEY_DELETED": 4,
        "PRIMARY_MOVED": 5,
        "IAM_CHANGE": 6,
        "HEARTBEAT": 7,
        "KEY_UPDATED": 8,
        "AUDIT_ANCHORS": 9,
        "AUTHORIZE_QUERY": 10,
        "AUTHORIZE_ANSWER": 11,
    }


def test_retired_kind_numbers_stay_unused_and_are_refused() -> None:
    # 3 was KEY_ROTATED, defined and never sent (a rotation travels as KEY_MATERIAL)
    assert set(RESERVED_KINDS) == {3} and not set(RESERVED_KINDS) & {k.value for k in FrameKind}
    raw = msgpack.packb([1, 3, *raw_fields(make_frame())[2:]], use_bin_type=True)
    with pytest.raises(FrameError, match="unknown frame kind"):
        frames.decode(raw)


def test_encoding_matches_documented_layout() -> None:
    frame = make_frame(body={"b": 1, "a": [True, None]})
    assert msgpack.unpackb(frames.encode(frame)) == [
        1,
        2,
        "us-east-1",
        "eu-west-1",
        42,
        3,
        {"a": [True, None], "b": 1},
        1_700_000_000_000,
    ]


def test_encoding_is_independent_of_body_insertion_order() -> None:
    a = make_frame(body={"x": 1, "y": {"q": 1, "p": 2}})
    b = make_frame(body={"y": {"p": 2, "q": 1}, "x": 1})
    assert frames.encode(a) == frames.encode(b)


def test_non_canonical_map_order_is_refused() -> None:
    frame = make_frame(body={"a": 1, "b": 2})
    fields = raw_fields(frame)
    fields[6] = {"b": 2, "a": 1}
    with pytest.raises(FrameError, match="canonical"):
        frames.decode(msgpack.packb(fields))


def test_non_minimal_integer_is_refused() -> None:
    fields = raw_fields(make_frame(seq=5))
    # seq 5 is canonically a positive fixint (0x05); spell it as a uint64 (0xcf + 8 bytes) instead.
    bloated = (
        b"\x98"
        + b"".join(msgpack.packb(f) for f in fields[:4])
        + b"\xcf"
        + struct.pack(">Q", 5)
        + b"".join(msgpack.packb(f) for f in fields[5:])
    )
    assert msgpack.unpackb(bloated) == msgpack.unpackb(frames.encode(make_frame(seq=5)))
    with pytest.raises(FrameError, match="canonical"):
        frames.decode(bloated)


@pytest.mark.parametrize("cut", [0, 1, 2, 10, -1])
def test_truncated_frames_are_refused(cut: int) -> None:
    data = frames.encode(make_frame())
    with pytest.raises(FrameError):
        frames.decode(data[:cut])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(FrameError):
        frames.decode(frames.encode(make_frame()) + b"\x00")


@pytest.mark.parametrize("version", [0, 2, 255, True])
def test_unknown_versions_are_refused(version: object) -> None:
    fields = raw_fields(make_frame())
    fields[0] = version
    with pytest.raises(FrameError, match="version"):
        frames.decode(msgpack.packb(fields))


@pytest.mark.parametrize("kind", [0, 12, 255, -1, "KEY_MATERIAL", True])
def test_unknown_kinds_are_refused(kind: object) -> None:
    fields = raw_fields(make_frame())
    fields[1] = kind
    with pytest.raises(FrameError, match="kind"):
        frames.decode(msgpack.packb(fields))


@pytest.mark.parametrize(
    "index,value",
    [
        (2, ""),
        (2, "US-EAST-1"),
        (2, "-bad"),
        (2, 7),
        (3, "x" * 65),
        (3, None),
        (4, -1),
        (4, 2**63),
        (4, "42"),
        (5, -1),
        (5, 1.5),
        (6, [1, 2]),
        (6, {"f": 1.0}),
        (6, {1: "int key"}),
        (6, {b"bytes key": 1}),
        (7, -5),
    ],
)
def test_malformed_fields_are_refused(index: int, value: object) -> None:
    fields = raw_fields(make_frame())
    fields[index] = value
    with pytest.raises(FrameError):
        frames.decode(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\x01", msgpack.packb({"version": 1}), msgpack.packb([])])
def test_garbage_is_refused(payload: bytes) -> None:
    with pytest.raises(FrameError):
        frames.decode(payload)


def test_wrong_field_count_is_refused() -> None:
    fields = raw_fields(make_frame())
    with pytest.raises(FrameError):
        frames.decode(msgpack.packb([*fields, 0]))
    with pytest.raises(FrameError):
        frames.decode(msgpack.packb(fields[:-1]))


def test_extension_types_are_refused() -> None:
    fields = raw_fields(make_frame())
    fields[6] = {"t": msgpack.ExtType(5, b"x")}
    with pytest.raises(FrameError, match="extension"):
        frames.decode(msgpack.packb(fields))


def test_deep_nesting_is_refused() -> None:
    body: dict[str, Any] = {}
    inner = body
    for _ in range(frames.MAX_BODY_DEPTH + 1):
        inner["n"] = {}
        inner = inner["n"]
    with pytest.raises(FrameError, match="deeper"):
        make_frame(body=body)


def test_oversize_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="larger"):
        frames.encode(make_frame(body={"blob": b"\x00" * frames.MAX_FRAME_BYTES}))
    with pytest.raises(FrameError, match="larger"):
        frames.decode(b"\x00" * (frames.MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize(
    "overrides",
    [
        {"version": 2},
        {"kind": 2},
        {"source": "Bad"},
        {"seq": -1},
        {"epoch": True},
        {"body": {"x": (1, 2)}},
        {"body": {"x": 1.0}},
        {"body": []},
        {"sent_at_ms": None},
    ],
)
def test_invalid_frames_cannot_be_built(overrides: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        make_frame(**overrides)


def test_unencodable_string_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        frames.encode(make_frame(body={"s": "\ud800"}))


# --- property test ------------------------------------------------------------------------------

regions = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
u63 = st.integers(min_value=0, max_value=2**63 - 1)
scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text() | st.binary()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
frame_strategy = st.builds(
    Frame,
    version=st.just(1),
    kind=st.sampled_from(FrameKind),
    source=regions,
    dest=regions,
    seq=u63,
    epoch=u63,
    body=st.dictionaries(st.text(max_size=12), values, max_size=6),
    sent_at_ms=u63,
)


@settings(max_examples=300, deadline=None)
@given(frame_strategy)
def test_encode_decode_round_trip_property(frame: Frame) -> None:
    data = frames.encode(frame)
    decoded = frames.decode(data)
    assert decoded == frame
    assert frames.encode(decoded) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_decode_of_arbitrary_bytes_raises_only_frame_error(data: bytes) -> None:
    try:
        frame = frames.decode(data)
    except FrameError:
        return
    assert frames.encode(frame) == data


# --- envelopes -----------------------------------------------------------------------------------


def envelope_for(frame: Frame | None = None, signer: RegionIdentityKey = US) -> bytes:
    return frames.sign_frame(frames.encode(frame or make_frame()), signer)


def test_signed_envelope_verifies() -> None:
    frame = make_frame()
    assert frames.verify_envelope(envelope_for(frame), KNOWN, local_region="eu-west-1") == frame


def test_envelope_layout() -> None:
    frame_bytes = frames.encode(make_frame())
    envelope = frames.sign_frame(frame_bytes, US)
    assert envelope[0] == frames.ENVELOPE_VERSION
    assert envelope[1] == len("us-east-1")
    assert envelope[2:11] == b"us-east-1"
    assert envelope[11 + 64 :] == frame_bytes


def test_signature_from_the_wrong_key_is_refused() -> None:
    with pytest.raises(BadSignatureError):
        frames.verify_envelope(envelope_for(signer=EU), KNOWN, local_region="eu-west-1")


def test_unknown_region_is_refused() -> None:
    stranger = RegionIdentityKey.generate()
    frame = make_frame(source="sa-east-1")
    with pytest.raises(UnknownRegionError):
        frames.verify_envelope(envelope_for(frame, stranger), KNOWN, local_region="eu-west-1")


def test_frame_for_another_region_is_refused() -> None:
    with pytest.raises(WrongDestinationError):
        frames.verify_envelope(envelope_for(), KNOWN, local_region="ap-southeast-2")


def test_every_bit_flip_of_an_envelope_is_refused() -> None:
    envelope = envelope_for()
    for bit in range(len(envelope) * 8):
        tampered = bytearray(envelope)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            frames.verify_envelope(bytes(tampered), KNOWN, local_region="eu-west-1")


def test_relabelled_signer_is_refused() -> None:
    # An attacker who controls eu-west-1's key signs a frame claiming to come from us-east-1.
    frame_bytes = frames.encode(make_frame(dest="ap-southeast-2"))
    signature = EU.sign(frames.SIGNING_CONTEXT + frame_bytes)
    forged = bytes([1, len(b"eu-west-1")]) + b"eu-west-1" + signature + frame_bytes
    with pytest.raises(BadSignatureError, match="source"):
        frames.verify_envelope(forged, KNOWN, local_region="ap-southeast-2")


def test_signature_without_context_label_is_refused() -> None:
    frame_bytes = frames.encode(make_frame())
    bare = US.sign(frame_bytes)
    envelope = bytes([1, 9]) + b"us-east-1" + bare + frame_bytes
    with pytest.raises(BadSignatureError):
        frames.verify_envelope(envelope, KNOWN, local_region="eu-west-1")


@pytest.mark.parametrize("cut", [0, 1, 2, 11, 11 + 63, 11 + 64, -1])
def test_truncated_envelopes_are_refused(cut: int) -> None:
    with pytest.raises(FrameError):
        frames.verify_envelope(envelope_for()[:cut], KNOWN, local_region="eu-west-1")


def test_unknown_envelope_version_is_refused() -> None:
    envelope = bytearray(envelope_for())
    envelope[0] = 2
    with pytest.raises(FrameError, match="envelope version"):
        frames.verify_envelope(bytes(envelope), KNOWN, local_region="eu-west-1")


def test_signing_a_malformed_frame_is_refused() -> None:
    with pytest.raises(FrameError):
        frames.sign_frame(b"\x93\x01\x02\x03", US)


def test_error_messages_carry_no_key_bytes() -> None:
    with pytest.raises(BadSignatureError) as info:
        frames.verify_envelope(envelope_for(signer=EU), KNOWN, local_region="eu-west-1")
    text = str(info.value)
    assert US.public_bytes().hex() not in text and EU.material().hex() not in text
