"""Audit trail v2 storage: writers and their segments (migration 0011; docs/AUDIT.md).

One row of ``audit_segments`` is one group-commit batch of one writer (a worker process): its
records as one body (``regiond.audit.segment``), their time bounds and the hash that chains it to
the writer's previous segment. The writer computes the chain; the database only stores it, so a
write is one INSERT with no lock but the new row's own and no procedure.

The module has two halves kept apart: the write side (``close_v1_chains``, ``register_writer``,
``insert_segment``: the audit writer, ``regiond.audit.writer``) and the read side below it (verify,
query, export, digests).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from regiond.store.pool import Conn

__all__ = [
    "NewSegment",
    "SegmentConflictError",
    "SegmentNotStoredError",
    "SegmentRow",
    "WriterRow",
    "close_v1_chains",
    "first_segments",
    "insert_segment",
    "iter_segments_by_time",
    "iter_writer_segments",
    "register_writer",
    "require_synchronous_commit",
    "segment_writer_ids",
    "time_span",
    "unregistered_writers",
    "writers",
]

# --- write side (the audit writer) -----------------------------------------------------------


class SegmentNotStoredError(RuntimeError):
    """The INSERT reported no row stored (a trigger or rule dropped it): the batch is not durable."""


class SegmentConflictError(RuntimeError):
    """Another segment holds this writer's sequence number: the writer's chain cannot go on from here."""


@dataclass(frozen=True, slots=True)
class NewSegment:
    """A segment as the writer made it; ``hash`` links it after ``prev_hash`` (``segment.segment_hash``)."""

    writer_id: uuid.UUID
    seq: int
    first_time: dt.datetime
    last_time: dt.datetime
    record_count: int
    prev_hash: bytes
    hash: bytes
    body: bytes


async def require_synchronous_commit(con: Conn) -> None:
    """Make every commit on ``con`` wait for its WAL flush, whatever the server's default.

    Durability must not depend on the server default: an operator who turns synchronous_commit off
    globally would otherwise release responses before their events are on disk.
    """
    await con.execute("SET synchronous_commit = on")


async def register_writer(
    con: Conn, writer_id: uuid.UUID, node: str, pid: int, genesis: bytes, *, timeout_s: float | None = None
) -> None:
    """Record a writer before its first segment, so a digest knows every chain there is (one INSERT)."""
    await con.execute(
        "INSERT INTO audit_writers (writer_id, node, pid, genesis) VALUES ($1, $2, $3, $4)",
        writer_id, node, pid, genesis, timeout=timeout_s,
    )  # fmt: skip


_INSERT = (
    "INSERT INTO audit_segments (writer_id, seq, first_time, last_time, record_count, prev_hash, hash, body)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
_INSERT_ONCE = _INSERT + " ON CONFLICT (writer_id, seq) DO NOTHING"


async def insert_segment(con: Conn, s: NewSegment, *, timeout_s: float | None = None, idempotent: bool = False) -> None:
    """Store one segment in its own transaction (``con`` outside any: one statement, one commit).

    The commit is as durable as the session's ``synchronous_commit`` (the writer sets it on,
    ``require_synchronous_commit``). Raises unless the row was stored.

    ``idempotent``: a retry of a segment whose first attempt may have committed unseen (a timeout,
    a dropped connection: the statement can still finish on the server). A row already stored under
    the same (writer, seq) counts as this one if its hash is the same (the hash covers the writer,
    seq, count and body); otherwise ``SegmentConflictError``.
    """
    args = (s.writer_id, s.seq, s.first_time, s.last_time, s.record_count, s.prev_hash, s.hash, s.body)
    status = await con.execute(_INSERT_ONCE if idempotent else _INSERT, *args, timeout=timeout_s)
    if status.endswith(" 1"):
        return
    if not idempotent:
        raise SegmentNotStoredError(f"segment {s.seq} of writer {s.writer_id} was not stored ({status})")
    held = await con.fetchval(
        "SELECT hash FROM audit_segments WHERE writer_id = $1 AND seq = $2", s.writer_id, s.seq, timeout=timeout_s
    )
    if held is None:
        raise SegmentNotStoredError(f"segment {s.seq} of writer {s.writer_id} was not stored ({status})")
    if bytes(held) != s.hash:
        raise SegmentConflictError(f"segment {s.seq} of writer {s.writer_id} is held with another hash")


V1_LINK_CHUNK_EVENTS = 5000


async def close_v1_chains(con: Conn, region: str, genesis_v1: bytes) -> int | None:
    """Close the v1 chain (``audit_events``) of every region in this database, as a v2 writer starts;
    return ``region``'s closing seq if this call closed it, ``None`` if it was closed already.

    One transaction (``con`` outside any), taking locks in a v1 append's order (head row, then
    ``audit_events``), so it waits for v1 appends in flight and the ones behind it are refused by
    migration 0011's triggers. Events a node two releases old left in ``audit_pending`` are linked
    first (``audit_link``), so none is stranded; a region without a v1 chain yet gets one closed at 0.
    """
    if await con.fetchval(
        "SELECT EXISTS (SELECT 1 FROM audit_chain_head WHERE region = $1 AND closed_seq IS NOT NULL)"
        " AND NOT EXISTS (SELECT 1 FROM audit_chain_head WHERE closed_seq IS NULL)",
        region,
    ):  # the usual start: closed long ago, no lock taken
        return None
    async with con.transaction():
        await con.execute(
            "INSERT INTO audit_chain_head (region, hash) VALUES ($1, $2) ON CONFLICT (region) DO NOTHING",
            region, genesis_v1,
        )  # fmt: skip
        opened = [r[0] for r in await con.fetch(
            "SELECT region FROM audit_chain_head WHERE closed_seq IS NULL ORDER BY region FOR UPDATE"
        )]  # fmt: skip
        for name in opened:
            while await con.fetchval("SELECT linked FROM audit_link($1, $2)", name, V1_LINK_CHUNK_EVENTS):
                pass
        # audit_link turns synchronous_commit off for its transaction: the closing waits for its flush.
        await con.execute("SET LOCAL synchronous_commit = on")
        await con.execute(
            "UPDATE audit_chain_head SET closed_seq = seq, closed_at = now(), updated_at = now()"
            " WHERE region = ANY($1::text[])",
            opened,
        )
        closed = await con.fetchval("SELECT closed_seq FROM audit_chain_head WHERE region = $1", region)
    return int(closed) if region in opened else None


# --- read side (verify, query, export, digests) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class WriterRow:
    writer_id: uuid.UUID
    node: str
    pid: int
    started_at: dt.datetime
    genesis: bytes


SegmentRow = NewSegment
"""A stored segment reads back as the record the writer made: one definition of its columns."""


SEGMENT_CHUNK_ROWS = 500  # segments per fetch while walking: bounds the reader's memory
_SEGMENT_COLUMNS = "writer_id, seq, first_time, last_time, record_count, prev_hash, hash, body"


def _segment(r: Any) -> SegmentRow:
    return SegmentRow(r[0], int(r[1]), r[2], r[3], int(r[4]), bytes(r[5]), bytes(r[6]), bytes(r[7]))


async def writers(con: Conn) -> list[WriterRow]:
    """Every registered writer, oldest first."""
    rows = await con.fetch(
        "SELECT writer_id, node, pid, started_at, genesis FROM audit_writers ORDER BY started_at, writer_id"
    )
    return [WriterRow(r[0], r[1], int(r[2]), r[3], bytes(r[4])) for r in rows]


async def unregistered_writers(con: Conn) -> list[tuple[uuid.UUID, int]]:
    """Writer ids that hold segments but no ``audit_writers`` row, with how many segments each."""
    rows = await con.fetch(
        "SELECT s.writer_id, count(*) FROM audit_segments s"
        " WHERE NOT EXISTS (SELECT 1 FROM audit_writers w WHERE w.writer_id = s.writer_id)"
        " GROUP BY s.writer_id ORDER BY s.writer_id"
    )
    return [(r[0], int(r[1])) for r in rows]


async def first_segments(con: Conn, writer_ids: Sequence[uuid.UUID]) -> list[SegmentRow]:
    """The first stored segment of each writer of ``writer_ids`` that has one (one index probe each)."""
    rows = await con.fetch(
        f"SELECT {', '.join('s.' + c for c in _SEGMENT_COLUMNS.split(', '))} FROM unnest($1::uuid[]) w(writer_id)"
        " CROSS JOIN LATERAL (SELECT * FROM audit_segments x WHERE x.writer_id = w.writer_id ORDER BY seq LIMIT 1) s",
        list(writer_ids),
    )  # fmt: skip
    return [_segment(r) for r in rows]


async def segment_writer_ids(con: Conn) -> list[uuid.UUID]:
    """Every writer id that holds a segment, registered or not (a skip scan of the primary key)."""
    rows = await con.fetch(
        "WITH RECURSIVE w AS ((SELECT writer_id AS id FROM audit_segments ORDER BY writer_id LIMIT 1)"
        " UNION ALL SELECT (SELECT writer_id FROM audit_segments WHERE writer_id > w.id ORDER BY writer_id LIMIT 1)"
        " FROM w WHERE w.id IS NOT NULL) SELECT id FROM w WHERE id IS NOT NULL"
    )
    return [r[0] for r in rows]


async def iter_writer_segments(
    con: Conn, writer_id: uuid.UUID, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> AsyncIterator[SegmentRow]:
    """One writer's segments in seq order (those whose time bounds meet ``[since, until)``), in chunks."""
    after = 0
    while True:
        rows = await con.fetch(
            f"SELECT {_SEGMENT_COLUMNS} FROM audit_segments WHERE writer_id = $1 AND seq > $2"
            " AND ($3::timestamptz IS NULL OR last_time >= $3) AND ($4::timestamptz IS NULL OR first_time < $4)"
            " ORDER BY seq LIMIT $5",
            writer_id, after, since, until, SEGMENT_CHUNK_ROWS,
        )  # fmt: skip
        for r in rows:
            yield _segment(r)
        if len(rows) < SEGMENT_CHUNK_ROWS:
            return
        after = int(rows[-1][1])


