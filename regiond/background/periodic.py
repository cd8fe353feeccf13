"""The loop every background task shares: a round every interval until told to stop.

A failed round is logged and retried at the next interval (a task must never die silently);
``stop`` interrupts the wait at once, and a round in progress finishes its unit of work. With
``final_round``, one more round runs after ``stop`` (a flush that must not drop what is pending).
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
    final_round: bool = False,
) -> None:
    while not stop.is_set():
        await _round(name, round_, clock)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
    if final_round:
        await _round(name, round_, clock)


async def _round(name: str, round_: Callable[[dt.datetime], Awaitable[Any]], clock: Clock) -> None:
    try:
        await round_(clock.now())
    except Exception:
        log.exception(f"{name}.round_failed")
