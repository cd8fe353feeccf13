"""The per-process TTL cache: expiry, LRU eviction, and race-free invalidation."""

from __future__ import annotations

from regiond.cache import TtlCache, remember


def test_entries_expire_after_the_ttl() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, ttl_jitter=0.0, clock=lambda: now[0])
    cache.put("a", 1)
    now[0] = 9.9
    assert cache.get("a") == 1
    now[0] = 10.1
    assert cache.get("a") is None


def test_entries_loaded_together_expire_spread_over_the_last_fifth_of_the_ttl() -> None:
    now = [0.0]
    cache: TtlCache[int, int] = TtlCache(ttl_s=100, ttl_jitter=0.2, clock=lambda: now[0])
    for n in range(1000):
        cache.put(n, n)
    now[0] = 79.9
    assert all(cache.get(n) == n for n in range(1000))
    now[0] = 90.0
    alive = sum(cache.get(n) is not None for n in range(1000))
    assert 0 < alive < 1000  # some expired, some not: not one reload storm
    now[0] = 100.1
    assert all(cache.get(n) is None for n in range(1000))


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


def test_a_memo_is_emptied_when_full_then_keeps_the_new_value() -> None:
    memo: dict[str, int] = {}
    assert remember(memo, "a", 1, max_entries=2) == 1
    remember(memo, "b", 2, max_entries=2)
    assert memo == {"a": 1, "b": 2}
    assert remember(memo, "c", 3, max_entries=2) == 3
    assert memo == {"c": 3}
