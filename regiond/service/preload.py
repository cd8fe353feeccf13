"""Bulk preload of the key and grant caches, off the request path.

A worker that starts, or whose caches were emptied because its LISTEN/NOTIFY connection was
lost (``regiond.store.notify`` then calls every callback with ``None``), would otherwise read
each key from PostgreSQL on that key's first request: one query and the unwrap and policy
parse, a few hundred microseconds of CPU on the request path, per key and per worker. The
``Preloader`` instead streams the region's keys, with their wrapped versions and grants, in
keyset pages of ``PAGE_KEYS`` (``key_store.load_keys``: one statement per page, on a pooled
connection held only for that statement), and fills both caches.

- **Never stale.** Each page opens a ``LoadWindow`` on both caches before its query; an entry is
  stored only if its key was not invalidated since (by NOTIFY or by this process's own write)
  and nothing was dropped wholesale, and never over an entry already cached (a request loaded
  it meanwhile). A "drop everything" during a pass starts the pass again.
- **Bounded.** At most ``max_keys`` keys (``Settings.cache_preload_max_keys``), and never more
  than the key cache holds (``KeyCache.capacity``): every worker holds its own copy, a few KiB
  per key. ``0`` turns the preload off.
- **Polite.** It yields to the event loop every ``YIELD_EVERY_KEYS`` keys and between pages, so
  requests keep being served while it runs; readiness does not wait for it.
- **Fail-soft.** A key whose material does not unwrap or whose policy does not parse is
  skipped and counted (its id logged, never its material); the request path raises for it as
  before. A failed page ends the pass; the pass is tried again after ``RETRY_DELAY_S``.
- **Out of the collector's way.** After a complete pass a serving worker freezes its heap
  (``regiond.runtime.heap``), so that CPython's full collections no longer walk every cached object
  (long pauses with many keys otherwise: benchmarks/README.md, "Design figures").

Key state does not matter: disabled and pending-deletion keys are cached as the request path
caches them (it checks the state); multi-region primaries and replicas are rows like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog

from regiond.errors import KMSInternalException
from regiond.runtime import heap, metrics
from regiond.service.grants import GrantCache
from regiond.service.keycache import KeyCache
from regiond.store import keys as key_store
from regiond.store.pool import Pool, connection

log = structlog.get_logger(__name__)

__all__ = ["PAGE_KEYS", "PreloadResult", "Preloader"]

PAGE_KEYS = 1000
YIELD_EVERY_KEYS = 25
"""~25 keys of unwrap and policy parse is well under a millisecond of CPU between yields."""
RETRY_DELAY_S = 5.0
MAX_LOGGED_SKIPS = 10
"""Skipped keys named one by one in the log per pass; the rest are counted."""


@dataclass(slots=True)
class PreloadResult:
    """What one pass did: keys read, stored (the others were cached already, or changed while
    loading), skipped as unreadable; pages read; whether it reached the end or the cap."""

    read: int = 0
    stored: int = 0
    skipped: int = 0
    pages: int = 0
    complete: bool = False


class Preloader:
    def __init__(
        self, pool: Pool, keys: KeyCache, grants: GrantCache | None, *, max_keys: int, page_keys: int = PAGE_KEYS
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._grants = grants
        self._max_keys = min(max_keys, keys.capacity)
        self._page_keys = page_keys
        self._wanted = asyncio.Event()
        self.passes = 0  # passes finished (complete or not) and the last one's result: for tests
        self.last: PreloadResult | None = None

    @property
    def loaded(self) -> bool:
        """Whether the first pass has finished (or preloading is off): until then the node is not ready."""
        return self._max_keys <= 0 or self.passes > 0

    @property
    def pending(self) -> bool:
        """Whether a pass has been asked for and not started yet."""
        return self._wanted.is_set()

    def request(self, payload: str | None = None) -> None:
        """Listener callback on the keys channel: "drop everything" (``None``) asks for a pass.

        The listener sends it once connected, so this is also what starts the first pass.
        """
        if payload is None:
            self._wanted.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run a pass whenever one is asked for, until ``stop``; a failed pass is retried."""
        if self._max_keys <= 0:
            return
        while not stop.is_set():
            await _either(self._wanted, stop)
            if stop.is_set():
                return
            try:
                await self.preload(stop)
            except Exception as exc:
                log.warning("cache.preload_failed", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RETRY_DELAY_S)
                self._wanted.set()

    async def preload(self, stop: asyncio.Event | None = None) -> PreloadResult:
        """One pass over the key store, in key-id order, up to the cap.

        Ends early (``complete`` false) on ``stop``, or when a "drop everything" arrives, which
        also asks for a new pass (``pending``). Starting a pass answers the request pending before.
        """
        self._wanted.clear()
        result = PreloadResult()
        started = time.monotonic()
        log.info("cache.preload_started", max_keys=self._max_keys)
        after = ""
        try:
            while result.read < self._max_keys:
                if (stop is not None and stop.is_set()) or self._wanted.is_set():
                    break
                limit = min(self._page_keys, self._max_keys - result.read)
                page, dropped = await self._page(after, limit, result)
                if dropped:
                    self._wanted.set()
                    break
                if len(page) < limit:
                    result.complete = True
                    break
                after = page[-1]
                await asyncio.sleep(0)
            else:
                result.complete = True
        finally:
            self.passes += 1
            self.last = result
            log.info(
                "cache.preload_finished", read=result.read, stored=result.stored, skipped=result.skipped,
                pages=result.pages, complete=result.complete, duration_s=round(time.monotonic() - started, 3),
            )  # fmt: skip
        if result.complete:
            heap.freeze_long_lived()  # full GC collections would otherwise walk every cached object
        return result

    async def _page(self, after: str, limit: int, result: PreloadResult) -> tuple[list[str], bool]:
        """Load and store one page; its key ids, and whether everything was dropped meanwhile."""
        grant_window = self._grants.load_window() if self._grants is not None else contextlib.nullcontext(None)
        with self._keys.load_window() as key_window, grant_window as grants_window:
            async with connection(self._pool) as con:
                page = await key_store.load_keys(con, after=after, limit=limit, with_grants=self._grants is not None)
            result.pages += 1
            result.read += len(page)
            stored = 0
            for n, loaded in enumerate(page):
                if n and n % YIELD_EVERY_KEYS == 0:
                    await asyncio.sleep(0)
                if key_window.everything:
                    break
                key_id = loaded.record.key.key_id
                if self._grants is not None and grants_window is not None and loaded.grants is not None:
                    self._grants.fill(key_id, loaded.grants, grants_window)
                try:
                    stored += self._keys.fill(loaded, key_window)
                except KMSInternalException:
                    result.skipped += 1
                    if result.skipped <= MAX_LOGGED_SKIPS:
                        log.warning("cache.preload_skipped_key", key_id=key_id)
            result.stored += stored
            metrics.CACHE_PRELOADED_KEYS.inc(stored)
            return [loaded.record.key.key_id for loaded in page], key_window.everything


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Wait until ``first`` or ``second`` is set."""
    tasks = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
