"""The legacy v1 audit tables, read only: chain head, events, pending events, signed digests
(migrations 0003, 0007, 0008), and the anchors of digests other regions push here.

Nothing appends to ``audit_events`` any more: the first audit trail v2 writer closes the v1 chain
(``regiond.store.audit_segments.close_v1_chains``, migration 0011) and its events stay where they
are, verified by ``regiond audit verify`` as a closed legacy chain and read by ``audit query`` and
``audit export``. The v2 trail (segments, one chain per writer) is ``regiond.store.audit_segments``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from regiond.store.pool import Conn

FETCH_CHUNK_ROWS = 2000


@dataclass(frozen=True, slots=True)
class ChainHead:
    region: str
    seq: int
    hash: bytes
    digest_seq: int
    digest_hash: bytes | None
    digest_time: dt.datetime | None
    pruned_seq: int
    pruned_hash: bytes | None
    pruned_through: dt.datetime | None


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event as stored: what ``verify`` and ``query`` read."""

    region: str
    seq: int
    event_id: uuid.UUID
    event_time: dt.datetime
    event_name: str
    principal_arn: str | None
    key_arns: list[str]
    error_code: str | None
    record: bytes
    prev_hash: bytes
    hash: bytes
    event_source: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class DigestRow:
    region: str
    first_seq: int
    last_seq: int
    digest_time: dt.datetime
    last_hash: bytes
    prev_digest: bytes | None
    public_key: bytes
    signature: bytes
    message: bytes | None = None  # the exact signed message (migration 0009; NULL in older rows)


_HEAD_COLUMNS = "region, seq, hash, digest_seq, digest_hash, digest_time, pruned_seq, pruned_hash, pruned_through"
_EVENT_COLUMNS = (
    "region, seq, event_id, event_time, event_name, principal_arn, key_arns, error_code, record, prev_hash, hash,"
    " event_source, read_only"
)
_DIGEST_COLUMNS = "region, first_seq, last_seq, digest_time, last_hash, prev_digest, public_key, signature, message"


def _head(row: object) -> ChainHead:
    return ChainHead(*row)  # type: ignore[misc]


async def get_head(con: Conn, region: str) -> ChainHead | None:
    row = await con.fetchrow(f"SELECT {_HEAD_COLUMNS} FROM audit_chain_head WHERE region = $1", region)
    return _head(row) if row is not None else None


async def regions(con: Conn) -> list[str]:
    return [r["region"] for r in await con.fetch("SELECT region FROM audit_chain_head ORDER BY region")]


@dataclass(frozen=True, slots=True)
class PendingStats:
    """Events of a region stored but not yet chained, and how many of them are older than a threshold."""

    count: int
    stale: int
    oldest: dt.datetime | None


async def pending_stats(con: Conn, region: str, older_than_s: float) -> PendingStats:
    """``stale`` counts rows stored before ``now() - older_than_s`` (the database's clock, as ``stored_at``)."""
    row = await con.fetchrow(
        "SELECT count(*), count(*) FILTER (WHERE stored_at < now() - make_interval(secs => $2)), min(stored_at)"
        " FROM audit_pending WHERE region = $1",
        region, older_than_s,
    )  # fmt: skip
    assert row is not None
    return PendingStats(int(row[0]), int(row[1]), row[2])


async def newest_signed_digests(con: Conn, region: str, after_position: int, limit: int) -> list[tuple[bytes, bytes]]:
    """The (message, signature) of up to ``limit`` of ``region``'s newest digests past ``after_position``,
    oldest first: what a replication sender pushes to the other regions as anchors. The closed v1
    chain's digests and the v2 digests (``audit_digests_v2``, numbered on from the v1 chain's last
    position: ``regiond.store.audit_digests.v1_last_position``) are one sequence of positions."""
    rows = await con.fetch(
        "SELECT message, signature FROM ("
        "  SELECT last_seq AS position, message, signature FROM audit_digests"
        "   WHERE region = $1 AND last_seq > $2 AND message IS NOT NULL"
        "  UNION ALL SELECT seq, message, signature FROM audit_digests_v2 WHERE region = $1 AND seq > $2"
        "  ORDER BY position DESC LIMIT $3) d ORDER BY position",
        region, after_position, limit,
    )  # fmt: skip
    return [(bytes(r[0]), bytes(r[1])) for r in rows]


PEER_ANCHORS_KEPT = 100_000  # per source region: the newest ones (a day or more of digests)


async def store_peer_anchor(
    con: Conn, source: str, position: int, digest_hash: bytes, message: bytes, signature: bytes
) -> str:
    """Keep another region's anchor (its signature already checked); ``"stored"``, ``"held"`` (the same
    anchor was already here) or ``"conflict"`` (another digest holds that position: never replaced)."""
    inserted = await con.fetchval(
        "INSERT INTO audit_peer_anchors (source, position, digest_hash, message, signature)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, position) DO NOTHING RETURNING true",
        source, position, digest_hash, message, signature,
    )  # fmt: skip
    if inserted:
        await con.execute(
            "DELETE FROM audit_peer_anchors WHERE source = $1 AND position <= (SELECT position FROM"
            " audit_peer_anchors WHERE source = $1 ORDER BY position DESC OFFSET $2 LIMIT 1)",
            source, PEER_ANCHORS_KEPT,
        )  # fmt: skip
        return "stored"
    held = await con.fetchval(
        "SELECT digest_hash FROM audit_peer_anchors WHERE source = $1 AND position = $2", source, position
    )
    return "held" if held is not None and bytes(held) == digest_hash else "conflict"


