"""The audit trail v2 writer (``regiond.audit.writer``) against a real PostgreSQL: what it acknowledges is
in a segment of its chain; it fails closed when the table refuses rows or the database is gone, and
writes again once it is back, without a restart and without a hole in its chain; in ``async`` mode
it answers once queued and refuses calls when the bounded queue is full; the first writer on a
database of the previous release closes its v1 chain, after which old nodes fail closed."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import orjson
import pytest

from regiond.audit import digests, segment
from regiond.audit.calls import CallRecord
from regiond.audit.verify import verify_region
from regiond.audit.writer import (
    AUDIT_BATCH_EVENTS,
    AuditUnavailableError,
    SegmentWriter,
    WriterOptions,
    events_lost_in_process,
)
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import parse_anchor
from regiond.runtime.metrics import REGISTRY
from regiond.store import audit as audit_store
from regiond.store.pool import Pool, create_pool
from tests.support import legacy_audit
from tests.support.cluster import PgServer

REGION = "us-east-1"
_REJECT = """
CREATE FUNCTION seg_reject() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit storage unavailable'; END $$;
CREATE TRIGGER seg_reject BEFORE INSERT ON audit_segments FOR EACH ROW EXECUTE FUNCTION seg_reject();
"""


def _call(n: int) -> CallRecord:
    return CallRecord(operation="ListKeys", event_source="kms.amazonaws.com", request_id=f"req-{n}",
                      event_time=dt.datetime.now(dt.UTC), region=REGION, source_ip="127.0.0.1",
                      user_agent="test")  # fmt: skip


async def _stored(pool: Pool) -> list[dict[str, object]]:
    async with pool.acquire() as con:
        rows = await con.fetch("SELECT writer_id, seq, record_count, body FROM audit_segments ORDER BY writer_id, seq")
    out: list[dict[str, object]] = []
    for r in rows:
        out += [orjson.loads(x) for x in segment.decode(r["writer_id"], r["seq"], r["record_count"], bytes(r["body"]))]
    return out


async def _request_ids(pool: Pool) -> list[str]:
    return sorted(str(e["requestID"]) for e in await _stored(pool))


async def test_acknowledged_events_are_in_segments_of_one_chain_per_writer(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=6)
    writers = [SegmentWriter(pool, REGION, node="node-a"), SegmentWriter(pool, REGION, node="node-a")]
    try:
        for w in writers:
            await w.start()
        before = AUDIT_BATCH_EVENTS._sum.get()
        await asyncio.gather(*(writers[i % 2].submit(_call(i)) for i in range(200)))
        assert await _request_ids(pool) == sorted(f"req-{i}" for i in range(200))
        assert AUDIT_BATCH_EVENTS._sum.get() - before == 200
        async with pool.acquire() as con:
            segments = await con.fetchval("SELECT count(*) FROM audit_segments")
            registered = await con.fetch("SELECT writer_id, node FROM audit_writers")
        assert segments < 200  # concurrent calls shared segments (group commit)
        assert {r["writer_id"] for r in registered} == {w.writer_id for w in writers}
        report = await verify_region(pool, REGION)
        assert report.ok, [f.line() for f in report.findings]
        assert report.writers_checked == 2 and report.segments_checked == segments
        # an idle writer answers a lone call with a segment of one
        await writers[0].submit(_call(999))
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT record_count FROM audit_segments WHERE writer_id = $1"
                                      " ORDER BY seq DESC LIMIT 1", writers[0].writer_id) == 1  # fmt: skip
    finally:
        for w in writers:
            await w.close()
        await pool.close()


async def test_fails_closed_when_rows_are_refused_or_the_database_is_gone_and_recovers(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    writer = SegmentWriter(pool, REGION, options=WriterOptions(write_timeout_s=2.0))
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    try:
        await writer.start()
        await writer.submit(_call(1))
        async with pool.acquire() as con:
            await con.execute(_REJECT)
        with pytest.raises(AuditUnavailableError):
            await writer.submit(_call(2))
        assert writer.problem(30.0) == "audit writes are failing"
        async with pool.acquire() as con:
            await con.execute("DROP TRIGGER seg_reject ON audit_segments; DROP FUNCTION seg_reject()")
        await writer.submit(_call(3))
        assert writer.problem(30.0) is None

        # The database goes away: its sessions are ended and new ones refused.
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            with pytest.raises(AuditUnavailableError):
                await writer.submit(_call(4))
            with pytest.raises(AuditUnavailableError):
                await writer.submit(_call(5))
            assert writer.problem(30.0) == "audit writes are failing"
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        finally:
            await admin.close()
        await writer.submit(_call(6))  # a new connection, no restart
        ids = await _request_ids(pool)
        # Acknowledged calls are all there; a refused call's event may be (a failed segment is
        # retried, since it may have committed unseen), never the reverse.
        assert {"req-1", "req-3", "req-6"} <= set(ids) <= {f"req-{i}" for i in range(1, 7)}
        report = await verify_region(pool, REGION)
        assert report.ok, [f.line() for f in report.findings]  # no hole in the writer's chain
    finally:
        await writer.close()
        await pool.close()


async def _drained(writer: SegmentWriter) -> None:
    for _ in range(400):
        if writer.backlog == 0:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{writer.backlog} events still not durable")


async def test_async_mode_answers_once_queued_and_refuses_when_the_queue_is_full(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    writer = SegmentWriter(pool, REGION, options=WriterOptions(durability="async", async_queue_events=8,
                                                               write_timeout_s=30.0))  # fmt: skip
    blocker = await asyncpg.connect(database_url)
    try:
        await writer.start()
        await writer.submit(_call(0))
        await _drained(writer)
        # The table is locked by another session: writes wait, events queue up to the bound.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE audit_segments IN ACCESS EXCLUSIVE MODE")
        accepted = 0
        with pytest.raises(AuditUnavailableError, match="queue is full"):
            for i in range(1, 100):
                await writer.submit(_call(i))
                accepted += 1
                await asyncio.sleep(0)
        assert accepted == 8  # the bound counts events queued, in flight and unstored
        assert writer.backlog == 8
        assert writer.problem(30.0) == "the audit queue is full"
        await tx.rollback()
        await _drained(writer)
        # every acknowledged call's event is durable now; the refused one is not
        assert await _request_ids(pool) == sorted(f"req-{i}" for i in range(accepted + 1))
        assert (await verify_region(pool, REGION)).ok
    finally:
        await blocker.close()
        await writer.close()
        await pool.close()


def test_writer_ids_are_fresh_per_process_start() -> None:
    a, b = SegmentWriter(None, REGION), SegmentWriter(None, REGION)  # type: ignore[arg-type]
    assert a.writer_id != b.writer_id and isinstance(a.writer_id, uuid.UUID)


async def test_a_write_stuck_past_the_timeout_fails_its_calls_and_the_chain_stays_whole(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    writer = SegmentWriter(pool, REGION, options=WriterOptions(write_timeout_s=0.5))
    blocker = await asyncpg.connect(database_url)
    try:
        await writer.start()
        await writer.submit(_call(0))  # a kept connection from now on
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE audit_segments IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(AuditUnavailableError):
            await writer.submit(_call(1))
        await tx.rollback()
        await writer.submit(_call(2))
        assert {"req-0", "req-2"} <= set(await _request_ids(pool))
        assert (await verify_region(pool, REGION)).ok
    finally:
        await blocker.close()
        await writer.close()
        await pool.close()


async def test_the_first_writer_on_a_v1_database_closes_its_chain_and_old_nodes_fail_closed(
    pg_server: PgServer,
) -> None:
    url = await legacy_audit.v1_database(pg_server, f"v1_writer_{uuid.uuid4().hex[:8]}")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        con = await asyncpg.connect(url)
        try:
            for i in range(2):
                await legacy_audit.append_v1(con, REGION, [legacy_audit.v1_record(REGION, "Encrypt", 10 * i + j, now)
                                                           for j in range(3)], now)  # fmt: skip
            await legacy_audit.upgrade(url)
            pool = await create_pool(url, min_size=1, max_size=3)
            writer = SegmentWriter(pool, REGION)
            try:
                await writer.start()  # closes the v1 chain at seq 6
                await writer.submit(_call(1))
                # A node of the previous release, still serving: refused, so its call fails closed.
                with pytest.raises(asyncpg.FeatureNotSupportedError, match="must be upgraded"):
                    await legacy_audit.append_v1(con, REGION, [legacy_audit.v1_record(REGION, "Sign", 99, now)], now)
                # v2 digests number on from the closed chain's last position (6), so the anchors of both
                # formats are one increasing sequence, and the replication sender pushes both.
                key = RegionIdentityKey.generate()
                task = digests.DigestTask(pool, REGION, key, interval_s=5.0, close_after_s=3600.0)
                first = await task.round()
                assert first is not None and first.seq == 7 and first.prev_hash is None
                async with pool.acquire() as c:
                    pushed = await audit_store.newest_signed_digests(c, REGION, 0, 64)
                assert [parse_anchor(*s).position for s in pushed][-1:] == [7]
                report = await verify_region(pool, REGION, trusted_keys=[key.public_bytes()])
                assert report.ok, [f.line() for f in report.findings]
                assert (report.events_checked, report.segments_checked) == (6, 1)
                assert report.digests_checked >= 1
            finally:
                await writer.close()
                await pool.close()
            assert await con.fetchval("SELECT closed_seq FROM audit_chain_head WHERE region = $1", REGION) == 6
        finally:
            await con.close()
    finally:
        await pg_server.drop_database(url)


async def test_a_writer_whose_lease_lapsed_goes_on_under_a_new_id_and_retires_at_close(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    writer = SegmentWriter(pool, REGION, options=WriterOptions(close_after_s=0.6, write_timeout_s=1.0))
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        await writer.start()
        first = writer.writer_id
        await writer.submit(_call(1))
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await asyncio.sleep(0.6)  # renewals fail: the lease (valid for half of close_after_s) lapses
        with pytest.raises(AuditUnavailableError):
            await writer.submit(_call(2))
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await writer.submit(_call(3))
        assert writer.writer_id != first  # never again under the lapsed id: a new chain
        await writer.close()
        async with pool.acquire() as con:
            rows = await con.fetch("SELECT writer_id, alive_at = '-infinity' AS retired FROM audit_writers")
        assert {r["writer_id"] for r in rows} == {first, writer.writer_id}
        assert [r["retired"] for r in rows if r["writer_id"] == writer.writer_id] == [True]
        assert {"req-1", "req-3"} <= set(await _request_ids(pool))
        report = await verify_region(pool, REGION)
        assert report.writers_checked == 2
        assert not [f for f in report.findings if f.kind.startswith(("segment", "writer"))], report.findings
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await writer.close()
        await pool.close()


async def test_async_events_a_worker_cannot_store_before_it_stops_are_counted_lost_not_dropped_silently(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    writer = SegmentWriter(pool, REGION, options=WriterOptions(durability="async", write_timeout_s=2.0))
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    lost_before = events_lost_in_process()
    metric_before = REGISTRY.get_sample_value("regionkms_audit_events_lost_total") or 0.0
    try:
        await writer.start()
        await writer.submit(_call(0))
        await _drained(writer)
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        for i in range(1, 6):
            await writer.submit(_call(i))  # answered: queued, and the database takes nothing
        await asyncio.sleep(0.1)  # a write is tried and fails: the events go on waiting
        assert writer.backlog == 5
        await writer.close()  # the node stops with the database still out of reach
        assert writer.lost_at_close == 5
        assert events_lost_in_process() - lost_before == 5  # what makes the worker's exit status a failure
        assert (REGISTRY.get_sample_value("regionkms_audit_events_lost_total") or 0.0) - metric_before == 5
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await _request_ids(pool) == ["req-0"]
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await writer.close()
        await pool.close()
