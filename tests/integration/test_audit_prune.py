"""Audit trail v2 retention (``regiond.audit.prune``): whole old segments removed only where an anchored
digest covers them and they check out, recorded in a signed prune record that verify honours; a
deleted, forged or edited record, and segments deleted past it, are still findings."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from regiond.__main__ import parser
from regiond.audit import digests, prune
from regiond.audit.anchors import read_anchor_file
from regiond.audit.verify import Report, verify_region
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import audit_digests as store
from regiond.store.pool import Pool, create_pool
from tests.support.audit_v2 import Chain, edited

REGION = "us-east-1"
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
KEY = RegionIdentityKey.generate()


class _Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.t = now

    def now(self) -> dt.datetime:
        return self.t


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    p = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


async def _verify(pool: Pool) -> Report:
    return await verify_region(pool, REGION, trusted_keys=[KEY.public_bytes()])


def _kinds(report: Report) -> list[tuple[str, str | None, int | None]]:
    return sorted((f.kind, f.writer, f.seq) for f in report.findings)


async def test_prune_removes_covered_old_segments_and_verify_reports_them_as_pruned(pool: Pool, tmp_path: Path) -> None:
    clock = _Clock(T0 + 10 * HOUR)
    anchor_path = tmp_path / "audit-anchors-v2.jsonl"
    task = digests.DigestTask(pool, REGION, KEY, interval_s=5.0, close_after_s=3600.0, clock=clock,
                              anchor_path=anchor_path)  # fmt: skip
    a, gone = Chain(REGION), Chain(REGION)
    async with pool.acquire() as con:
        for c in (a, gone):
            await c.register(con)
        await a.write(con, 5, when=T0, step=HOUR)  # segments 1..5 at T0 .. T0+4h
        await gone.write(con, 2, when=T0)
        await store.retire_writer(con, gone.writer_id)  # stopped cleanly: the next digest closes it
    assert await task.round() is not None
    before = T0 + 3 * HOUR
    with pytest.raises(prune.PruneRefusedError, match=r"no v2 digest of us-east-1 .* is anchored"):
        await prune.prune(pool, REGION, KEY, before, [])  # nothing anchored is given: nothing is covered
    async with pool.acquire() as con:
        await a.write(con, 1, when=T0 + 5 * HOUR)  # segment 6, after the newest anchored digest
    anchors = read_anchor_file(anchor_path).anchors

    result = await prune.prune(pool, REGION, KEY, before, anchors, now=clock.t)
    assert result is not None and (result.seq, result.segments, result.writers) == (1, 5, 2)
    async with pool.acquire() as con:
        left = [(r["writer_id"], r["seq"]) for r in await con.fetch("SELECT writer_id, seq FROM audit_segments"
                                                                     " ORDER BY seq")]  # fmt: skip
    assert left == [(a.writer_id, 4), (a.writer_id, 5), (a.writer_id, 6)]
    report = await _verify(pool)
    assert report.ok, [f.line() for f in report.findings]
    assert report.segments_checked == 3
    assert any("prune record 1" in n and "5 segments of 2 writers with events before 2026-11-01T15:00:00Z" in n
               for n in report.notes), report.notes  # fmt: skip
    assert await prune.prune(pool, REGION, KEY, before, anchors) is None  # done already
    assert await task.round() is not None  # signs segment 6 as a's head
    result = await prune.prune(pool, REGION, KEY, T0 + 10 * HOUR, read_anchor_file(anchor_path).anchors)
    assert result is not None and (result.seq, result.segments) == (2, 2)  # 4 and 5: an open writer keeps its newest
    report = await _verify(pool)
    assert report.ok and report.segments_checked == 1, [f.line() for f in report.findings]

    async with pool.acquire() as con:
        rows = await store.prunes(con, REGION)
        # A prune record removed: what only it pruned (the closed writer's chain) reads as deleted again, and
        # the gap in the records shows (writer a's range is in record 2 too: it records where a chain starts).
        await con.execute("DELETE FROM audit_prunes WHERE seq = 1")
        found = _kinds(await _verify(pool))
        assert ("writer-deleted", str(gone.writer_id), None) in found and ("prune-missing", None, None) in found
        await con.execute("INSERT INTO audit_prunes SELECT $1, $2, $3, $4, $5, $6", *(
            rows[0].region, rows[0].seq, rows[0].pruned_at, rows[0].public_key, rows[0].message, rows[0].signature))
        assert (await _verify(pool)).ok
        # Edited (a writer's pruned range widened): not signed, so not honoured.
        edited = rows[1].message.replace(b'"seq":5', b'"seq":6')
        assert edited != rows[1].message
        await con.execute("UPDATE audit_prunes SET message = $1 WHERE seq = 2", edited)
        kinds = {k for k, _, _ in _kinds(await _verify(pool))}
        assert "prune-forged" in kinds and "segment-deleted" in kinds, kinds
        # Forged with another key: the same.
        forger = RegionIdentityKey.generate()
        await con.execute("UPDATE audit_prunes SET message = $1, signature = $2, public_key = $3 WHERE seq = 2",
                          edited, forger.sign(edited), forger.public_bytes())  # fmt: skip
        assert "prune-forged" in {k for k, _, _ in _kinds(await _verify(pool))}
        await con.execute("UPDATE audit_prunes SET message = $1, signature = $2, public_key = $3 WHERE seq = 2",
                          rows[1].message, rows[1].signature, rows[1].public_key)  # fmt: skip
        assert (await _verify(pool)).ok
        # A kept segment deleted is still a finding.
        await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq = 6", a.writer_id)
    kinds = {k for k, _, _ in _kinds(await _verify(pool))}
    assert kinds and not kinds & {"prune-forged", "prune-invalid", "prune-missing"}, kinds


async def test_prune_refuses_to_remove_segments_that_do_not_check_out(pool: Pool, tmp_path: Path) -> None:
    clock = _Clock(T0 + 10 * HOUR)
    anchor_path = tmp_path / "audit-anchors-v2.jsonl"
    task = digests.DigestTask(pool, REGION, KEY, interval_s=5.0, close_after_s=3600.0, clock=clock,
                              anchor_path=anchor_path)  # fmt: skip
    c = Chain(REGION)
    async with pool.acquire() as con:
        await c.register(con)
        await c.write(con, 4, when=T0, step=HOUR)
    assert await task.round() is not None
    async with pool.acquire() as con:  # an old record changed: pruning must not erase that evidence
        body = await con.fetchval("SELECT body FROM audit_segments WHERE writer_id = $1 AND seq = 2", c.writer_id)
        await con.execute("UPDATE audit_segments SET body = $2 WHERE writer_id = $1 AND seq = 2",
                          c.writer_id, edited(body, b'"eventSource"', b'"eventsource"'))  # fmt: skip
    with pytest.raises(prune.PruneRefusedError, match=r"segment 2: segment-changed.*nothing was pruned"):
        await prune.prune(pool, REGION, KEY, T0 + 3 * HOUR, read_anchor_file(anchor_path).anchors)
    async with pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM audit_segments") == 4
        assert await con.fetchval("SELECT count(*) FROM audit_prunes") == 0
    assert ("segment-changed", str(c.writer_id), 2) in _kinds(await _verify(pool))


async def test_the_prune_command_needs_the_state_dir_and_a_past_bound(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, why in (
        (["--before", "1d"], "give --state-dir"),
        (["--before", "2999-01-01T00:00:00Z"], "--before must not be in the future"),
        (["--before", "yesterday"], "yesterday"),
    ):
        args = parser().parse_args(["audit", "prune", "--database-url", database_url, "--region", REGION, *argv])
        capsys.readouterr()
        assert await asyncio.to_thread(args.func, args) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err