async def peer_anchors(con: Conn, source: str) -> list[tuple[bytes, bytes]]:
    """Every anchor of ``source`` this region holds, as (message, signature), by position."""
    rows = await con.fetch(
        "SELECT message, signature FROM audit_peer_anchors WHERE source = $1 ORDER BY position", source
    )
    return [(bytes(r[0]), bytes(r[1])) for r in rows]


def _event(row: object) -> EventRow:
    return EventRow(*row)  # type: ignore[misc]


async def event_at(con: Conn, region: str, seq: int) -> EventRow | None:
    row = await con.fetchrow(f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE region = $1 AND seq = $2", region, seq)
    return _event(row) if row is not None else None


async def seq_bounds(con: Conn, region: str) -> tuple[int, int] | None:
    row = await con.fetchrow("SELECT min(seq), max(seq) FROM audit_events WHERE region = $1", region)
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


async def seq_range_for_time(
    con: Conn, region: str, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[int, int] | None:
    """The smallest seq range holding every event with ``since <= event_time < until``."""
    row = await con.fetchrow(
        "SELECT min(seq), max(seq) FROM audit_events WHERE region = $1"
        " AND ($2::timestamptz IS NULL OR event_time >= $2) AND ($3::timestamptz IS NULL OR event_time < $3)",
        region, since, until,
    )  # fmt: skip
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


async def time_span(
    con: Conn, region: str, since: dt.datetime | None, until: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime] | None:
    """The first and last ``event_time`` among the events with ``since <= event_time < until``."""
    row = await con.fetchrow(
        "SELECT min(event_time), max(event_time) FROM audit_events WHERE region = $1"
        " AND ($2::timestamptz IS NULL OR event_time >= $2) AND ($3::timestamptz IS NULL OR event_time < $3)",
        region, since, until,
    )  # fmt: skip
    if row is None or row[0] is None:
        return None
    return row[0], row[1]


async def iter_events(con: Conn, region: str, first_seq: int, last_seq: int) -> AsyncIterator[EventRow]:
    """Events ``first_seq..last_seq`` in seq order, fetched in chunks (keyset pagination)."""
    after = first_seq - 1
    while True:
        rows = await con.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE region = $1 AND seq > $2 AND seq <= $3"
            " ORDER BY seq LIMIT $4",
            region, after, last_seq, FETCH_CHUNK_ROWS,
        )  # fmt: skip
        for row in rows:
            yield _event(row)
        if len(rows) < FETCH_CHUNK_ROWS:
            return
        after = int(rows[-1]["seq"])


async def digests(con: Conn, region: str, first_seq: int | None = None, last_seq: int | None = None) -> list[DigestRow]:
    rows = await con.fetch(
        f"SELECT {_DIGEST_COLUMNS} FROM audit_digests WHERE region = $1"
        " AND ($2::bigint IS NULL OR last_seq >= $2) AND ($3::bigint IS NULL OR last_seq <= $3) ORDER BY last_seq",
        region, first_seq, last_seq,
    )  # fmt: skip
    return [DigestRow(*r) for r in rows]


async def digest_before(con: Conn, region: str, seq: int) -> DigestRow | None:
    row = await con.fetchrow(
        f"SELECT {_DIGEST_COLUMNS} FROM audit_digests WHERE region = $1 AND last_seq < $2"
        " ORDER BY last_seq DESC LIMIT 1",
        region, seq,
    )  # fmt: skip
    return DigestRow(*row) if row is not None else None


@dataclass(frozen=True, slots=True)
class EventFilter:
    region: str | None = None
    event_name: str | None = None
    key: str | None = None
    principal_arn: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    error_code: str | None = None
    limit: int = 1000


async def find_events(con: Conn, f: EventFilter) -> list[EventRow]:
    """Events matching every given filter, oldest first. ``key`` matches a key id or a full ARN."""
    rows = await con.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE ($1::text IS NULL OR region = $1)"
        " AND ($2::text IS NULL OR event_name = $2)"
        " AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM unnest(key_arns) a"
        "      WHERE a = $3 OR a LIKE '%:key/' || $3 OR a LIKE '%:' || $3))"
        " AND ($4::text IS NULL OR principal_arn = $4)"
        " AND ($5::timestamptz IS NULL OR event_time >= $5) AND ($6::timestamptz IS NULL OR event_time < $6)"
        " AND ($7::text IS NULL OR error_code = $7)"
        " ORDER BY event_time, region, seq LIMIT $8",
        f.region, f.event_name, f.key, f.principal_arn, f.since, f.until, f.error_code, f.limit,
    )  # fmt: skip
    return [_event(r) for r in rows]


async def iter_events_by_time(
    con: Conn, region: str, since: dt.datetime | None, until: dt.datetime | None
) -> AsyncIterator[EventRow]:
    """Events of ``region`` in ``[since, until)`` in seq order (export), fetched in chunks.

    The time range is turned into a seq range first (BRIN on event_time), then walked by seq.
    """
    bounds = await seq_range_for_time(con, region, since, until)
    if bounds is None:
        return
    after, last = bounds[0] - 1, bounds[1]
    while True:
        rows = await con.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE region = $1 AND seq > $2 AND seq <= $3"
            " AND ($4::timestamptz IS NULL OR event_time >= $4) AND ($5::timestamptz IS NULL OR event_time < $5)"
            " ORDER BY seq LIMIT $6",
            region, after, last, since, until, FETCH_CHUNK_ROWS,
        )  # fmt: skip
        for row in rows:
            yield _event(row)
        if len(rows) < FETCH_CHUNK_ROWS:
            return
        after = int(rows[-1]["seq"])
