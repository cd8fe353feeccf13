"""The per-process TTL cache: expiry, LRU eviction, and race-free invalidation."""

from __future__ import annotations

from regiond.cache import TtlCache


def test_entries_expire_after_the_ttl() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, clock=lambda: now[0])
    cache.put("a", 1)
    now[0] = 9.9
    assert cache.get("a") == 1
    now[0] = 10.1
    assert cache.get("a") is None


def test_a_full_cache_evicts_the_least_recently_used() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60, max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert cache.get("a") == 1 and cache.get("b") is None and cache.get("c") == 3


def test_a_value_loaded_before_an_invalidation_is_not_stored_after_it() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60)
    generation = cache.generation
    cache.invalidate("a")  # a change notification arrives while the old value was being loaded
    cache.put("a", 1, generation=generation)
    assert cache.get("a") is None
