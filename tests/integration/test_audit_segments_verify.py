"""``regiond audit verify`` and ``query`` over v2 segments (``regiond.audit.verify_segments``): an
intact trail of several writers passes; each tampering of a writer's chain is named with its writer
and segment; the closed legacy chain of a migrated v1 database still verifies beside the segments."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import orjson
import pytest

from regiond.__main__ import parser
from regiond.audit import chain, segment
from regiond.audit.query import EventFilter, find
from regiond.audit.verify import Report, verify_region
from regiond.audit.verify_segments import segment_times, trail_regions
from regiond.store import audit as v1_store
from regiond.store import audit_segments as store
from regiond.store.pool import Pool, create_pool
from tests.support import legacy_audit
from tests.support.cluster import PgServer

REGION = "us-east-1"
T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def _record(name: str, n: int, when: dt.datetime) -> bytes:
    return legacy_audit.v1_record(REGION, name, n, when)


async def _write_chain(
    pool: Pool, writer: uuid.UUID, batches: list[list[bytes]], *, region: str = REGION, close_v1: bool = True
) -> None:
    """A writer's chain as ``regiond.audit.writer`` writes it (register, then one INSERT per segment)."""
    prev = segment.writer_genesis(region, writer)
    async with pool.acquire() as con:
        await store.register_writer(con, writer, "node-a", 1, prev)
        if close_v1:
            await store.close_v1_chains(con, region, chain.genesis_hash(region))
        for seq, records in enumerate(batches, 1):
            body = segment.encode(records)
            first, last = segment_times([orjson.loads(r) for r in records])
            h = segment.segment_hash(prev, writer, seq, len(records), body)
            await store.insert_segment(con, store.NewSegment(writer, seq, first, last, len(records), prev, h, body))
            prev = h


def _kinds(report: Report) -> set[tuple[str, str | None, int | None]]:
    return {(f.kind, f.writer, f.seq) for f in report.findings}


