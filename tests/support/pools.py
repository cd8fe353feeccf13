"""Counting what a test's code takes from a connection pool: "no database round trip" made checkable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg.pool
import pytest

from regiond.store.pool import Pool


@contextmanager
def counting_acquires(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count connections taken from ``pool`` while the block runs; every query of the app takes one."""
    counter = [0]
    original = asyncpg.pool.Pool.acquire

    def acquire(self: asyncpg.pool.Pool, *args: Any, **kwargs: Any) -> Any:
        if self is pool:
            counter[0] += 1
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(asyncpg.pool.Pool, "acquire", acquire)
        yield counter
