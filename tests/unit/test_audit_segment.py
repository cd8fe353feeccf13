"""Audit trail v2 segments: the body codec and the per-writer chain link (issue 15)."""

from __future__ import annotations

import uuid
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regiond.audit import segment
from regiond.audit.segment import SegmentFormatError

WRITER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _record(n: int) -> bytes:
    return orjson.dumps({"eventID": str(uuid.UUID(int=n)), "eventTime": "2026-12-04T06:00:00Z", "n": n})


def test_round_trip() -> None:
    records = [_record(i) for i in range(5)]
    assert segment.decode(WRITER, 1, 5, segment.encode(records)) == records


def test_body_is_the_lines_compressed_and_the_uncompressed_form_still_reads() -> None:
    """Segments stored before compression (the body the JSON lines themselves) stay readable."""
    records = [_record(i) for i in range(40)]
    lines = b"\n".join(records)
    body = segment.encode(records)
    assert zlib.decompress(body) == lines and len(body) < len(lines) // 4
    assert segment.decode(WRITER, 1, 40, lines) == records


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (zlib.compress(_record(1))[:-3], "truncated"),
        (b"\x78\x01garbage", "not a valid zlib stream"),
        (zlib.compress(_record(1)) + b"x", "1 bytes follow"),
        (zlib.compress(zlib.compress(_record(1))), "not JSON"),
    ],
)
def test_decode_refuses_a_damaged_stream(body: bytes, message: str) -> None:
    with pytest.raises(SegmentFormatError, match=message):
        segment.decode(WRITER, 3, 1, body)


def test_decode_bounds_what_a_body_inflates_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment, "MAX_BODY_BYTES", 1000)
    with pytest.raises(SegmentFormatError, match="inflates to more than 1000 bytes"):
        segment.decode(WRITER, 3, 1, zlib.compress(b"{" + b" " * 5000))


def test_hash_covers_writer_seq_count_and_body() -> None:
    body = segment.encode([_record(1), _record(2)])
    prev = segment.writer_genesis("us-east-1", WRITER)
    h = segment.segment_hash(prev, WRITER, 1, 2, body)
    assert h != segment.segment_hash(prev, uuid.uuid4(), 1, 2, body)
    assert h != segment.segment_hash(prev, WRITER, 2, 2, body)
    assert h != segment.segment_hash(prev, WRITER, 1, 1, body)
    assert h != segment.segment_hash(prev, WRITER, 1, 2, body + b" ")
    assert h != segment.segment_hash(segment.writer_genesis("eu-west-1", WRITER), WRITER, 1, 2, body)


def test_encode_refuses_empty_and_multiline() -> None:
    with pytest.raises(ValueError):
        segment.encode([])
    with pytest.raises(ValueError):
        segment.encode([b'{"a":1}\n{"b":2}'])


@pytest.mark.parametrize(
    ("count", "body", "message"),
    [
        (2, _record(1), "holds 1 lines, the row says 2"),
        (1, b"not json", "record 1: not JSON"),
        (1, b"[1,2]", "a list, not a JSON object"),
        (1, b'{"eventID":"x"}', "no eventTime"),
        (1, b'{"eventID": "x", "eventTime": "t"}', "not canonical"),
        (0, b"", "record count 0"),
    ],
)
def test_decode_names_the_fault_and_the_segment(count: int, body: bytes, message: str) -> None:
    with pytest.raises(SegmentFormatError, match=message) as e:
        segment.decode(WRITER, 7, count, body)
    assert f"segment 7 of writer {WRITER}" in str(e.value)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=400).map(zlib.compress),  # the inflater's path, past the first byte
        st.lists(st.integers(0, 10**6), min_size=1, max_size=5).map(lambda ns: b"\n".join(_record(n) for n in ns)),
        st.lists(st.integers(0, 10**6), min_size=1, max_size=5).map(
            lambda ns: zlib.compress(b"\n".join(_record(n) for n in ns))
        ),
    ),
    count=st.integers(min_value=-2, max_value=6),
    seq=st.integers(-1, 5),
)
def test_decode_refuses_malformed_rows_with_a_clear_error(body: bytes, count: int, seq: int) -> None:
    """Any row: either it decodes to records ``encode`` gives back unchanged, or SegmentFormatError."""
    try:
        records = segment.decode(WRITER, seq, count, body)
    except SegmentFormatError as e:
        assert str(e).startswith(f"segment {seq} of writer {WRITER}")
        return
    assert len(records) == count and segment.decode(WRITER, seq, count, segment.encode(records)) == records
    assert body[:1] == b"\x78" or b"\n".join(records) == body


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=20), st.data())
def test_one_changed_byte_is_refused_or_changes_the_hash(ns: list[int], data: st.DataObject) -> None:
    body = segment.encode([_record(n) for n in ns])
    i = data.draw(st.integers(0, len(body) - 1))
    damaged = body[:i] + bytes([body[i] ^ data.draw(st.integers(1, 255))]) + body[i + 1 :]
    prev = segment.writer_genesis("us-east-1", WRITER)
    try:
        segment.decode(WRITER, 1, len(ns), damaged)
    except SegmentFormatError:
        return
    assert segment.segment_hash(prev, WRITER, 1, len(ns), damaged) != segment.segment_hash(
        prev, WRITER, 1, len(ns), body
    )
