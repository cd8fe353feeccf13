"""The audit trail's tables: chain head, events, pending events, signed digests (migrations 0003, 0007, 0008).

Appending is one round trip per group-commit batch (docs/AUDIT.md explains why): ``append_batch``
calls the procedure ``audit_append_durable``, which takes the region's chain head row lock, links
the batch (the v1 hash of ``regiond.audit.chain``), inserts it into ``audit_events`` and moves the
head in a transaction committed without waiting for the WAL flush, then commits a one-record
transaction synchronously. The lock is held for microseconds of work, never for an fsync, and the
call returns only once the batch is on disk.

``stage_batch`` and ``link_pending`` are the previous release's two steps (``audit_pending``):
kept so that events staged by its nodes during a rolling upgrade are still chained.

Each writer serialises on the head row, so the chain has no gaps. Verification recomputes every
hash in Python, so the two implementations check each other.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
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
class NewEvent:
    """An event of a batch: its place in the chain is assigned when it is appended (``append_batch``)."""

    event_id: uuid.UUID
    event_time: dt.datetime
    event_source: str
    event_name: str
    principal_arn: str | None
    key_arns: list[str]
    error_code: str | None
    read_only: bool
    record: bytes


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


async def ensure_head(con: Conn, region: str, genesis: bytes) -> None:
    """Create the region's chain head if this is its first event (idempotent, race-free)."""
    await con.execute(
        "INSERT INTO audit_chain_head (region, hash) VALUES ($1, $2) ON CONFLICT (region) DO NOTHING",
        region,
        genesis,
    )


async def lock_head(con: Conn, region: str) -> ChainHead | None:
    """The chain head, locked until the end of the caller's transaction."""
    row = await con.fetchrow(f"SELECT {_HEAD_COLUMNS} FROM audit_chain_head WHERE region = $1 FOR UPDATE", region)
    return _head(row) if row is not None else None


async def get_head(con: Conn, region: str) -> ChainHead | None:
    row = await con.fetchrow(f"SELECT {_HEAD_COLUMNS} FROM audit_chain_head WHERE region = $1", region)
    return _head(row) if row is not None else None


async def regions(con: Conn) -> list[str]:
    return [r["region"] for r in await con.fetch("SELECT region FROM audit_chain_head ORDER BY region")]


_KEY_SEPARATOR = "\x1f"  # unit separator: never in an ARN; arrays of arrays cannot be ragged


@dataclass(frozen=True, slots=True)
class Linked:
    """One append or linking pass: how many events it chained, and the chain head after them."""

    linked: int
    last_seq: int
    last_hash: bytes
    digest_seq: int


def _batch_arrays(events: Sequence[NewEvent]) -> tuple[list[object], ...]:
    """The batch as the column arrays ``audit_append`` and ``audit_stage`` take (one parameter each)."""
    return (
        [e.event_id for e in events],
        [e.event_time for e in events],
        [e.event_source for e in events],
        [e.event_name for e in events],
        [e.principal_arn for e in events],
        [_KEY_SEPARATOR.join(e.key_arns) for e in events],
        [e.error_code for e in events],
        [e.read_only for e in events],
        [e.record for e in events],
    )


# The batch's five text columns and its read-only flags travel as one text parameter, column after
# column, fields separated by RS and NULL written as GS, and the CALL cuts it back into the procedure's
# arrays (string_to_array, then a slice per column). asyncpg encodes an array element by element, with
# up to three ``collections.abc`` isinstance checks each (a Python-level ``__instancecheck__``) and a
# per-parameter cost on top: six arrays cost the writer more than this one string
# (benchmarks/audit_writer_micro.py; figure: benchmarks/README.md, "Design figures"). The
# procedure, its arguments and the stored rows are the same; the form is used only when no field
# contains RS or GS (ARNs, operation names and error codes never do), otherwise the arrays are sent
# as they are.
_FIELD_SEPARATOR = "\x1e"  # record separator, chr(30)
_NULL_FIELD = "\x1d"  # group separator, chr(29): the whole field is NULL
_PACKED_COLUMNS = 6  # event_source, event_name, principal_arn, key_arns, error_code, read_only ('t'/'f')
_FIELDS = "string_to_array($4, chr(30), chr(29))"
_APPEND_PACKED = (
    "CALL audit_append_durable($1, $2, $3, "
    + ", ".join(f"({_FIELDS})[{i} * $5 + 1:{i + 1} * $5]" for i in range(_PACKED_COLUMNS - 1))
    + f", ({_FIELDS})[{_PACKED_COLUMNS - 1} * $5 + 1:{_PACKED_COLUMNS} * $5]::boolean[], $6)"
)
_APPEND_ARRAYS = "CALL audit_append_durable($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"


