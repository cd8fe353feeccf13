"""Audit trail v2 digests and writer leases (migration 0012; docs/AUDIT.md, "Digests").

A digest row holds its signed message (``regiond.audit.digests`` is the one encoding: the heads of
every writer's chain and the previous digest's hash) and the few columns reads order on. The heads
are read from the message, never from columns, so what is trusted is what was signed.

Three users: the digest task (``last_digest``, ``open_writer_heads``, ``add_digest``), the audit
writer (``renew_writer``: its liveness lease) and ``regiond audit verify`` (``digests``,
``segment_hashes``, ``writer_summaries``, ``registered_writers``). Segment bodies are never read here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from regiond.store.pool import Conn

__all__ = [
    "DigestRow",
    "PruneRow",
    "RegisteredWriter",
    "WriterHead",
    "WriterSpan",
    "WriterSummary",
    "add_digest",
    "add_prune",
    "digest_at",
    "digest_regions",
    "digests",
    "last_digest",
    "open_writer_heads",
    "prunes",
    "registered_writers",
    "renew_writer",
    "retire_writer",
    "segment_hashes",
    "session_names",
    "v1_last_position",
    "writer_spans",
    "writer_summaries",
]

FETCH_CHUNK_ROWS = 2000


@dataclass(frozen=True, slots=True)
class DigestRow:
    """One stored digest; ``message`` is what was signed (``regiond.audit.digests.decode`` reads it)."""

    region: str
    seq: int
    digest_time: dt.datetime
    prev_hash: bytes | None
    writers: int
    closed: list[uuid.UUID]
    public_key: bytes
    message: bytes
    signature: bytes


_DIGEST_COLUMNS = "region, seq, digest_time, prev_hash, writers, closed, public_key, message, signature"


def _digest(r: Any) -> DigestRow:
    return DigestRow(
        r[0],
        int(r[1]),
        r[2],
        bytes(r[3]) if r[3] is not None else None,
        int(r[4]),
        list(r[5]),
        bytes(r[6]),
        bytes(r[7]),
        bytes(r[8]),
    )


async def last_digest(con: Conn, region: str) -> DigestRow | None:
    row = await con.fetchrow(
        f"SELECT {_DIGEST_COLUMNS} FROM audit_digests_v2 WHERE region = $1 ORDER BY seq DESC LIMIT 1", region
    )
    return _digest(row) if row is not None else None


async def v1_last_position(con: Conn, region: str) -> int:
    """The last position the closed v1 chain can have anchored (0: none): its closing seq, or its newest
    digest's if that were past it. v2 digests number on from it, so a region's anchors (``regiond.domain.
    audit_anchor``) have one increasing position across the upgrade and a peer keeps both in one table."""
    return int(await con.fetchval(
        "SELECT greatest((SELECT coalesce(closed_seq, seq) FROM audit_chain_head WHERE region = $1),"
        " (SELECT max(last_seq) FROM audit_digests WHERE region = $1), 0)",
        region,
    ))  # fmt: skip


async def digest_regions(con: Conn) -> list[str]:
    """Every region with a stored v2 digest (a skip scan of the primary key)."""
    rows = await con.fetch(
        "WITH RECURSIVE r AS (SELECT min(region) AS region FROM audit_digests_v2"
        " UNION ALL SELECT (SELECT min(region) FROM audit_digests_v2 WHERE region > r.region) FROM r"
        " WHERE r.region IS NOT NULL) SELECT region FROM r WHERE region IS NOT NULL"
    )
    return [r[0] for r in rows]


async def digest_at(con: Conn, region: str, seq: int) -> DigestRow | None:
    row = await con.fetchrow(f"SELECT {_DIGEST_COLUMNS} FROM audit_digests_v2 WHERE region = $1 AND seq = $2",
                             region, seq)  # fmt: skip
    return _digest(row) if row is not None else None


async def add_digest(con: Conn, d: DigestRow) -> None:
    """Store a signed digest and mark the writers it closes (the caller's transaction: both or neither).

    The transaction's commit waits for its WAL flush whatever the server's default: the digest is
    anchored outside the database once committed, and an anchor must never name a digest a crash
    could lose."""
    await con.execute("SET LOCAL synchronous_commit = on")
    await con.execute(
        f"INSERT INTO audit_digests_v2 ({_DIGEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        d.region, d.seq, d.digest_time, d.prev_hash, d.writers, d.closed, d.public_key, d.message, d.signature,
    )  # fmt: skip
    if d.closed:
        await con.execute(
            "UPDATE audit_writers SET closed_at = $2 WHERE writer_id = ANY($1::uuid[]) AND closed_at IS NULL",
            d.closed, d.digest_time,
        )  # fmt: skip


async def digests(con: Conn, region: str) -> AsyncIterator[DigestRow]:
    """Every digest of ``region`` in seq order, fetched in chunks."""
    after = 0
    while True:
        rows = await con.fetch(
            f"SELECT {_DIGEST_COLUMNS} FROM audit_digests_v2 WHERE region = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            region, after, FETCH_CHUNK_ROWS,
        )  # fmt: skip
        for row in rows:
            yield _digest(row)
        if len(rows) < FETCH_CHUNK_ROWS:
            return
        after = int(rows[-1][1])


@dataclass(frozen=True, slots=True)
class WriterHead:
    """A writer as the digest task sees it: its newest stored segment and its lease, by the database's clock.

    ``registered`` is false for a writer a previous digest names but ``audit_writers`` no longer holds
    (it is still carried: a digest never drops a writer it does not close).
    """

    writer_id: uuid.UUID
    registered: bool
    genesis: bytes | None
    closed: bool
    seq: int  # 0: no segment stored
    hash: bytes | None
    idle_s: float  # seconds since the newer of the lease's renewal and the newest segment (inf: retired)
    node: str | None = None
    pid: int | None = None


async def open_writer_heads(con: Conn, also: Sequence[uuid.UUID]) -> list[WriterHead]:
    """Every writer not closed in ``audit_writers``, and every writer of ``also`` (the previous digest's
    open writers), with its newest segment: one index probe per writer (the primary key, newest first)."""
    rows = await con.fetch(
        "WITH w AS (SELECT writer_id FROM audit_writers WHERE closed_at IS NULL"
        "           UNION SELECT unnest($1::uuid[]))"
        " SELECT w.writer_id, a.writer_id IS NOT NULL, a.genesis, a.closed_at IS NOT NULL, s.seq, s.hash,"
        "        CASE WHEN a.alive_at = '-infinity' THEN 'Infinity'::float8"
        "             ELSE extract(epoch FROM now() - greatest(a.alive_at, s.last_time))::float8 END,"
        "        a.node, a.pid"
        " FROM w LEFT JOIN audit_writers a ON a.writer_id = w.writer_id"
        " LEFT JOIN LATERAL (SELECT seq, hash, last_time FROM audit_segments x WHERE x.writer_id = w.writer_id"
        "                    ORDER BY seq DESC LIMIT 1) s ON true"
        " ORDER BY w.writer_id",
        list(also),
    )  # fmt: skip
    return [_writer_head(r) for r in rows]


def _writer_head(r: Any) -> WriterHead:
    return WriterHead(
        r[0],
        bool(r[1]),
        bytes(r[2]) if r[2] is not None else None,
        bool(r[3]),
        int(r[4]) if r[4] is not None else 0,
        bytes(r[5]) if r[5] is not None else None,
        float(r[6]) if r[6] is not None else float("inf"),
        r[7],
        int(r[8]) if r[8] is not None else None,
    )


async def session_names(con: Conn, prefix: str) -> set[str]:
    """The ``application_name`` of every session connected to this database now that starts with ``prefix``."""
    rows = await con.fetch(
        "SELECT DISTINCT application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND starts_with(application_name, $1)",
        prefix,
    )
    return {r[0] for r in rows}


async def renew_writer(con: Conn, writer_id: uuid.UUID, *, timeout_s: float | None = None) -> bool:
    """Renew a writer's liveness lease; ``False`` if it was closed (or is unknown): it must not write again
    under this id (a new writer id, registered, starts a new chain)."""
    return bool(await con.fetchval(
        "UPDATE audit_writers SET alive_at = now() WHERE writer_id = $1 AND closed_at IS NULL RETURNING true",
        writer_id, timeout=timeout_s,
    ))  # fmt: skip


async def retire_writer(con: Conn, writer_id: uuid.UUID) -> None:
    """A writer that stopped cleanly gives up its lease: the next digest closes it at once."""
    await con.execute(
        "UPDATE audit_writers SET alive_at = '-infinity' WHERE writer_id = $1 AND closed_at IS NULL", writer_id
    )


async def segment_hashes(con: Conn, heads: Sequence[tuple[uuid.UUID, int]]) -> dict[tuple[uuid.UUID, int], bytes]:
    """The stored hash of each (writer, seq) of ``heads`` that is stored (absent ones are left out)."""
    found: dict[tuple[uuid.UUID, int], bytes] = {}
    for i in range(0, len(heads), FETCH_CHUNK_ROWS):
        chunk = heads[i : i + FETCH_CHUNK_ROWS]
        rows = await con.fetch(
            "SELECT s.writer_id, s.seq, s.hash FROM unnest($1::uuid[], $2::bigint[]) AS h(writer_id, seq)"
            " JOIN audit_segments s ON s.writer_id = h.writer_id AND s.seq = h.seq",
            [w for w, _ in chunk], [s for _, s in chunk],
        )  # fmt: skip
        found.update({(r[0], int(r[1])): bytes(r[2]) for r in rows})
    return found


@dataclass(frozen=True, slots=True)
class WriterSummary:
    """What ``audit_segments`` holds of one writer: its newest segment and its oldest event time."""

    writer_id: uuid.UUID
    segments: int
    max_seq: int
    oldest: dt.datetime


async def writer_summaries(con: Conn) -> list[WriterSummary]:
    rows = await con.fetch(
        "SELECT writer_id, count(*), max(seq), min(first_time) FROM audit_segments GROUP BY writer_id"
        " ORDER BY writer_id"
    )
    return [WriterSummary(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]


@dataclass(frozen=True, slots=True)
class RegisteredWriter:
    writer_id: uuid.UUID
    started_at: dt.datetime
    closed_at: dt.datetime | None


async def registered_writers(con: Conn) -> list[RegisteredWriter]:
    rows = await con.fetch("SELECT writer_id, started_at, closed_at FROM audit_writers ORDER BY writer_id")
    return [RegisteredWriter(r[0], r[1], r[2]) for r in rows]


# --- retention: prune records (migration 0014; regiond.audit.prune) ----------------------------------


@dataclass(frozen=True, slots=True)
class PruneRow:
    region: str
    seq: int
    pruned_at: dt.datetime
    public_key: bytes
    message: bytes
    signature: bytes


async def prunes(con: Conn, region: str) -> list[PruneRow]:
    """Every prune record of ``region``, in seq order (one per ``regiond audit prune`` run that removed any)."""
    rows = await con.fetch(
        "SELECT region, seq, pruned_at, public_key, message, signature FROM audit_prunes WHERE region = $1"
        " ORDER BY seq",
        region,
    )
    return [PruneRow(r[0], int(r[1]), r[2], bytes(r[3]), bytes(r[4]), bytes(r[5])) for r in rows]


@dataclass(frozen=True, slots=True)
class WriterSpan:
    """What a writer's stored segments span: the newest seq, and the first seq of one not older than a bound."""

    writer_id: uuid.UUID
    max_seq: int
    first_young: int | None  # the least seq whose last_time is at or after the bound (None: none)


async def writer_spans(con: Conn, writer_ids: Sequence[uuid.UUID], before: dt.datetime) -> list[WriterSpan]:
    rows = await con.fetch(
        "SELECT writer_id, max(seq), min(seq) FILTER (WHERE last_time >= $2) FROM audit_segments"
        " WHERE writer_id = ANY($1::uuid[]) GROUP BY writer_id",
        list(writer_ids), before,
    )  # fmt: skip
    return [WriterSpan(r[0], int(r[1]), int(r[2]) if r[2] is not None else None) for r in rows]


async def add_prune(con: Conn, row: PruneRow, through: Sequence[tuple[uuid.UUID, int]]) -> int:
    """Store a prune record and delete, per (writer, seq) of ``through``, that writer's segments up to
    that seq: the caller's transaction, both or neither, committed synchronously. Returns how many
    segments were deleted."""
    await con.execute("SET LOCAL synchronous_commit = on")
    await con.execute(
        "INSERT INTO audit_prunes (region, seq, pruned_at, public_key, message, signature)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        row.region, row.seq, row.pruned_at, row.public_key, row.message, row.signature,
    )  # fmt: skip
    deleted = await con.fetchval(
        "WITH d AS (DELETE FROM audit_segments s USING unnest($1::uuid[], $2::bigint[]) AS t(writer_id, seq)"
        " WHERE s.writer_id = t.writer_id AND s.seq <= t.seq RETURNING 1) SELECT count(*) FROM d",
        [w for w, _ in through], [s for _, s in through],
    )  # fmt: skip
    return int(deleted)
