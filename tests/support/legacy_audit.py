"""A database of the release before audit trail v2 (schema 0010), with v1 events written as its nodes
wrote them (one CALL of ``audit_append_durable`` per batch, migration 0008), to be upgraded in place.

Used by the migration tests of both halves of issue 15: the writer's (the v1 chain is closed, v1
writes are refused) and verify's (the closed legacy chain still verifies).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import orjson

from regiond.audit import chain
from regiond.audit.anchors import AnchorFile
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import audit_segments
from regiond.store import migrate as migrations
from regiond.store.pool import Pool, create_pool
from tests.support.cluster import PgServer

V1_SCHEMA = 10  # the last migration of the release that wrote audit_events


async def v1_database(pg_server: PgServer, name: str) -> str:
    """A new database migrated to the v1 schema only; its URL."""
    con = await asyncpg.connect(pg_server.admin_url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    url = pg_server.url_for(name)
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await migrations.migrate(pool, up_to=V1_SCHEMA)
    finally:
        await pool.close()
    return url


def v1_record(region: str, name: str, n: int, when: dt.datetime) -> bytes:
    """A record shaped like an event of that release (enough for the chain and the query columns)."""
    return orjson.dumps({
        "eventVersion": "1.08", "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventSource": "kms.amazonaws.com",
        "eventName": name, "awsRegion": region, "requestID": f"v1-{n}", "eventID": str(uuid.uuid4()),
        "readOnly": True, "eventType": "AwsApiCall",
    })  # fmt: skip


async def append_v1(con: asyncpg.Connection, region: str, records: Sequence[bytes], when: dt.datetime) -> int:
    """One batch as a node of that release appended it; returns the chain head's seq after it."""
    await con.execute(
        "INSERT INTO audit_chain_head (region, hash) VALUES ($1, $2) ON CONFLICT (region) DO NOTHING",
        region, chain.genesis_hash(region),
    )  # fmt: skip
    n = len(records)
    events = [orjson.loads(r) for r in records]
    row = await con.fetchrow(
        "CALL audit_append_durable($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        region, [uuid.UUID(e["eventID"]) for e in events], [when] * n, [e["eventSource"] for e in events],
        [e["eventName"] for e in events], [None] * n, [""] * n, [None] * n, [e["readOnly"] for e in events],
        list(records),
    )  # fmt: skip
    assert row is not None
    return int(row[0])


async def stage_v1(con: asyncpg.Connection, region: str, records: Sequence[bytes], when: dt.datetime) -> int:
    """One batch as a node two releases old staged it (``audit_stage``, 0007): durable, not yet chained."""
    n = len(records)
    events = [orjson.loads(r) for r in records]
    return int(await con.fetchval(
        "SELECT audit_stage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        region, [uuid.UUID(e["eventID"]) for e in events], [when] * n, [e["eventSource"] for e in events],
        [e["eventName"] for e in events], [None] * n, [""] * n, [None] * n, [e["readOnly"] for e in events],
        list(records),
    ))  # fmt: skip


async def close(url: str, region: str) -> int | None:
    """Close the v1 chains as the first v2 writer's start does (``close_v1_chains``)."""
    con = await asyncpg.connect(url)
    try:
        return await audit_segments.close_v1_chains(con, region, chain.genesis_hash(region))  # type: ignore[arg-type]
    finally:
        await con.close()


async def upgrade(url: str) -> list[int]:
    """Migrate the database to this release's schema, as the first node of this release does at start."""
    pool: Pool = await create_pool(url, min_size=1, max_size=1)
    try:
        return await migrations.migrate(pool)
    finally:
        await pool.close()


async def sign_v1_digest(
    con: asyncpg.Connection, region: str, signer: RegionIdentityKey, when: dt.datetime, anchors: Path | None = None
) -> int:
    """A v1 checkpoint as a node of that release signed it (chain.Digest over the head), appended to the
    node's anchor file ``anchors`` if given; its last seq."""
    async with con.transaction():
        head = await con.fetchrow(
            "SELECT seq, hash, digest_seq, digest_hash FROM audit_chain_head WHERE region = $1 FOR UPDATE", region
        )
        assert head is not None and head["seq"] > head["digest_seq"]
        prev = bytes(head["digest_hash"]) if head["digest_hash"] is not None else None
        d = chain.Digest(region=region, first_seq=head["digest_seq"] + 1, last_seq=head["seq"],
                         last_hash=bytes(head["hash"]), prev_digest=prev, digest_time=when).signed(signer)  # fmt: skip
        await con.execute(
            "INSERT INTO audit_digests (region, first_seq, last_seq, digest_time, last_hash, prev_digest, public_key,"
            " signature, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            region, d.first_seq, d.last_seq, d.digest_time, d.last_hash, d.prev_digest, d.public_key, d.signature,
            d.message(),
        )  # fmt: skip
        await con.execute(
            "UPDATE audit_chain_head SET digest_seq = $2, digest_hash = $3, digest_time = $4 WHERE region = $1",
            region, d.last_seq, chain.digest_hash(d), d.digest_time,
        )  # fmt: skip
    if anchors is not None:
        AnchorFile(anchors).append(d.anchor())
    return d.last_seq


async def v1_trail(
    pg_server: PgServer, name: str, region: str, signer: RegionIdentityKey, *, events: int, digest_every: int,
    event_name: str = "ListKeys", when: dt.datetime | None = None, anchors: Path | None = None,
) -> str:  # fmt: skip
    """A database of the previous release holding ``events`` v1 events in batches of ``digest_every``, a
    signed digest after each batch, then upgraded in place and closed as the first v2 writer does."""
    when = when or dt.datetime.now(dt.UTC).replace(microsecond=0)
    url = await v1_database(pg_server, name)
    con = await asyncpg.connect(url)
    try:
        for first in range(0, events, digest_every):
            batch = [v1_record(region, event_name, n, when) for n in range(first, min(events, first + digest_every))]
            await append_v1(con, region, batch, when)
            await sign_v1_digest(con, region, signer, when, anchors)
    finally:
        await con.close()
    await upgrade(url)
    await close(url, region)
    return url
