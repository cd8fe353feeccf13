"""regiond.background.leadership over a real PostgreSQL: one runner per task, failover when its session ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from regiond.background.leadership import Leadership
from regiond.store.locks import LEADER_LOCKS, SessionLocks
from tests.support.regions import wait_until

TASKS = tuple(LEADER_LOCKS)
POLL_S = 0.1


class Contender:
    """One process's Leadership with a task per lock that counts how many of it run at once."""

    def __init__(self, url: str, name: str, running: dict[str, set[str]]) -> None:
        self.name = name
        self.leadership = Leadership(
            url, region="us-east-1", poll_s=POLL_S, session=lambda: SessionLocks(url, f"test leader {name}")
        )
        self.started: dict[str, int] = dict.fromkeys(TASKS, 0)
        self.stop = asyncio.Event()
        self._running = running
        for task in TASKS:
            self.leadership.add(task, self._work(task))
        self.task: asyncio.Task[None] | None = None

    def _work(self, task: str):  # type: ignore[no-untyped-def]
        async def work(stop: asyncio.Event) -> None:
            self.started[task] += 1
            self._running[task].add(self.name)
            try:
                await stop.wait()
            finally:
                self._running[task].discard(self.name)

        return work

    def start(self) -> None:
        self.task = asyncio.create_task(self.leadership.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def running() -> AsyncIterator[dict[str, set[str]]]:
    yield {task: set() for task in TASKS}


async def _holders(url: str) -> dict[int, str]:
    """Which session holds each leader lock (pg_locks), by lock id: the application_name."""
    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch(
            "SELECT (l.classid::bigint << 32) | l.objid::bigint AS id, a.application_name FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        )
    finally:
        await con.close()
    return {int(r["id"]): str(r["application_name"]) for r in rows}


async def test_one_runner_per_task_and_failover_when_the_session_ends(
    database_url: str, running: dict[str, set[str]]
) -> None:
    a = Contender(database_url, "a", running)
    b = Contender(database_url, "b", running)
    a.start()
    try:
        await wait_until(lambda: _async(a.leadership.leading == set(TASKS)), what="a to lead every task")
        b.start()
        # b polls many times and never gets a lock while a's session lives.
        await wait_until(lambda: _connected(database_url, "test leader b"), what="b to contend")
        for _ in range(5):
            await asyncio.sleep(POLL_S)
            assert b.leadership.leading == frozenset()
            assert all(names == {"a"} for names in running.values())
        holders = await _holders(database_url)
        assert {holders[int(LEADER_LOCKS[t])] for t in TASKS} == {"test leader a"}

        # a's session ends under it (what the server does when a's process dies): b takes over,
        # and a, on its next ping, stops its tasks.
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'test leader a'"
            )
        finally:
            await admin.close()
        await wait_until(lambda: _async(b.leadership.leading == set(TASKS)), what="b to take every task")
        await wait_until(lambda: _async(all(names == {"b"} for names in running.values())), what="a to stop")
        assert all(b.started[t] == 1 for t in TASKS)
        # a reconnects and contends again, but b holds everything.
        await asyncio.sleep(POLL_S * 5)
        assert a.leadership.leading == frozenset()
    finally:
        await a.close()
        await b.close()
    assert all(not names for names in running.values())


async def test_a_stopped_leader_lets_go_and_a_task_that_ends_is_contended_again(database_url: str) -> None:
    ended = asyncio.Event()
    runs = []

    async def short(stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            ended.set()
            raise RuntimeError("a task that dies is logged and its lock released")
        await stop.wait()

    leadership = Leadership(database_url, region="us-east-1", poll_s=POLL_S)
    leadership.add("deletion-sweeper", short)
    with pytest.raises(ValueError, match="twice"):
        leadership.add("deletion-sweeper", short)
    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(stop))
    try:
        await wait_until(lambda: _async(len(runs) >= 2), what="the task to run again after it died")
        assert leadership.leading == {"deletion-sweeper"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert leadership.leading == frozenset()
    assert int(LEADER_LOCKS["deletion-sweeper"]) not in await _holders(database_url)


async def test_an_unreachable_database_is_retried_without_running_anything() -> None:
    started = []

    async def work(stop: asyncio.Event) -> None:
        started.append(1)

    leadership = Leadership("postgresql://nobody@127.0.0.1:1/none", region="us-east-1", poll_s=POLL_S)
    leadership.add("rotation-scheduler", work)
    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(stop))
    await asyncio.sleep(POLL_S * 5)
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, 30)
    assert task.done() and started == []


async def _connected(url: str, name: str) -> bool:
    con = await asyncpg.connect(url)
    try:
        return bool(await con.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))
    finally:
        await con.close()


async def _async(value: bool) -> bool:
    return value