def _packed_fields(events: Sequence[NewEvent]) -> str | None:
    """The text and boolean columns of ``events`` as one string (see ``_APPEND_PACKED``), or ``None``
    if a field holds a separator (then only the arrays keep every value as it is)."""
    principals = [e.principal_arn for e in events]
    errors = [e.error_code for e in events]
    nulls = principals.count(None) + errors.count(None)
    fields = [e.event_source for e in events]
    fields += [e.event_name for e in events]
    fields += [_NULL_FIELD if p is None else p for p in principals]
    fields += [_KEY_SEPARATOR.join(e.key_arns) for e in events]
    fields += [_NULL_FIELD if c is None else c for c in errors]
    fields += ["t" if e.read_only else "f" for e in events]
    packed = _FIELD_SEPARATOR.join(fields)
    if packed.count(_FIELD_SEPARATOR) != len(fields) - 1 or packed.count(_NULL_FIELD) != nulls:
        return None
    return packed


async def append_batch(con: Conn, region: str, events: Sequence[NewEvent], *, timeout_s: float | None = None) -> Linked:
    """Chain and store ``events`` durably in one round trip (``audit_append_durable``, migration 0008).

    The procedure commits twice: the chained insert without waiting for the WAL flush (so the chain
    head lock is never held across an fsync), then a one-record transaction whose synchronous
    commit flushes everything before it. Raises unless every event was stored. ``con`` must not be
    in a transaction (a procedure that commits cannot run inside one). ``timeout_s`` bounds the call
    (asyncpg's ``TimeoutError``; the connection's command timeout otherwise).
    """
    packed = _packed_fields(events)
    if packed is not None:
        row = await con.fetchrow(
            _APPEND_PACKED, region, [e.event_id for e in events], [e.event_time for e in events], packed,
            len(events), [e.record for e in events], timeout=timeout_s,
        )  # fmt: skip
    else:
        row = await con.fetchrow(_APPEND_ARRAYS, region, *_batch_arrays(events), timeout=timeout_s)
    assert row is not None  # CALL returns its INOUT parameters as one row, or raises
    return Linked(len(events), int(row[0]), bytes(row[1]), int(row[2]))


async def stage_batch(con: Conn, region: str, events: Sequence[NewEvent]) -> int:
    """Store ``events`` durably, unchained (``audit_stage`` in migration 0007); raises unless all were stored.

    The previous release's first step, kept for its nodes during a rolling upgrade (and for tests
    that play one): every writer still links what is staged (``link_pending``).
    """
    return int(await con.fetchval("SELECT audit_stage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", region,
                                  *_batch_arrays(events)))  # fmt: skip


async def link_pending(con: Conn, region: str, max_events: int) -> Linked:
    """Chain up to ``max_events`` pending events of ``region`` under the head lock (``audit_link``).

    Its own transaction, committed with ``synchronous_commit = off`` (set inside the function for
    that transaction only): call it outside any transaction of the caller's.
    """
    row = await con.fetchrow("SELECT linked, last_seq, last_hash, digest_seq FROM audit_link($1, $2)", region,
                             max_events)  # fmt: skip
    assert row is not None  # the function returns exactly one row or raises
    return Linked(int(row[0]), int(row[1]), bytes(row[2]), int(row[3]))


async def has_pending(con: Conn, region: str) -> bool:
    """Whether any staged event of ``region`` waits to be linked (no lock: a cheap check before ``link_pending``)."""
    return bool(await con.fetchval("SELECT EXISTS (SELECT 1 FROM audit_pending WHERE region = $1)", region))


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


