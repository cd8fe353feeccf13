"""Per-process caches for the hot path.

Entries are dropped by explicit invalidation (driven by PostgreSQL LISTEN/NOTIFY, see
``regiond.store.notify``) and, as a safety net for a missed notification, after a bounded
TTL. A generation counter makes invalidation race-free: a value loaded from the database
before an invalidation is never stored after it.

Each entry's lifetime is the TTL shortened by a random fraction (up to ``ttl_jitter``): entries
loaded together (a warm-up, a restart, a bulk import) would otherwise all expire together and
reload in one storm on the request path.

A bulk load (a preload page read before it stores its rows) uses a ``LoadWindow`` instead of one
generation: it knows which keys were invalidated meanwhile, so one key's change costs that key only.

``remember`` is the other kind: a memo of a pure function's results (parsed headers, parsed key
references, audit event parts), bounded by emptying it when full, with no invalidation at all.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, max_entries: int) -> V:
    """Store ``value`` under ``key`` in a bounded memo (emptied when full: the few hot keys are back
    at once, and nothing costs a per-hit LRU update) and return it."""
    if len(memo) >= max_entries:
        memo.clear()
    memo[key] = value
    return value


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int = 100_000,
        ttl_jitter: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._jitter_s = ttl_s * ttl_jitter
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        expires, value = hit
        if expires < self._clock():
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)  # least recently used goes first when the cache is full
        return value

    def put(self, key: K, value: V, *, generation: int | None = None) -> None:
        """Store ``value``; when ``generation`` is given and stale (an invalidation happened since), skip."""
        if generation is not None and generation != self.generation:
            return
        spread = random.random()  # noqa: S311 - spreading expiries, not a secret
        lifetime = self._ttl_s - self._jitter_s * spread if self._jitter_s else self._ttl_s
        self._data[key] = (self._clock() + lifetime, value)
        if len(self._data) > self._max:
            self._data.popitem(last=False)

    def invalidate(self, key: K | None = None) -> None:
        self.generation += 1
        if key is None:
            self._data.clear()
        else:
            self._data.pop(key, None)


@dataclass(slots=True)
class LoadWindow:
    """The invalidations a cache saw while one bulk load was in flight.

    Opened before the load's query, at the cache's generation then; every invalidation of the
    cache is noted until it closes. An entry of that load may be stored only if nothing has been
    invalidated since (the plain ``TtlCache.put(..., generation=...)`` rule) or if what has been
    is known and names other keys: one key's change must not cost the rest of a 1,000-key page,
    and must never let that key's row, read before the change, be stored after it.
    """

    generation: int
    keys: set[str] = field(default_factory=set)
    everything: bool = False
    noted: int = 0

    def note(self, payload: str | None) -> None:
        self.noted += 1
        if payload is None:
            self.everything = True
        else:
            self.keys.add(payload)

    def admits(self, key_id: str, generation: int) -> bool:
        """May ``key_id``'s entry of this load be stored, the cache being at ``generation`` now?"""
        if generation == self.generation:
            return True
        if self.everything or generation - self.generation != self.noted:  # a change this window missed
            return False
        return key_id not in self.keys


class LoadWindows:
    """The open ``LoadWindow``s of one cache; its ``invalidate`` calls ``note``."""

    def __init__(self) -> None:
        self._open: list[LoadWindow] = []

    def note(self, payload: str | None) -> None:
        for window in self._open:
            window.note(payload)

    @contextlib.contextmanager
    def open(self, generation: int) -> Iterator[LoadWindow]:
        window = LoadWindow(generation)
        self._open.append(window)
        try:
            yield window
        finally:
            self._open.remove(window)
