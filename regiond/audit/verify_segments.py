"""``regiond audit verify`` over audit trail v2: every writer's chain of segments (docs/AUDIT.md).

Each writer registered in ``audit_writers`` whose genesis is this region's (``segment.writer_genesis``)
is walked in seq order. How each tampering shows:

* **segment-changed** - a segment whose stored bytes no longer hash to its stored hash (the hash
  covers the writer, the seq, the record count and the body, so a renumbered or moved row fails too).
* **segment-reordered** - a segment whose own hash holds, but for another place of its chain: its
  link names the segment stored at seq k, so it was written as seq k + 1 (two rows swapped).
* **segment-deleted** - seqs missing in a writer's chain (they start at 1 and are contiguous).
* **segment-broken** - a segment that links to no stored segment although none is missing before it:
  the segment before it was changed and re-hashed.
* **segment-malformed** - a body ``segment.decode`` refuses (its message says why), or records of
  another region.
* **segment-time-changed** - ``first_time``/``last_time`` (what ``audit query`` and ``--from/--to``
  prune on) disagree with the eventTimes of the hashed records, so a query could skip the segment.
* **writer-genesis** - a writer row whose genesis is not the one its id and region give.
* **writer-unregistered** - segments of a writer id that ``audit_writers`` does not hold (a row
  inserted from outside, or the writer's row deleted).

A truncated tail (the newest segments of a writer deleted) and a writer deleted whole (its row and
its segments) leave a chain that is consistent on its own: the signed digests over every writer's
head detect those (``WriterHead`` is what this walk hands the digest check).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from regiond.audit import segment
from regiond.domain.ids import require_region_name
from regiond.store import audit as v1_store
from regiond.store import audit_digests as digest_store
from regiond.store import audit_segments as store
from regiond.store.pool import Conn

REORDER_WINDOW = 64  # a segment moved farther reads as changed (hashes tried per bad segment: twice this)

__all__ = [
    "FindingSink",
    "PrunedHead",
    "WriterHead",
    "check_content",
    "check_writers",
    "record_second",
    "segment_times",
    "trail_regions",
]


@dataclass(frozen=True, slots=True)
class WriterHead:
    """The last segment of a writer's chain as stored (``seq`` 0 and the genesis: none yet)."""

    writer_id: uuid.UUID
    seq: int
    hash: bytes
    segments_checked: int


def record_second(text: str) -> dt.datetime:
    """A record's ``eventTime`` (``YYYY-MM-DDTHH:MM:SSZ``) as an aware datetime."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def segment_times(events: Sequence[dict[str, Any]]) -> tuple[dt.datetime, dt.datetime]:
    """The ``first_time``/``last_time`` a segment of these events must carry (whole seconds, as hashed)."""
    times = [record_second(e["eventTime"]) for e in events]
    return min(times), max(times)


class FindingSink(Protocol):
    """Where findings go: ``verify.Report`` (a protocol, so this module needs nothing of verify)."""

    def add_writer(self, kind: str, writer: uuid.UUID | None, seq: int | None, detail: str) -> None: ...


def _span(first: int, last: int) -> str:
    return f"segment {first}" if first == last else f"segments {first}..{last}"


def check_content(sink: FindingSink, region: str, row: store.SegmentRow) -> None:
    """Decode the body; check the records' region and the time columns against them."""
    try:
        records = segment.decode(row.writer_id, row.seq, row.record_count, row.body)
    except segment.SegmentFormatError as exc:
        sink.add_writer("segment-malformed", row.writer_id, row.seq, str(exc))
        return
    events = [orjson.loads(r) for r in records]
    others = sorted({str(e.get("awsRegion")) for e in events} - {region})
    if others:
        sink.add_writer("segment-malformed", row.writer_id, row.seq,
                        f"it holds records of region {', '.join(others)}")  # fmt: skip
    try:
        first, last = segment_times(events)
    except ValueError:
        sink.add_writer("segment-malformed", row.writer_id, row.seq, "a record's eventTime is not a UTC second")
        return
    if (row.first_time, row.last_time) != (first, last):
        sink.add_writer("segment-time-changed", row.writer_id, row.seq,
                        "its first_time/last_time columns disagree with its records' eventTime (queries and "
                        "time ranges prune on them)")  # fmt: skip


def _written_at(row: store.SegmentRow) -> int | None:
    """The seq (within ``REORDER_WINDOW`` of where it is stored) a segment's own hash was made for."""
    for seq in range(max(1, row.seq - REORDER_WINDOW), row.seq + REORDER_WINDOW + 1):
        if seq != row.seq and segment.segment_hash(
                row.prev_hash, row.writer_id, seq, row.record_count, row.body) == row.hash:  # fmt: skip
            return seq
    return None


class PrunedHead(Protocol):
    """Where a pruned writer's kept chain starts (``regiond.audit.prune.Boundary``, a signed record's)."""

    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> bytes: ...


