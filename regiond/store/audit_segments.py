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
from dataclasses import dataclass

from regiond.store.pool import Conn

__all__ = [
    "NewSegment",
    "SegmentConflictError",
    "SegmentNotStoredError",
    "close_v1_chains",
    "insert_segment",
    "register_writer",
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


async def insert_segment(
    con: Conn, s: NewSegment, *, timeout_s: float | None = None, idempotent: bool = False
) -> None:
    """Store one segment in its own transaction (``con`` outside any: one statement, one commit).

    The commit is as durable as the session's ``synchronous_commit`` (the writer sets it on,
    ``regiond.store.audit.require_synchronous_commit``). Raises unless the row was stored.

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
