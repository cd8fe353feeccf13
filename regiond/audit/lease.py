"""A v2 audit writer's liveness lease: how the digest task tells a writer that is gone from one that is idle.

The digest task (``regiond.audit.digests``) closes a writer, recording its final head, once both
its lease (``audit_writers.alive_at``) and its newest segment are older than
``audit_writer_close_after_s``; a segment written after that would be reported by ``regiond audit
verify`` as written after the close. So a writer holds a lease and writes only while it is valid:

* ``run`` renews it every ``close_after_s / RENEWALS_PER_PERIOD`` (one UPDATE of the writer's row);
* ``valid()`` (a clock comparison, for the write path) is true only while the last renewal that
  succeeded is younger than half of ``close_after_s`` by this process's monotonic clock, and the
  database has not answered that the writer was closed. Half, so that a writer cut off from the
  database stops writing well before the task, on the database's clock, may close it;
* ``retire`` (at a clean shutdown, after the last segment is durable) asks the next digest to
  close the writer at once instead of after ``close_after_s``.

A writer whose lease is invalid must not write under its id again: it registers a new writer id
(a new chain) and goes on with that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import structlog

from regiond.store import audit_digests as store
from regiond.store.pool import ACQUIRE_TIMEOUT_S, Pool

__all__ = ["RENEWALS_PER_PERIOD", "WriterLease"]

log = structlog.get_logger(__name__)

RENEWALS_PER_PERIOD = 6  # renewals per close_after_s: three may fail before the lease lapses


class WriterLease:
    def __init__(
        self, pool: Pool, writer_id: uuid.UUID, *, close_after_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._writer_id = writer_id
        self._valid_s = close_after_s / 2
        self._every_s = close_after_s / RENEWALS_PER_PERIOD
        self._monotonic = monotonic
        self._renewed_at: float | None = monotonic()  # registration set alive_at = now()
        self._closed = False

    def valid(self) -> bool:
        """Whether the writer may write a segment now (see module docstring)."""
        return (not self._closed and self._renewed_at is not None
                and self._monotonic() - self._renewed_at < self._valid_s)  # fmt: skip

    @property
    def closed(self) -> bool:
        """True once the database answered that a digest closed this writer."""
        return self._closed

    async def renew(self) -> bool:
        """One renewal; ``False`` if it failed or the writer was closed (``closed`` says which)."""
        started = self._monotonic()
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
                alive = await store.renew_writer(con, self._writer_id, timeout_s=self._every_s)
        except Exception as exc:
            log.warning("audit.lease_renewal_failed", writer=str(self._writer_id), error=type(exc).__name__)
            return False
        if not alive:
            self._closed = True
            log.error("audit.writer_closed_under_it", writer=str(self._writer_id))
            return False
        self._renewed_at = started  # the renewal counts from when it was sent, not answered
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Renew until ``stop`` or until the writer is closed."""
        while not stop.is_set() and not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._every_s)
            if not stop.is_set():
                await self.renew()

    async def retire(self) -> None:
        """A clean stop: the next digest closes this writer without waiting (the lease is given up)."""
        self._renewed_at = None
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
            await store.retire_writer(con, self._writer_id)