async def add_digest(con: Conn, d: DigestRow, digest_hash: bytes) -> None:
    await con.execute(
        f"INSERT INTO audit_digests ({_DIGEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        d.region, d.first_seq, d.last_seq, d.digest_time, d.last_hash, d.prev_digest, d.public_key, d.signature,
        d.message,
    )  # fmt: skip
    await con.execute(
        "UPDATE audit_chain_head SET digest_seq = $2, digest_hash = $3, digest_time = $4 WHERE region = $1",
        d.region, d.last_seq, digest_hash, d.digest_time,
    )  # fmt: skip


async def flush_wal(con: Conn) -> None:
    """Wait until everything committed before now is on disk: a synchronous commit of one WAL record.

    A digest commits without waiting for the flush (it holds the chain head lock); its anchor may be
    written outside the database only once the digest is durable, or a crash could leave an anchor
    naming a digest the database never kept. ``con`` must not be in a transaction.
    """
    async with con.transaction():
        await con.execute("SET LOCAL synchronous_commit = on")
        await con.execute("SELECT pg_logical_emit_message(true, 'regionkms.audit.flush', '')")


async def digest_at(con: Conn, region: str, position: int) -> DigestRow | None:
    """The digest of ``region`` at an anchor's ``position`` (its ``last_seq`` for v1 digests)."""
    row = await con.fetchrow(
        f"SELECT {_DIGEST_COLUMNS} FROM audit_digests WHERE region = $1 AND last_seq = $2", region, position
    )
    return DigestRow(*row) if row is not None else None


async def newest_signed_digests(con: Conn, region: str, after_position: int, limit: int) -> list[tuple[bytes, bytes]]:
    """The (message, signature) of up to ``limit`` of ``region``'s newest digests past ``after_position``,
    oldest first: what a replication sender pushes to the other regions as anchors."""
    rows = await con.fetch(
        "SELECT message, signature FROM (SELECT last_seq, message, signature FROM audit_digests"
        " WHERE region = $1 AND last_seq > $2 AND message IS NOT NULL ORDER BY last_seq DESC LIMIT $3) d"
        " ORDER BY last_seq",
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


async def require_synchronous_commit(con: Conn) -> None:
    """Make every commit on ``con`` wait for its WAL flush, whatever the server's default.

    Durability must not depend on the server default (the append procedure also refuses to flush
    with it off): an operator who turns synchronous_commit off globally would otherwise release
    responses before their events are on disk.
    """
    await con.execute("SET synchronous_commit = on")


async def defer_flush(con: Conn) -> None:
    """Let the current transaction commit without waiting for its WAL flush (``SET LOCAL``)."""
    await con.execute("SET LOCAL synchronous_commit = off")


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


async def prune(con: Conn, region: str, through_seq: int, anchor_hash: bytes, through_time: dt.datetime) -> int:
    """Delete events up to ``through_seq`` (retention) and record the chain anchor; caller holds the head lock."""
    status = await con.execute("DELETE FROM audit_events WHERE region = $1 AND seq <= $2", region, through_seq)
    await con.execute("DELETE FROM audit_digests WHERE region = $1 AND last_seq < $2", region, through_seq)
    await con.execute(
        "UPDATE audit_chain_head SET pruned_seq = $2, pruned_hash = $3, pruned_through = $4 WHERE region = $1",
        region, through_seq, anchor_hash, through_time,
    )  # fmt: skip
    return int(status.split()[-1])


async def prune_candidate(
    con: Conn, region: str, before: dt.datetime, after_seq: int, max_rows: int
) -> tuple[int, bytes, dt.datetime] | None:
    """The last event of the oldest chunk that retention may delete: older than ``before``, already
    covered by a signed digest, at most ``max_rows`` past ``after_seq``; ``None`` if nothing is due."""
    row = await con.fetchrow(
        "SELECT e.seq, e.hash, e.event_time FROM audit_events e"
        " WHERE e.region = $1 AND e.seq > $2 AND e.seq <= $2 + $4"
        "   AND e.seq <= (SELECT digest_seq FROM audit_chain_head WHERE region = $1)"
        "   AND e.event_time < $3"
        " ORDER BY e.seq DESC LIMIT 1",
        region, after_seq, before, max_rows,
    )  # fmt: skip
    if row is None:
        return None
    return int(row[0]), bytes(row[1]), row[2]


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