async def test_segment_chains_verify_and_each_tampering_is_named(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        a, b = uuid.uuid4(), uuid.uuid4()
        await _write_chain(pool, a, [[_record("Encrypt", 10 * s + i, T0 + dt.timedelta(minutes=s)) for i in range(3)]
                                     for s in range(8)])  # fmt: skip
        await _write_chain(pool, b, [[_record("Decrypt", 100 + s, T0)] for s in range(3)])
        report = await verify_region(pool, REGION)
        assert report.ok, [f.line() for f in report.findings]
        assert (report.writers_checked, report.segments_checked) == (2, 11)
        heads = {h.writer_id: h.seq for h in report.heads}
        assert heads == {a: 8, b: 3}

        # query: time-pruned, filtered on the records, oldest first, legacy and v2 merged
        hits = await find(pool, EventFilter(since=T0 + dt.timedelta(minutes=2), until=T0 + dt.timedelta(minutes=4)))
        assert len(hits) == 6 and all(b'"Encrypt"' in h.record for h in hits)
        assert [h.time for h in hits] == sorted(h.time for h in hits)
        assert len(await find(pool, EventFilter(event_name="Decrypt"))) == 3
        assert len(await find(pool, EventFilter(limit=4))) == 4

        wa, wb = str(a), str(b)
        async with pool.acquire() as con:
            # changed: one byte of a record of segment 2
            await con.execute("UPDATE audit_segments SET body = overlay(body placing '9' from 40 for 1)"
                              " WHERE writer_id = $1 AND seq = 2", a)  # fmt: skip
            # reordered: segments 4 and 5 swapped (every column but the key)
            await con.execute(
                "UPDATE audit_segments s SET first_time = o.first_time, last_time = o.last_time,"
                " record_count = o.record_count, prev_hash = o.prev_hash, hash = o.hash, body = o.body"
                " FROM audit_segments o WHERE s.writer_id = $1 AND o.writer_id = $1 AND s.seq + o.seq = 9"
                " AND s.seq IN (4, 5)", a,
            )  # fmt: skip
            # deleted: segment 7
            await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq = 7", a)
            # time columns moved so a query would skip segment 1 of b
            await con.execute("UPDATE audit_segments SET first_time = first_time + interval '1 day',"
                              " last_time = last_time + interval '1 day'"
                              " WHERE writer_id = $1 AND seq = 1", b)  # fmt: skip
            # inserted: a segment of a writer nobody registered
            ghost = uuid.uuid4()
            body = segment.encode([_record("Sign", 999, T0)])
            g = segment.writer_genesis(REGION, ghost)
            await store.insert_segment(con, store.NewSegment(
                ghost, 1, T0, T0, 1, g, segment.segment_hash(g, ghost, 1, 1, body), body))  # fmt: skip
        report = await verify_region(pool, REGION)
        found = _kinds(report)
        assert ("segment-changed", wa, 2) in found
        assert {("segment-reordered", wa, 4), ("segment-reordered", wa, 5)} <= found
        assert ("segment-deleted", wa, 7) in found
        assert ("segment-time-changed", wb, 1) in found
        assert ("writer-unregistered", str(ghost), None) in found
        assert all(f.writer in (wa, wb, str(ghost)) for f in report.findings), [f.line() for f in report.findings]
        assert any(f"writer {wa} segment 7: segment-deleted" in f.line() for f in report.findings)

        async with pool.acquire() as con:
            # re-hashed: segment 2 of b rewritten with a valid own hash; segment 3 still links to the old one
            row = await con.fetchrow("SELECT prev_hash, body FROM audit_segments WHERE writer_id = $1 AND seq = 2", b)
            assert row is not None
            new_body = segment.encode([_record("Decrypt", 555, T0)])
            new_hash = segment.segment_hash(bytes(row["prev_hash"]), b, 2, 1, new_body)
            await con.execute("UPDATE audit_segments SET body = $2, hash = $3 WHERE writer_id = $1 AND seq = 2",
                              b, new_body, new_hash)  # fmt: skip
            # a malformed body
            await con.execute("UPDATE audit_segments SET record_count = 2 WHERE writer_id = $1 AND seq = 8", a)
        found = _kinds(await verify_region(pool, REGION))
        assert ("segment-broken", wb, 3) in found
        assert ("segment-malformed", wa, 8) in found
    finally:
        await pool.close()


async def test_a_migrated_v1_trail_verifies_as_a_closed_legacy_chain_beside_segments(pg_server: PgServer) -> None:
    url = await legacy_audit.v1_database(pg_server, f"v1_verify_{uuid.uuid4().hex[:8]}")
    try:
        con = await asyncpg.connect(url)
        try:
            for i in range(3):
                await legacy_audit.append_v1(con, REGION, [_record("Encrypt", 10 * i + j, T0) for j in range(4)], T0)
        finally:
            await con.close()
        await legacy_audit.upgrade(url)
        assert await legacy_audit.close(url, REGION) == 12
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await _write_chain(pool, uuid.uuid4(), [[_record("Decrypt", 50 + s, T0 + dt.timedelta(hours=1))]
                                                    for s in range(2)])  # fmt: skip
            report = await verify_region(pool, REGION)
            assert report.ok, [f.line() for f in report.findings]
            assert (report.events_checked, report.segments_checked) == (12, 2)
            hits = await find(pool, EventFilter(region=REGION))
            assert len(hits) == 14 and b'"Decrypt"' in hits[-1].record  # legacy first: older
            async with pool.acquire() as c:
                await c.execute("DELETE FROM audit_events WHERE seq = 5")
            assert any(f.kind == "deleted" and f.seq == 5 for f in (await verify_region(pool, REGION)).findings)
        finally:
            await pool.close()
    finally:
        await pg_server.drop_database(url)


async def test_verify_finds_every_region_with_a_trail_not_only_those_with_a_v1_chain_head(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    eu = "eu-west-1"
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await _write_chain(pool, uuid.uuid4(), [[_record("Encrypt", s, T0)] for s in range(2)])
        # eu-west-1 holds v2 segments only: no legacy chain head, no digest, an unregistered writer too.
        eu_writer, ghost = uuid.uuid4(), uuid.uuid4()
        await _write_chain(pool, eu_writer, [[legacy_audit.v1_record(eu, "Decrypt", 1, T0)]], region=eu,
                           close_v1=False)  # fmt: skip
        async with pool.acquire() as con:
            assert await v1_store.regions(con) == [REGION]
            body = segment.encode([legacy_audit.v1_record(eu, "Sign", 2, T0)])
            g = segment.writer_genesis(eu, ghost)
            await store.insert_segment(con, store.NewSegment(
                ghost, 1, T0, T0, 1, g, segment.segment_hash(g, ghost, 1, 1, body), body))  # fmt: skip
            assert await trail_regions(con) == [eu, REGION]
    finally:
        await pool.close()

    args = parser().parse_args(["audit", "verify", "--database-url", database_url, "--format", "json"])
    capsys.readouterr()
    assert await asyncio.to_thread(args.func, args) == 1
    reports = {r["region"]: r for r in (orjson.loads(line) for line in capsys.readouterr().out.splitlines()
                                        if line.startswith('{"region"'))}  # fmt: skip
    assert (reports[REGION]["segmentsChecked"], reports[eu]["segmentsChecked"]) == (2, 1)
    for region in (REGION, eu):  # a writer without a row is reported whichever region is checked
        assert [(f["kind"], f["writer"]) for f in reports[region]["findings"]] == [("writer-unregistered", str(ghost))]