async def iter_segments_by_time(
    con: Conn, since: dt.datetime | None, until: dt.datetime | None
) -> AsyncIterator[SegmentRow]:
    """Every writer's segments whose time bounds meet ``[since, until)``, by ``first_time`` (query, export).

    Pruned on the time columns (``last_time`` is indexed); ``con`` must be in a transaction (a cursor).
    """
    cursor = con.cursor(
        f"SELECT {_SEGMENT_COLUMNS} FROM audit_segments"
        " WHERE ($1::timestamptz IS NULL OR last_time >= $1) AND ($2::timestamptz IS NULL OR first_time < $2)"
        " ORDER BY first_time, writer_id, seq",
        since, until, prefetch=SEGMENT_CHUNK_ROWS,
    )  # fmt: skip
    async for r in cursor:
        yield _segment(r)


async def time_span(
    con: Conn, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime] | None:
    """The earliest ``first_time`` and latest ``last_time`` of the segments meeting ``[since, until)`` (export)."""
    row = await con.fetchrow(
        "SELECT min(first_time), max(last_time) FROM audit_segments"
        " WHERE ($1::timestamptz IS NULL OR last_time >= $1) AND ($2::timestamptz IS NULL OR first_time < $2)",
        since, until,
    )  # fmt: skip
    if row is None or row[0] is None:
        return None
    return row[0], row[1]
