"""Region-wide background tasks run exactly once per region, whatever the number of nodes and workers.

Every worker process of every node of a region registers the same named tasks (``add``) and runs
``Leadership.run``: one dedicated database connection (``store.locks.SessionLocks``) on which it
tries, every ``poll_s``, the session-level advisory lock of each task it does not lead
(``store.locks.LEADER_LOCKS``, one lock id per task name). The session that holds a task's lock
runs the task; every other process waits, polling. So a region runs one deletion sweeper, one
rotation scheduler and one import-expiry sweeper, spread over its processes as the locks fell.

Failover needs no election protocol: a lock is freed when its session ends. A leader process that
dies (SIGKILL, OOM) has its socket closed by its kernel, the server ends the session at once, and
the next poll of another process (within ``poll_s``) takes the lock and starts the task; a leader
whose machine vanishes is dropped by the server's TCP keepalives (``LEADER_KEEPALIVES``, ~19 s).
The leader in turn pings its session every ``poll_s``; a ping that fails or is not answered within
``PING_TIMEOUT_S`` (the database went away, a partition) stops its tasks at once, since another
process may hold the locks by then, and it reconnects and contends again.

Between a session's loss and its former leader noticing (at most one ping), two processes may run
a task. The tasks are written for that: each round still takes its own transaction-level lock
(``LockId.DELETION_SWEEPER`` ...), so two runners never overlap in a round, and a round is a unit
of work (one transaction). The leader lock is what makes the rounds happen once per interval per
region rather than once per interval per worker.

A task is ``work(stop)``: a coroutine that runs until ``stop`` is set (``run_periodically``'s
shape) and finishes its current unit of work then. One that ends by itself or raises is logged,
its lock released, and it is contended for again at the next poll (this process or another).
The supervisor (regiond.runtime.supervisor) respawns a worker that dies; its locks, freed by its
death, have usually been taken by another process by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from regiond.runtime.metrics import BACKGROUND_LEADER, BACKGROUND_LEADER_CHANGES
from regiond.store.locks import APPLICATION_NAME_CHARS, LEADER_LOCKS, LockId, SessionLocks

log = structlog.get_logger(__name__)

__all__ = ["Leadership", "Work", "holder_name", "holder_prefix"]

Work = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
DEFAULT_POLL_S = 1.0
CONNECT_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 5.0
STOP_GRACE_S = 30.0
"""How long a task told to stop may take to finish its unit of work before it is cancelled."""


def holder_name(region: str, host: str | None = None, pid: int | None = None) -> str:
    """The lock session's ``application_name``: which process of which node leads (``pg_stat_activity``).

    Every worker holds such a session for as long as it runs, so the audit digests also read it as
    "this process is alive" (``regiond.audit.digests``; ``host``/``pid``: another process's name)."""
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    return f"{holder_prefix(region)}{host[:24]} pid={pid}"[:APPLICATION_NAME_CHARS]


def holder_prefix(region: str) -> str:
    """What every lock session of ``region``'s processes is named starting with."""
    return f"regiond leader {region} "


@dataclass
class _Task:
    name: str
    lock: LockId
    work: Work
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    running: asyncio.Task[None] | None = None


class Leadership:
    def __init__(
        self, database_url: str, *, region: str, poll_s: float = DEFAULT_POLL_S,
        session: Callable[[], SessionLocks] | None = None,
    ) -> None:  # fmt: skip
        self._region = region
        self._poll_s = poll_s
        self._session = session or (lambda: SessionLocks(database_url, holder_name(region)))
        self._tasks: dict[str, _Task] = {}

    def add(self, name: str, work: Work) -> None:
        """Run ``work`` in whichever process of the region holds ``name``'s lock (``LEADER_LOCKS``)."""
        if name in self._tasks:
            raise ValueError(f"background task {name!r} is registered twice")
        self._tasks[name] = _Task(name, LEADER_LOCKS[name], work)

    @property
    def leading(self) -> frozenset[str]:
        """The tasks this process runs now."""
        return frozenset(t.name for t in self._tasks.values() if t.running is not None)

    async def run(self, stop: asyncio.Event) -> None:
        """Contend for every task's lock and run those held, until ``stop``; then stop them and let go."""
        while not stop.is_set():
            session = self._session()
            try:
                await session.connect(CONNECT_TIMEOUT_S)
                await self._hold(session, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.leading:
                    log.warning("leader.session_lost", region=self._region, tasks=sorted(self.leading),
                                error=type(exc).__name__)  # fmt: skip
                else:
                    log.warning("leader.session_failed", region=self._region, error=type(exc).__name__)
            finally:
                # Stopped before the session ends: once it has, another process may be running them.
                await self._stop_tasks(list(self._tasks.values()))
                await session.close()
            await _sleep(stop, self._poll_s)

    async def _hold(self, session: SessionLocks, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for task in self._tasks.values():
                if task.running is not None and task.running.done():
                    await self._task_ended(session, task)
                if task.running is None and await session.try_lock(task.lock, PING_TIMEOUT_S):
                    self._start(task)
            await session.ping(PING_TIMEOUT_S)
            await _sleep(stop, self._poll_s)

    def _start(self, task: _Task) -> None:
        task.stop = asyncio.Event()
        task.running = asyncio.create_task(task.work(task.stop), name=task.name)
        BACKGROUND_LEADER.labels(task.name).set(1)
        BACKGROUND_LEADER_CHANGES.labels(task.name).inc()
        log.info("leader.acquired", task=task.name, region=self._region)

    async def _task_ended(self, session: SessionLocks, task: _Task) -> None:
        """A task that returned or raised on its own: log it, let its lock go for anyone to take."""
        assert task.running is not None
        error = task.running.exception() if not task.running.cancelled() else None
        log.error("leader.task_ended", task=task.name, error=type(error).__name__ if error else None)
        task.running = None
        BACKGROUND_LEADER.labels(task.name).set(0)
        await session.unlock(task.lock, PING_TIMEOUT_S)

    async def _stop_tasks(self, tasks: list[_Task]) -> None:
        running = [t for t in tasks if t.running is not None]
        for task in running:
            task.stop.set()
        waiting = [t.running for t in running if t.running is not None]
        if waiting:
            _done, late = await asyncio.wait(waiting, timeout=STOP_GRACE_S)
            for pending in late:
                pending.cancel()
            for pending in late:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
        for task in running:
            task.running = None
            BACKGROUND_LEADER.labels(task.name).set(0)
            log.info("leader.released", task=task.name, region=self._region)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
