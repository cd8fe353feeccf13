"""Audit trail v2 segments: one stored row per group-commit batch, one hash chain per writer (issue 15).

A segment is what CloudTrail calls a log file: the unit of durable write. Its records are canonical
JSON lines — each record the exact ``orjson`` bytes of one event (orjson never writes a raw newline,
so ``\\n`` cannot occur inside a record) joined by ``\\n``. JSON lines was chosen over msgpack because
the records already exist as JSON bytes on the hot path (``events.py``): joining them costs one
``bytes.join`` where msgpack needs a second encoding of every event.

The stored body is those lines compressed as one zlib stream (RFC 1950, level 1). The events of a
batch share most of their bytes (principal, key ARN, user agent, field names), so the stream is
about an eighth of the lines: the row stays inline in its heap page instead of being cut into TOAST
chunks with their own index entries, and the region's database writes an eighth of the WAL and keeps
an eighth of the storage per event. Level 1 because the worker compresses on its event loop, and
higher levels gain little on this data (benchmarks/README.md, "Design figures"). A body that starts
with ``{`` is the uncompressed form that writers before compression stored; ``decode`` reads both (a
zlib stream starts with 0x78, a JSON line with ``{``: the first byte tells them apart), and the chain
hashes the stored bytes in either form.

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
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

__all__ = [
    "MAX_SEGMENT_RECORDS",
    "SegmentFormatError",
    "decode",
    "encode",
    "lines",
    "segment_hash",
    "writer_genesis",
]

HASH_BYTES = 32
MAX_SEGMENT_RECORDS = 65_535  # far above any group-commit batch; bounds what a reader allocates
_WRITER_LABEL = b"regionkms.audit.writer.v2\x00"
_SEGMENT_LABEL = b"regionkms.audit.segment.v2\x00"
_SEQ_COUNT = struct.Struct(">QI")
_SEPARATOR = b"\n"
_ZLIB_LEVEL = 1
_ZLIB_CMF = 0x78  # deflate with a 32 KiB window: the first byte of every stream zlib.compress writes
# What a stored body may expand to: far above a batch of max_batch_events records (each a few KiB),
# and what bounds the memory a reader spends on one row, whatever the row claims.
MAX_BODY_BYTES = 256 * 1024 * 1024


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
    return zlib.compress(_SEPARATOR.join(records), _ZLIB_LEVEL)


@dataclass(frozen=True, slots=True)
class _Where:
    writer_id: uuid.UUID
    seq: int

    def __str__(self) -> str:
        return f"segment {self.seq} of writer {self.writer_id}"


def _lines(where: _Where, body: bytes) -> bytes:
    """The JSON lines a stored body holds: the zlib stream inflated (whole, alone, bounded), or the
    uncompressed body of a segment stored before compression as it is."""
    if body[:1] != bytes([_ZLIB_CMF]):
        return body  # the uncompressed form (or garbage: the line checks say which)
    inflater = zlib.decompressobj()
    try:
        lines = inflater.decompress(body, MAX_BODY_BYTES)
    except zlib.error as e:
        raise SegmentFormatError(f"{where}: the body is not a valid zlib stream ({e})") from None
    if inflater.unconsumed_tail:
        raise SegmentFormatError(f"{where}: the body inflates to more than {MAX_BODY_BYTES} bytes")
    if not inflater.eof:
        raise SegmentFormatError(f"{where}: the body's zlib stream is truncated")
    if inflater.unused_data:
        raise SegmentFormatError(f"{where}: {len(inflater.unused_data)} bytes follow the body's zlib stream")
    return lines


def lines(writer_id: uuid.UUID, seq: int, body: bytes) -> bytes:
    """A stored body's JSON lines, unchecked (``decode`` checks them); SegmentFormatError if the body
    is a zlib stream that does not inflate. For a reader that wants one member of a damaged row."""
    return _lines(_Where(writer_id, seq), bytes(body))


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
    records = _lines(where, bytes(body)).split(_SEPARATOR)
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