async def _walk_writer(
    con: Conn, sink: FindingSink, region: str, w: store.WriterRow, since: dt.datetime | None, until: dt.datetime | None,
    pruned: PrunedHead | None = None,
) -> WriterHead:  # fmt: skip
    ranged = since is not None or until is not None
    expected_seq = 1
    expected_prev: bytes | None = w.genesis
    last_seq, last_hash = 0, w.genesis
    if pruned is not None:  # the chain starts after the last segment a signed prune record removed
        expected_seq, expected_prev = pruned.seq + 1, pruned.hash
        last_seq, last_hash = pruned.seq, pruned.hash
    checked = 0
    async for row in store.iter_writer_segments(con, w.writer_id, since, until):
        if pruned is not None and row.seq <= pruned.seq:
            continue  # left over by a prune that recorded them removed: nothing relies on them
        checked += 1
        if ranged and checked == 1:  # a range starts mid-chain: its first link is taken as stored
            expected_seq, expected_prev = row.seq, row.prev_hash
        check_content(sink, region, row)
        own = segment.segment_hash(row.prev_hash, row.writer_id, row.seq, row.record_count, row.body)
        if row.seq > expected_seq:
            sink.add_writer("segment-deleted", w.writer_id, expected_seq,
                            f"{_span(expected_seq, row.seq - 1)} missing from the chain")  # fmt: skip
        if own != row.hash:
            written = _written_at(row)
            if written is not None:
                sink.add_writer("segment-reordered", w.writer_id, row.seq,
                                f"it was written as segment {written} of this chain")  # fmt: skip
            else:
                sink.add_writer("segment-changed", w.writer_id, row.seq, "its content no longer matches its hash")
        elif row.prev_hash != expected_prev and row.seq == expected_seq:
            sink.add_writer(
                "segment-broken",
                w.writer_id,
                row.seq,
                "it links to no stored segment: the segment before it was changed and re-hashed",
            )
        expected_seq, expected_prev = row.seq + 1, row.hash
        last_seq, last_hash = row.seq, row.hash
    return WriterHead(w.writer_id, last_seq, last_hash, checked)


async def check_writers(
    con: Conn, sink: FindingSink, region: str, regions: Sequence[str],
    since: dt.datetime | None = None, until: dt.datetime | None = None,
    pruned: Mapping[uuid.UUID, PrunedHead] | None = None,
) -> list[WriterHead]:  # fmt: skip
    """Walk every writer chain of ``region`` (``regions``: every region of the database, to tell a
    writer of another region from one whose genesis was changed); return each writer's stored head."""
    heads: list[WriterHead] = []
    for w in await store.writers(con):
        if w.genesis != segment.writer_genesis(region, w.writer_id):
            if not any(w.genesis == segment.writer_genesis(r, w.writer_id) for r in regions):
                sink.add_writer(
                    "writer-genesis",
                    w.writer_id,
                    None,
                    "its genesis is not the one its writer id gives in any region of this database",
                )
            continue
        heads.append(await _walk_writer(con, sink, region, w, since, until, (pruned or {}).get(w.writer_id)))
    for writer_id, count in await store.unregistered_writers(con):
        sink.add_writer("writer-unregistered", writer_id, None,
                        f"{count} segments of a writer that audit_writers does not hold")  # fmt: skip
    return heads


async def trail_regions(con: Conn) -> list[str]:
    """Every region whose trail this database holds, for ``verify``, ``query`` and ``export`` to walk.

    The legacy chain heads (``audit_chain_head``: every v2 writer adds a closed one for its region) and
    the v2 digests name most; a writer that neither places (its genesis is of no region named so far,
    or it is not registered) names its region in its first segment's first record. So a region with
    only v2 data is found, and deleting the rows that name a region does not hide its segments.
    """
    known = set(await v1_store.regions(con)) | set(await digest_store.digest_regions(con))
    genesis = {w.writer_id: w.genesis for w in await store.writers(con)}
    ids = set(genesis) | set(await store.segment_writer_ids(con))
    unplaced = [w for w in ids if not any(genesis.get(w) == segment.writer_genesis(r, w) for r in known)]
    for row in await store.first_segments(con, sorted(unplaced, key=lambda w: w.bytes)):
        region = _first_record_region(row)
        if region is not None:
            known.add(region)
    return sorted(known)


def _first_record_region(row: store.SegmentRow) -> str | None:
    """The ``awsRegion`` of a segment's first line, if it is a region's name (the body is checked
    whole by the walk: here only the region is wanted, even from a damaged segment)."""
    try:
        value = orjson.loads(segment.lines(row.writer_id, row.seq, row.body).split(b"\n", 1)[0])
        return require_region_name(value["awsRegion"]) if isinstance(value, dict) else None
    except (segment.SegmentFormatError, KeyError, TypeError, ValueError):
        return None
