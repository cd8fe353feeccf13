"""regiond.heap: freezing is off unless a serving worker turns it on, and then exempts live objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from regiond import heap


@pytest.fixture
def restore_heap() -> Iterator[None]:
    enabled = heap._enabled
    yield
    heap._enabled = enabled
    gc.unfreeze()


def test_freezing_is_off_in_a_process_that_did_not_enable_it(restore_heap: None) -> None:
    heap._enabled = False
    before = gc.get_freeze_count()
    assert heap.freeze_long_lived() == 0
    assert gc.get_freeze_count() == before


def _in_oldest_generation(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


def test_an_enabled_worker_freezes_what_is_alive(restore_heap: None) -> None:
    heap.enable()
    cached = [[i] for i in range(1000)]  # stand-ins for cache entries (lists: always tracked)
    gc.collect()
    assert _in_oldest_generation(cached[0])  # what a full collection walks
    frozen = heap.freeze_long_lived()
    assert frozen >= len(cached)
    assert frozen == gc.get_freeze_count()
    assert not _in_oldest_generation(cached[0])  # frozen: full collections skip it
