"""Time, injectable: the service never calls ``datetime.now`` directly.

Tests move time with ``ManualClock.advance`` to drive deletion windows, rotation
schedules and import expiry without sleeping.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """Real time plus an offset that tests can advance (so SigV4 skew checks still pass)."""

    def __init__(self, offset: dt.timedelta = dt.timedelta()) -> None:
        self.offset = offset

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta
