"""regiond.runtime.heap: freezing is off unless a serving worker turns it on, and then exempts live objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from regiond.runtime import heap


@pytest.fixture
def restore_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(heap, "_enabled", False)
    callbacks = list(gc.callbacks)
    yield
    gc.callbacks[:] = callbacks
    gc.unfreeze()


def _in_oldest_generation(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


def test_freezing_is_off_in_a_process_that_did_not_enable_it(restore_heap: None) -> None:
    before = gc.get_freeze_count()
    assert heap.freeze_long_lived() == 0
    gc.collect()
    assert gc.get_freeze_count() == before
    assert heap._after_full_collection not in gc.callbacks


def test_an_enabled_worker_freezes_what_is_alive(restore_heap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "SLOW_FULL_COLLECTION_S", 3600.0)  # only the explicit freeze here
    heap.enable()
    cached = [[i] for i in range(1000)]  # stand-ins for cache entries (lists: always tracked)
    gc.collect()
    assert _in_oldest_generation(cached[0])  # what a full collection walks
    frozen = heap.freeze_long_lived()
    assert frozen >= len(cached)
    assert frozen == gc.get_freeze_count()
    assert not _in_oldest_generation(cached[0])  # frozen: full collections skip it


def test_a_slow_full_collection_freezes_its_survivors(restore_heap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    heap.enable()
    heap.enable()  # idempotent: one hook
    assert gc.callbacks.count(heap._after_full_collection) == 1
    memo = [[i] for i in range(1000)]  # entries added after a preload's freeze
    monkeypatch.setattr(heap, "SLOW_FULL_COLLECTION_S", 3600.0)  # no collection is that slow
    gc.collect()
    assert _in_oldest_generation(memo[0])  # a fast collection freezes nothing
    before = heap.freezes_after_collections
    monkeypatch.setattr(heap, "SLOW_FULL_COLLECTION_S", -1.0)  # every full collection counts as slow
    gc.collect()
    assert heap.freezes_after_collections == before + 1
    assert not _in_oldest_generation(memo[0])  # the survivors are out of later walks
    gc.collect(1)  # younger collections never freeze
    assert heap.freezes_after_collections == before + 1
