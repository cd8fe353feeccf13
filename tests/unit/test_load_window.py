"""Bulk loads store a row unless its key changed since the load's query (``LoadWindow``)."""

from __future__ import annotations

from regiond.cache import LoadWindows, TtlCache


def test_an_untouched_cache_admits_every_key() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60)
    with LoadWindows().open(cache.generation) as window:
        assert window.admits("a", cache.generation) and window.admits("b", cache.generation)


def test_a_key_invalidated_meanwhile_is_refused_and_the_others_admitted() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60)
    windows = LoadWindows()
    with windows.open(cache.generation) as window:
        cache.invalidate("a")
        windows.note("a")
        assert not window.admits("a", cache.generation)
        assert window.admits("b", cache.generation)


def test_dropping_everything_meanwhile_refuses_every_key() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60)
    windows = LoadWindows()
    with windows.open(cache.generation) as window:
        cache.invalidate()
        windows.note(None)
        assert not window.admits("b", cache.generation)


def test_an_invalidation_the_window_did_not_see_refuses_every_key() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=60)
    windows = LoadWindows()
    with windows.open(cache.generation) as window:
        cache.invalidate("a")  # not noted: the window cannot know which key changed
        assert not window.admits("b", cache.generation)


def test_a_closed_window_notes_nothing() -> None:
    windows = LoadWindows()
    with windows.open(0) as window:
        pass
    windows.note("a")
    assert window.noted == 0
