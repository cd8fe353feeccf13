"""Audit trail v2 storage (migration 0011, ``regiond.store.audit_segments``' write side): a v1 database
upgrades in place with its chain closed and every v1 write refused from then on; segments are stored
by one INSERT each, and a retried segment is stored once."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from regiond.audit import chain, segment
from regiond.store import audit_segments as store
from regiond.store.pool import create_pool
from tests.support import legacy_audit
from tests.support.cluster import PgServer

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


async def test_a_v1_database_upgrades_with_its_chain_closed_and_v1_writes_refused(pg_server: PgServer) -> None:
    url = await legacy_audit.v1_database(pg_server, f"v1_upgrade_{uuid.uuid4().hex[:8]}")
    try:
        con = await asyncpg.connect(url)
        try:
            for i in range(3):  # nodes of the previous release: appended and chained
                batch = [legacy_audit.v1_record("us-east-1", "Encrypt", 10 * i + j, NOW) for j in range(4)]
                await legacy_audit.append_v1(con, "us-east-1", batch, NOW)
            # A node two releases old staged two events and died before linking them.
            staged = [legacy_audit.v1_record("us-east-1", "Decrypt", 100 + j, NOW) for j in range(2)]
            assert await legacy_audit.stage_v1(con, "us-east-1", staged, NOW) == 2

            assert 11 in await legacy_audit.upgrade(url)
            # Migrated but not closed: a node of the previous release still appends (regiond migrate
            # may run ahead of the upgrade); the first v2 writer's start closes the chain.
            one_more = [legacy_audit.v1_record("us-east-1", "Sign", 99, NOW)]
            assert await legacy_audit.append_v1(con, "us-east-1", one_more, NOW) == 13
            assert await legacy_audit.close(url, "us-east-1") == 15
            assert await legacy_audit.close(url, "us-east-1") is None  # once

            head = await con.fetchrow("SELECT seq, hash, closed_seq, closed_at FROM audit_chain_head")
            assert head is not None
            assert head["closed_seq"] == head["seq"] == 15 and head["closed_at"] is not None
            assert await con.fetchval("SELECT count(*) FROM audit_pending") == 0  # linked, not stranded
            records = [bytes(r["record"]) for r in await con.fetch("SELECT record FROM audit_events ORDER BY seq")]
            assert records[-2:] == staged
            # The closed chain is whole: every link recomputed with the v1 rule.
            prev = chain.genesis_hash("us-east-1")
            for row in await con.fetch("SELECT prev_hash, hash, record FROM audit_events ORDER BY seq"):
                assert bytes(row["prev_hash"]) == prev
                prev = chain.event_hash(prev, bytes(row["record"]))
                assert bytes(row["hash"]) == prev
            assert prev == bytes(head["hash"])

            # A node of the previous release (CALL audit_append_durable) and one two releases old
            # (audit_stage) are refused, naming the upgrade: their calls fail closed, nothing is lost.
            late = [legacy_audit.v1_record("us-east-1", "Encrypt", 200, NOW)]
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="closed at event 15 by the upgrade"):
                await legacy_audit.append_v1(con, "us-east-1", late, NOW)
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="closed by the upgrade"):
                await legacy_audit.stage_v1(con, "us-east-1", late, NOW)
            assert await con.fetchval("SELECT count(*) FROM audit_events") == 15
            assert await con.fetchval("SELECT count(*) FROM audit_pending") == 0
        finally:
            await con.close()
    finally:
        await pg_server.drop_database(url)


def _segment(writer: uuid.UUID, seq: int, prev: bytes, records: list[bytes]) -> store.NewSegment:
    body = segment.encode(records)
    return store.NewSegment(writer, seq, NOW, NOW, len(records), prev,
                            segment.segment_hash(prev, writer, seq, len(records), body), body)  # fmt: skip


async def test_segments_are_stored_once_and_a_retry_is_idempotent(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        writer = uuid.uuid4()
        genesis = segment.writer_genesis("us-east-1", writer)
        records = [legacy_audit.v1_record("us-east-1", "Encrypt", i, NOW) for i in range(3)]
        async with pool.acquire() as con:
            await store.register_writer(con, writer, "node-a", 4242, genesis)
            first = _segment(writer, 1, genesis, records)
            await store.insert_segment(con, first)
            with pytest.raises(asyncpg.UniqueViolationError):  # a writer never writes one seq twice
                await store.insert_segment(con, first)
            await store.insert_segment(con, first, idempotent=True)  # a retry of what was stored: fine
            other = _segment(writer, 1, genesis, records[:1])
            with pytest.raises(store.SegmentConflictError):  # the same seq with other content: refused
                await store.insert_segment(con, other, idempotent=True)
            second = _segment(writer, 2, first.hash, records[1:])
            await store.insert_segment(con, second, idempotent=True)
            rows = await con.fetch("SELECT seq, record_count, prev_hash, hash, body FROM audit_segments ORDER BY seq")
            assert [(r["seq"], r["record_count"]) for r in rows] == [(1, 3), (2, 2)]
            assert segment.decode(writer, 2, 2, bytes(rows[1]["body"])) == records[1:]
            assert bytes(rows[1]["prev_hash"]) == bytes(rows[0]["hash"]) == first.hash
            w = await con.fetchrow("SELECT node, pid, genesis FROM audit_writers WHERE writer_id = $1", writer)
            assert w is not None
            assert (w["node"], w["pid"], bytes(w["genesis"])) == ("node-a", 4242, genesis)
            # A trigger that drops the row silently: the write is refused, not counted as durable.
            await con.execute("CREATE FUNCTION seg_drop() RETURNS trigger LANGUAGE plpgsql"
                              " AS $$ BEGIN RETURN NULL; END $$;"
                              " CREATE TRIGGER seg_drop BEFORE INSERT ON audit_segments"
                              " FOR EACH ROW EXECUTE FUNCTION seg_drop()")  # fmt: skip
            third = _segment(writer, 3, second.hash, records)
            with pytest.raises(store.SegmentNotStoredError):
                await store.insert_segment(con, third)
            with pytest.raises(store.SegmentNotStoredError):
                await store.insert_segment(con, third, idempotent=True)
    finally:
        await pool.close()
