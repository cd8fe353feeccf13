"""Audit trail v2 segments: one stored row per group-commit batch, one hash chain per writer (issue 15).

A segment is what CloudTrail calls a log file: the unit of durable write. Its body is the batch's
records as canonical JSON lines — each record the exact ``orjson`` bytes of one event (orjson never
writes a raw newline, so ``\\n`` cannot occur inside a record) joined by ``\\n``. JSON lines was
chosen over msgpack because the records already exist as JSON bytes on the hot path (``events.py``):
joining them costs one ``bytes.join`` where msgpack needs a second encoding of every event, and an
export wraps the same bytes into CloudTrail's ``{"Records": [...]}`` without decoding them.

Chain (one per writer: a worker process, with a writer id made when it starts; no lock is shared
between writers, nodes or regions):

    genesis(region, writer) = SHA-256("regionkms.audit.writer.v2" || 0x00 || region || 0x00 || writer_id)
    hash(segment)           = SHA-256("regionkms.audit.segment.v2" || 0x00 || prev_hash || writer_id
                                      || u64be(seq) || u32be(count) || body)

``writer_id`` is the 16 raw bytes of a UUID, ``seq`` the segment's number in its writer's chain
(1, 2, ...), ``count`` the number of records. The sequence number and the writer are hashed (unlike
v1's per-event chain) because a segment is only ever read whole: a segment moved to another writer
or another place of its chain fails its own hash, not just its neighbour's link.

``decode`` is the one reader of a stored body: it refuses anything that is not exactly what
``encode`` writes, with a message naming the writer and the segment, so a damaged row is reported
where it is instead of surfacing as a wrong event later.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

__all__ = [
    "MAX_SEGMENT_RECORDS",
    "SegmentFormatError",
    "decode",
    "encode",
    "segment_hash",
    "writer_genesis",
]

HASH_BYTES = 32
MAX_SEGMENT_RECORDS = 65_535  # far above any group-commit batch; bounds what a reader allocates
_WRITER_LABEL = b"regionkms.audit.writer.v2\x00"
_SEGMENT_LABEL = b"regionkms.audit.segment.v2\x00"
_SEQ_COUNT = struct.Struct(">QI")
_SEPARATOR = b"\n"


class SegmentFormatError(ValueError):
    """A stored segment is not one ``encode`` could have written; the message says which and why."""


def writer_genesis(region: str, writer_id: uuid.UUID) -> bytes:
    """What a writer's first segment links to: two writers' or regions' chains can never be spliced."""
    return hashlib.sha256(_WRITER_LABEL + region.encode() + b"\x00" + writer_id.bytes).digest()


def segment_hash(prev_hash: bytes, writer_id: uuid.UUID, seq: int, count: int, body: bytes) -> bytes:
    """The chain link of one segment (format in the module docstring)."""
    h = hashlib.sha256(_SEGMENT_LABEL)
    h.update(prev_hash)
    h.update(writer_id.bytes)
    h.update(_SEQ_COUNT.pack(seq, count))
    h.update(body)
    return h.digest()


def encode(records: Sequence[bytes]) -> bytes:
    """The body of a segment holding ``records`` (each one event's canonical JSON bytes)."""
    if not records:
        raise ValueError("a segment holds at least one record")
    if len(records) > MAX_SEGMENT_RECORDS:
        raise ValueError(f"a segment holds at most {MAX_SEGMENT_RECORDS} records, not {len(records)}")
    for r in records:
        if _SEPARATOR in r:
            raise ValueError("an audit record is one line of JSON (orjson never writes a raw newline)")
    return _SEPARATOR.join(records)


@dataclass(frozen=True, slots=True)
class _Where:
    writer_id: uuid.UUID
    seq: int

    def __str__(self) -> str:
        return f"segment {self.seq} of writer {self.writer_id}"


def decode(writer_id: uuid.UUID, seq: int, count: int, body: bytes) -> list[bytes]:
    """The records of a stored segment, each checked to be one JSON object with an ``eventID`` and an
    ``eventTime``; raises ``SegmentFormatError`` naming the segment for anything else."""
    where = _Where(writer_id, seq)
    if seq < 1:
        raise SegmentFormatError(f"{where}: sequence numbers start at 1")
    if not 1 <= count <= MAX_SEGMENT_RECORDS:
        raise SegmentFormatError(f"{where}: record count {count} is outside 1..{MAX_SEGMENT_RECORDS}")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise SegmentFormatError(f"{where}: the body is {type(body).__name__}, not bytes")
    records = bytes(body).split(_SEPARATOR)
    if len(records) != count:
        raise SegmentFormatError(f"{where}: the body holds {len(records)} lines, the row says {count} records")
    for i, record in enumerate(records, 1):
        try:
            value = orjson.loads(record)
        except orjson.JSONDecodeError as e:
            raise SegmentFormatError(f"{where}, record {i}: not JSON ({e.msg})") from None
        if not isinstance(value, dict):
            raise SegmentFormatError(f"{where}, record {i}: a {type(value).__name__}, not a JSON object")
        for member in ("eventID", "eventTime"):
            if not isinstance(value.get(member), str):
                raise SegmentFormatError(f"{where}, record {i}: no {member} text")
        if orjson.dumps(value) != record:
            raise SegmentFormatError(f"{where}, record {i}: not canonical JSON (written otherwise than encode does)")
    return records
