"""Keeping CPython's cyclic garbage collector off long-lived objects.

A worker's caches hold a handful of objects per key (the key, its unwrapped versions, its grants;
parsed policies and, for keys that share their policy and have no grants, the authorizer's memo
entries are shared). CPython's full
collection walks every object it tracks, and it runs whenever the objects that survived younger
collections have grown by a quarter since the last one. With many keys that is hundreds of
thousands of objects and a full collection long enough to show in the p99, during which the
worker answers nothing; while caches fill (the preload, then the memo entries of keys with their
own policy or grants), such collections come often, each longer than the last (the figures are in
benchmarks/README.md, "Design figures").

A serving worker therefore moves objects that have proven long-lived to the permanent generation
(``gc.freeze``), which collections skip:

- after a complete preload pass (``freeze_long_lived``): the caches are full;
- after any full collection that took longer than ``SLOW_FULL_COLLECTION_S``: whatever survived it
  is long-lived by definition, so the next full collection walks only what is new since.

Frozen objects are still freed by reference counting when the caches drop them (cache entries hold
no reference cycles), so a "drop everything" frees the old entries. What freezing does not return
is cyclic garbage that happens to exist at that instant (objects of requests in flight): a bounded
amount, once per freeze; ``gc.get_freeze_count()`` is logged at each preload freeze.

Only worker processes started by ``regiond serve`` do this (``enable``): tests and tools that build
the application in their own process keep their collector as it was.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

SLOW_FULL_COLLECTION_S = 0.01
"""A full collection longer than this freezes its survivors (a request's whole budget is ~5 ms)."""

_enabled = False
_full_started = 0.0
freezes_after_collections = 0  # how many full collections froze their survivors: for tests and diagnosis


def enable() -> None:
    """Let this process (a serving worker) freeze long-lived objects out of the collector's walks."""
    global _enabled
    if not _enabled:
        _enabled = True
        gc.callbacks.append(_after_full_collection)


def freeze_long_lived() -> int:
    """Exempt every object alive now from cyclic collections; how many are frozen in all (0: off)."""
    if not _enabled:
        return 0
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap.frozen", objects=frozen)
    return frozen


def _after_full_collection(phase: str, info: dict[str, Any]) -> None:
    """``gc.callbacks`` hook: freeze the survivors of a slow full collection.

    It runs inside the collector, so it allocates nothing that could start another collection and
    logs nothing; ``gc.freeze`` only moves the generations' lists.
    """
    global _full_started, freezes_after_collections
    if info["generation"] != 2:
        return
    if phase == "start":
        _full_started = time.perf_counter()
    elif time.perf_counter() - _full_started > SLOW_FULL_COLLECTION_S:
        gc.freeze()
        freezes_after_collections += 1
