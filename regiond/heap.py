"""Keeping CPython's cyclic garbage collector off the caches' objects.

A worker's caches hold a handful of objects per key (the key, its unwrapped versions, its grants;
parsed policies are shared). CPython's full collection walks every object it tracks: with 100,000
keys preloaded that was ~690,000 objects and 0.3 s during which the worker answers nothing
(measured before keys shared their parsed policies: ``gc.collect(2)`` after a preload of 100,000
keys took 290-320 ms on the benchmark machine). A full collection runs whenever the objects that
survived younger collections have grown by a quarter since the last one, which cache entries
reloaded over time (TTL, NOTIFY) do.

So once a preload pass has filled the caches, a serving worker moves every object that exists at
that moment to the permanent generation (``gc.freeze``), which collections skip (measured: the
same full collection then takes well under a millisecond). Frozen objects are still freed by
reference counting when the caches drop them (cache entries hold no reference cycles), so a later
"drop everything" frees the old entries and the next complete pass freezes the new ones. What
frozen objects does not return is cyclic garbage that happens to exist at that instant (objects of
requests in flight): a bounded amount, once per pass.

Only worker processes started by ``regiond serve`` do this (``enable``): tests and tools that build
the application in their own process keep their collector as it was.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)

_enabled = False


def enable() -> None:
    """Let ``freeze_long_lived`` act in this process (a serving worker)."""
    global _enabled
    _enabled = True


def freeze_long_lived() -> int:
    """Exempt every object alive now from cyclic collections; how many are frozen in all (0: off)."""
    if not _enabled:
        return 0
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap.frozen", objects=frozen)
    return frozen
