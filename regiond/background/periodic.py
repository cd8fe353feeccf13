"""The loop every background task shares: a round every interval until told to stop.

A failed round is logged and retried at the next interval (a task must never die silently);
``stop`` interrupts the wait at once, and a round in progress finishes its unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from regiond.clock import Clock

log = structlog.get_logger(__name__)


async def run_periodically(
    name: str,
    round_: Callable[[dt.datetime], Awaitable[Any]],
    *,
    clock: Clock,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        try:
            await round_(clock.now())
        except Exception:
            log.exception(f"{name}.round_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
