"""The loop every background task shares (regiond.background.periodic)."""

from __future__ import annotations

import asyncio
import datetime as dt

from regiond.background.periodic import run_periodically
from regiond.clock import SystemClock


async def _rounds(*, final_round: bool, fail: bool = False) -> list[dt.datetime]:
    seen: list[dt.datetime] = []
    stop = asyncio.Event()

    async def round_(now: dt.datetime) -> None:
        seen.append(now)
        if len(seen) == 1:
            stop.set()  # told to stop during the first round: no second round by the interval
        if fail:
            raise RuntimeError("a failed round is logged, never fatal")

    await asyncio.wait_for(
        run_periodically("t", round_, clock=SystemClock(), interval_s=3600, stop=stop, final_round=final_round), 5
    )
    return seen


async def test_stop_ends_the_loop_without_another_round() -> None:
    assert len(await _rounds(final_round=False)) == 1


async def test_final_round_runs_once_more_after_stop_even_after_a_failure() -> None:
    assert len(await _rounds(final_round=True)) == 2
    assert len(await _rounds(final_round=True, fail=True)) == 2
