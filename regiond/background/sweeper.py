"""The deletion sweeper: destroys keys whose scheduled deletion date has passed.

One sweep runs in one transaction holding a transaction-level advisory lock
(``pg_try_advisory_xact_lock``), so however many nodes and workers a region runs, one sweeps at
a time and the others skip that round. Rows are also taken ``FOR UPDATE SKIP LOCKED`` so a
concurrent CancelKeyDeletion either wins (the key leaves PendingDeletion and is not due) or
waits for the sweep. The state machine (``KeyEvent.DESTROY``) confirms each key is still
PendingDeletion; the store then deletes the key row, which cascades to its wrapped backing
versions, aliases and tags. After commit no node can decrypt any blob of the key: the NOTIFY
trigger drops every cached copy, and this process's cache is told directly.

Time comes from the injectable clock: tests move a ``ManualClock`` and call ``run_once(now)``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import structlog

from regiond.background.periodic import run_periodically
from regiond.clock import Clock
from regiond.domain.key import KeyEvent, apply
from regiond.store import keys as key_store
from regiond.store import locks
from regiond.store.locks import LockId
from regiond.store.outbox import Outbox
from regiond.store.pool import Pool, transaction

log = structlog.get_logger(__name__)

__all__ = ["DeletionSweeper"]

DEFAULT_INTERVAL_S = 60.0
BATCH = 100


class DeletionSweeper:
    def __init__(
        self, pool: Pool, clock: Clock, *, interval_s: float = DEFAULT_INTERVAL_S,
        on_destroyed: Callable[[str], None] | None = None, outbox: Outbox | None = None,
    ) -> None:  # fmt: skip
        self._outbox = outbox
        self._pool = pool
        self._clock = clock
        self._interval_s = interval_s
        self._on_destroyed = on_destroyed

    async def run_once(self, now: dt.datetime) -> list[str]:
        """Destroy every key due at ``now``; returns their ids ([] if another sweeper holds the lock)."""
        destroyed: list[str] = []
        while True:
            batch = await self._sweep_batch(now)
            destroyed.extend(batch)
            if len(batch) < BATCH:
                return destroyed

    async def _sweep_batch(self, now: dt.datetime) -> list[str]:
        done: list[str] = []
        async with transaction(self._pool) as con:
            if not await locks.try_lock_xact(con, LockId.DELETION_SWEEPER):
                return done
            for record in await key_store.due_for_deletion(con, now, limit=BATCH):
                apply(record.key, KeyEvent.DESTROY)  # raises unless still PendingDeletion
                if self._outbox is not None and record.key.multi_region:
                    # The other regions of a multi-Region key drop this one from ReplicaKeys.
                    await self._outbox.key_destroyed(con, record.key.key_id)
                await key_store.delete_key(con, record.key.key_id)
                done.append(record.key.key_id)
        for key_id in done:
            log.info("key.destroyed", key_id=key_id)
            if self._on_destroyed is not None:
                self._on_destroyed(key_id)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set; a failed round is logged and retried."""
        await run_periodically("sweeper", self.run_once, clock=self._clock, interval_s=self._interval_s, stop=stop)
