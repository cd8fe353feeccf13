"""Audit trail v2 digests on a real PostgreSQL (``regiond.audit.digests``, ``regiond.audit.digest_verify``):
the task signs every writer's head and chains each digest to the one before, closes a writer that is
gone, refuses to sign over a cut chain; verify finds each kind of tampering only a digest can show."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from regiond import statedir
from regiond.audit import digests, segment
from regiond.audit.anchors import V2_ANCHOR_FILE_NAME, read_anchor_file
from regiond.audit.digest_verify import check_digests
from regiond.audit.lease import WriterLease
from regiond.audit.verify import AnchorSet, Report, verify_region
from regiond.background.leadership import holder_name
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import audit_digests as store
from regiond.store import audit_segments
from regiond.store.locks import SessionLocks
from regiond.store.pool import Conn, Pool, create_pool
from tests.support.audit_v2 import Chain, edited, rehash
from tests.support.cluster import NodeFactory

REGION = "us-east-1"
T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
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


def _task(pool: Pool, clock: _Clock, *, close_after_s: float = 3600.0) -> digests.DigestTask:
    return digests.DigestTask(pool, REGION, KEY, interval_s=5.0, close_after_s=close_after_s, clock=clock)


async def _report(con: Conn) -> Report:
    report = Report(REGION)
    await check_digests(con, report, [KEY.public_bytes()], grace_s=60.0)
    return report


async def test_a_digest_signs_every_writers_head_and_links_to_the_one_before(pool: Pool) -> None:
    clock = _Clock(T0)
    task = _task(pool, clock)
    a, b, idle = Chain(REGION), Chain(REGION), Chain(REGION)
    async with pool.acquire() as con:
        for c in (a, b, idle):
            await c.register(con)
        await a.write(con, 3, when=T0)
        await b.write(con, 1, when=T0)
    first = await task.round()
    assert first is not None and first.seq == 1 and first.prev_hash is None
    assert {(h.writer_id, h.seq, h.hash) for h in first.heads} == {
        (a.writer_id, 3, a.head), (b.writer_id, 1, b.head), (idle.writer_id, 0, idle.genesis)}
    assert await task.round() is None  # nothing moved: nothing signed
    async with pool.acquire() as con:
        await b.write(con, 2, when=T0)
    clock.t = T0 + dt.timedelta(seconds=5)
    second = await task.round()
    assert second is not None and second.seq == 2
    async with pool.acquire() as con:
        rows = [r async for r in store.digests(con, REGION)]
        assert [r.seq for r in rows] == [1, 2]
        assert second.prev_hash == digests.digest_hash(rows[0].message)
        assert digests.decode(rows[1].message) == second
        assert digests.signature_valid([KEY.public_bytes()], rows[1].message, rows[1].signature)
        report = await _report(con)
    assert report.ok, report.findings
    assert report.digests_checked == 2
    whole = await verify_region(pool, REGION, trusted_keys=[KEY.public_bytes()])  # what regiond audit verify runs
    assert whole.ok and whole.digests_checked == 2 and whole.segments_checked == 6, [f.line() for f in whole.findings]


async def test_a_writer_gone_is_closed_by_the_next_digest_with_its_final_head(pool: Pool) -> None:
    clock = _Clock(T0)
    gone, alive = Chain(REGION), Chain(REGION)
    async with pool.acquire() as con:
        for c in (gone, alive):
            await c.register(con)
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        await gone.write(con, 2, when=old)
        await alive.write(con, 1, when=dt.datetime.now(dt.UTC))
        await con.execute("UPDATE audit_writers SET alive_at = $2 WHERE writer_id = $1", gone.writer_id, old)
    d = await _task(pool, clock, close_after_s=60.0).round()
    assert d is not None
    assert d.head(gone.writer_id) == digests.Head(gone.writer_id, 2, gone.head, closed=True)
    assert d.head(alive.writer_id) == digests.Head(alive.writer_id, 1, alive.head, closed=False)
    async with pool.acquire() as con:
        assert not await store.renew_writer(con, gone.writer_id)  # closed: it must not write again
        assert await store.renew_writer(con, alive.writer_id)
        await alive.write(con, 1, when=dt.datetime.now(dt.UTC))
    clock.t = T0 + dt.timedelta(seconds=5)
    after = await _task(pool, clock, close_after_s=60.0).round()
    assert after is not None and after.head(gone.writer_id) is None and after.head(alive.writer_id) is not None
    async with pool.acquire() as con:
        assert (await _report(con)).ok
        # A segment of the closed writer stored after its closing.
        await audit_segments.insert_segment(con, gone.next([b'{"eventID":"x","eventTime":"t"}'], old))
        kinds = [f.kind for f in (await _report(con)).findings]
    assert kinds == ["written-after-close"]


async def test_a_writer_whose_process_still_runs_is_not_closed_whatever_its_lease(
    pool: Pool, database_url: str
) -> None:
    """Every worker holds its leadership session while it runs: that keeps its writer open even if the
    writer never renewed its lease; once the session is gone, the writer is closed."""
    clock = _Clock(T0)
    w = Chain(REGION)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    async with pool.acquire() as con:
        await w.register(con, node=socket.gethostname(), pid=os.getpid())
        await w.write(con, 1, when=old)
        await con.execute("UPDATE audit_writers SET alive_at = $2 WHERE writer_id = $1", w.writer_id, old)
    session = SessionLocks(database_url, holder_name(REGION))  # what this process's Leadership holds
    await session.connect(10.0)
    try:
        d = await _task(pool, clock, close_after_s=60.0).round()
        assert d is not None and d.head(w.writer_id) == digests.Head(w.writer_id, 1, w.head, closed=False)
    finally:
        await session.close()
    async with pool.acquire() as con:
        await w.write(con, 1, when=old)
    clock.t += dt.timedelta(seconds=5)
    d = await _task(pool, clock, close_after_s=60.0).round()
    assert d is not None and d.head(w.writer_id) == digests.Head(w.writer_id, 2, w.head, closed=True)


async def test_a_writer_writes_under_its_lease_and_a_retired_one_is_closed_at_once(pool: Pool) -> None:
    clock, ticks = _Clock(T0), [100.0]
    w = Chain(REGION)
    async with pool.acquire() as con:
        await w.register(con)
    lease = WriterLease(pool, w.writer_id, close_after_s=60.0, monotonic=lambda: ticks[0])
    assert lease.valid()
    ticks[0] += 30.0  # half of close_after_s without a renewal: the writer must stop writing
    assert not lease.valid()
    assert await lease.renew() and lease.valid()
    async with pool.acquire() as con:
        await w.write(con, 1, when=dt.datetime.now(dt.UTC))
    first = await _task(pool, clock, close_after_s=60.0).round()
    assert first is not None and first.head(w.writer_id) == digests.Head(w.writer_id, 1, w.head)
    await lease.retire()  # a clean stop, just after a segment: closed by the next digest all the same
    assert not lease.valid()
    clock.t += dt.timedelta(seconds=5)
    second = await _task(pool, clock, close_after_s=60.0).round()
    assert second is not None and second.head(w.writer_id) == digests.Head(w.writer_id, 1, w.head, closed=True)
    assert not await lease.renew() and lease.closed and not lease.valid()
    async with pool.acquire() as con:  # closed where its head stood: a segment after it is found
        await audit_segments.insert_segment(con, w.next([b'{"eventID":"x","eventTime":"t"}'], T0))
        assert [f.kind for f in (await _report(con)).findings] == ["written-after-close"]


async def test_the_task_refuses_to_sign_over_a_cut_chain(pool: Pool) -> None:
    clock = _Clock(T0)
    a = Chain(REGION)
    async with pool.acquire() as con:
        await a.register(con)
        await a.write(con, 3, when=T0)
    assert await _task(pool, clock).round() is not None
    async with pool.acquire() as con:
        await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq = 3", a.writer_id)
    clock.t = T0 + dt.timedelta(seconds=5)
    refused = digests.AUDIT_DIGESTS_REFUSED._value.get()
    assert await _task(pool, clock).round() is None
    assert digests.AUDIT_DIGESTS_REFUSED._value.get() == refused + 1
    async with pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM audit_digests_v2") == 1


async def test_a_rollback_is_found_by_the_anchors_and_never_signed_over(pool: Pool, tmp_path: Path) -> None:
    clock = _Clock(T0)
    path = tmp_path / V2_ANCHOR_FILE_NAME
    task = digests.DigestTask(pool, REGION, KEY, interval_s=5.0, close_after_s=3600.0, clock=clock, anchor_path=path)
    w = Chain(REGION)
    async with pool.acquire() as con:
        await w.register(con)
        for _ in range(2):
            await w.write(con, 1, when=T0)
            assert await task.round() is not None
            clock.t += dt.timedelta(seconds=5)
    held = read_anchor_file(path)
    assert [a.position for a in held.anchors] == [1, 2] and not held.bad_lines
    anchors = [AnchorSet("the anchor file", held.anchors)]
    whole = await verify_region(pool, REGION, trusted_keys=[KEY.public_bytes()], anchors=anchors)
    assert whole.ok and whole.anchors_checked == 2, [f.line() for f in whole.findings]
    async with pool.acquire() as con:  # the newest segment and digest removed: what is left is all genuine
        await con.execute("DELETE FROM audit_segments WHERE seq = 2")
        await con.execute("DELETE FROM audit_digests_v2 WHERE seq = 2")
        assert (await _report(con)).ok  # nothing inside the database can tell
    found = await verify_region(pool, REGION, trusted_keys=[KEY.public_bytes()], anchors=anchors)
    assert [f.kind for f in found.findings] == ["rolled-back"] and "v2 digest 2" in found.findings[0].detail
    w.segments.pop()
    async with pool.acquire() as con:
        await w.write(con, 1, when=T0)  # the trail goes on from the rolled-back state
    assert await task.round() is None  # and the task will not sign it into looking whole
    async with pool.acquire() as con:
        assert await con.fetchval("SELECT max(seq) FROM audit_digests_v2") == 1


async def test_a_node_signs_digests_with_its_identity_key_and_anchors_them(nodes: NodeFactory) -> None:
    """The wiring: the leader of the region's audit-digests task, the state dir's key and anchor file."""
    node = await nodes.start(audit_digest_interval_s=0.2)
    w = Chain(node.region)
    pool = await create_pool(node.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as con:
            await w.register(con)
            await w.write(con, 2, when=dt.datetime.now(dt.UTC))
            for _ in range(200):  # the leader takes the lock within a poll, then signs within an interval
                row = await con.fetchrow("SELECT message, public_key FROM audit_digests_v2 ORDER BY seq DESC LIMIT 1")
                if row is not None:
                    break
                await asyncio.sleep(0.1)
        assert row is not None, "no digest was signed"
        public = statedir.identity_public_key(node.state_dir)
        assert bytes(row["public_key"]) == public
        assert digests.decode(row["message"]).head(w.writer_id) == digests.Head(w.writer_id, 2, w.head)
        anchored = read_anchor_file(node.state_dir / V2_ANCHOR_FILE_NAME).anchors
        assert anchored and anchored[-1].message == bytes(row["message"])
        report = await verify_region(pool, node.region, trusted_keys=[public],
                                     anchors=[AnchorSet("the node's anchor file", anchored)])  # fmt: skip
    finally:
        await pool.close()
    assert report.ok and report.anchors_checked >= 1, [f.line() for f in report.findings]


# --- verify: each tampering, on one trail, each undone before the next --------------------------

Tamper = Callable[[Conn, dict[str, Chain]], Awaitable[None]]


async def _replace(con: Conn, segments: list[audit_segments.NewSegment]) -> None:
    for s in segments:
        await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq = $2", s.writer_id, s.seq)
        await audit_segments.insert_segment(con, s)


async def _changed_and_rehashed(con: Conn, chains: dict[str, Chain]) -> None:
    a = chains["a"]
    forged = replace(a.segments[1], body=edited(a.segments[1].body, b'"Encrypt"', b'"Decrypt"'))
    await _replace(con, rehash([forged, *a.segments[2:]]))


async def _swapped_and_rehashed(con: Conn, chains: dict[str, Chain]) -> None:
    a = chains["a"]
    s1, s2 = a.segments[0], a.segments[1]
    await _replace(con, rehash([replace(s2, seq=1, prev_hash=s1.prev_hash), replace(s1, seq=2), *a.segments[2:]]))


async def _inserted_and_rehashed(con: Conn, chains: dict[str, Chain]) -> None:
    a = chains["a"]
    await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq >= 2", a.writer_id)
    extra = replace(a.segments[1], prev_hash=a.segments[0].hash)
    for s in rehash([extra, *(replace(s, seq=s.seq + 1) for s in a.segments[1:])]):
        await audit_segments.insert_segment(con, s)


async def _segment_deleted(con: Conn, chains: dict[str, Chain]) -> None:
    await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq = 2", chains["a"].writer_id)


async def _tail_truncated(con: Conn, chains: dict[str, Chain]) -> None:
    await con.execute("DELETE FROM audit_segments WHERE writer_id = $1 AND seq >= 3", chains["a"].writer_id)


async def _writer_deleted(con: Conn, chains: dict[str, Chain]) -> None:
    b = chains["b"].writer_id
    await con.execute("DELETE FROM audit_segments WHERE writer_id = $1", b)
    await con.execute("DELETE FROM audit_writers WHERE writer_id = $1", b)


async def _unknown_writer(con: Conn, chains: dict[str, Chain]) -> None:
    stranger = Chain(REGION)
    for _ in range(2):  # no digest knows it, and its events are older than the newest digest
        await audit_segments.insert_segment(con, stranger.next([b'{"eventID":"x","eventTime":"t"}'], T0))


async def _digest_edited(con: Conn, chains: dict[str, Chain]) -> None:
    row = await con.fetchrow("SELECT message FROM audit_digests_v2 WHERE seq = 2")
    assert row is not None
    d = digests.decode(row["message"])
    heads = tuple(digests.Head(h.writer_id, max(1, h.seq - 1), h.hash) for h in d.heads)
    forged = digests.Digest(d.region, d.seq, d.digest_time, d.prev_hash, heads).message()
    await con.execute("UPDATE audit_digests_v2 SET message = $1 WHERE seq = 2", forged)


async def _digest_resigned_by_another_key(con: Conn, chains: dict[str, Chain]) -> None:
    row = await con.fetchrow("SELECT message FROM audit_digests_v2 WHERE seq = 3")
    assert row is not None
    other = RegionIdentityKey.generate()
    await con.execute("UPDATE audit_digests_v2 SET signature = $1, public_key = $2 WHERE seq = 3",
                      other.sign(row["message"]), other.public_bytes())  # fmt: skip


async def _digest_removed(con: Conn, chains: dict[str, Chain]) -> None:
    await con.execute("DELETE FROM audit_digests_v2 WHERE seq = 2")


async def _digest_column_changed(con: Conn, chains: dict[str, Chain]) -> None:
    await con.execute("UPDATE audit_digests_v2 SET digest_time = digest_time - interval '1 day' WHERE seq = 1")


async def _writer_dropped_by_a_digest(con: Conn, chains: dict[str, Chain]) -> None:
    """A digest, validly signed, that leaves out an open writer (a faulty or coerced signer)."""
    row = await con.fetchrow("SELECT message FROM audit_digests_v2 ORDER BY seq DESC LIMIT 1")
    assert row is not None
    last = digests.decode(row["message"])
    kept = tuple(h for h in last.heads if h.writer_id != chains["b"].writer_id)
    d = digests.Digest(REGION, last.seq + 1, last.digest_time + dt.timedelta(seconds=5),
                       digests.digest_hash(row["message"]), kept)  # fmt: skip
    message = d.message()
    await store.add_digest(con, store.DigestRow(REGION, d.seq, d.digest_time, d.prev_hash, len(kept), [],
                                                KEY.public_bytes(), message, KEY.sign(message)))  # fmt: skip


CASES: list[tuple[str, Tamper, str]] = [
    ("a changed event, its chain re-hashed", _changed_and_rehashed, "digest-mismatch"),
    ("two segments swapped, re-hashed", _swapped_and_rehashed, "digest-mismatch"),
    ("a segment inserted, re-hashed", _inserted_and_rehashed, "digest-mismatch"),
    ("a segment deleted", _segment_deleted, "segment-deleted"),
    ("a writer's tail cut", _tail_truncated, "truncated"),
    ("a writer's whole chain deleted", _writer_deleted, "writer-deleted"),
    ("segments of a writer no digest knows", _unknown_writer, "writer-undigested"),
    ("a digest's heads edited", _digest_edited, "digest-forged"),
    ("a digest signed with another key", _digest_resigned_by_another_key, "digest-forged"),
    ("a digest removed", _digest_removed, "digest-missing"),
    ("a digest's column changed", _digest_column_changed, "digest-column-changed"),
    ("a writer dropped by a later digest", _writer_dropped_by_a_digest, "writer-dropped"),
]


class _Undo(Exception):
    pass


async def test_verify_finds_what_only_the_digests_show(pool: Pool) -> None:
    clock = _Clock(T0 + dt.timedelta(minutes=5))
    task = _task(pool, clock)
    chains = {"a": Chain(REGION), "b": Chain(REGION)}
    async with pool.acquire() as con:
        for c in chains.values():
            await c.register(con)
        for step in range(3):  # three digests: heads a 2/3/4 (after the first round), b 1/2/2
            await chains["a"].write(con, 2 if step == 0 else 1, when=T0)
            if step < 2:
                await chains["b"].write(con, 1, when=T0)
            assert await task.round() is not None
            clock.t += dt.timedelta(seconds=5)
        assert (await _report(con)).ok
        for name, tamper, kind in CASES:
            try:
                async with con.transaction():
                    await tamper(con, chains)
                    found = (await _report(con)).findings
                    raise _Undo
            except _Undo:
                pass
            assert kind in {f.kind for f in found}, (name, [f.line() for f in found])
            assert all(f.detail for f in found)
        assert (await _report(con)).ok  # every tampering was undone


def test_a_digest_message_round_trips_and_refuses_other_forms() -> None:
    w = uuid.uuid4()
    genesis = segment.writer_genesis(REGION, w)
    heads = (digests.Head(w, 3, b"\x02" * 32, closed=True), digests.Head(uuid.uuid4(), 0, genesis))
    d = digests.Digest(REGION, 7, T0, b"\x01" * 32, heads)
    in_order = tuple(sorted(heads, key=lambda h: h.writer_id.bytes))
    assert digests.decode(d.message()) == replace(d, heads=in_order)
    for bad in (d.message().replace(b'"seq":7', b'"seq":"7"'), d.message() + b" ", b"regionkms.audit.digest.v1\x00{}",
                d.message().replace(b'"closed":true', b'"closed":1')):  # fmt: skip
        with pytest.raises(digests.DigestFormatError):
            digests.decode(bad)
