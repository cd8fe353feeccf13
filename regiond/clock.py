"""Time, injectable: the service never calls ``datetime.now`` directly.

Tests move time with ``ManualClock.advance`` to drive deletion windows, rotation
schedules and import expiry without sleeping. ``utc_second_text`` is the one text form of an
instant that the wire shows (CloudTrail's ``eventTime``, the ``aws:CurrentTime`` condition key).
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


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00Z")


def utc_second_text(value: dt.datetime) -> str:
    """``value`` (aware) as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC: CloudTrail's ``eventTime`` and ``aws:CurrentTime``.

    Every call needs it twice (its event and its policy conditions) and concurrent calls share
    their second, so the text of the last second seen is kept (a comparison instead of a
    ``strftime``). One tuple, replaced whole, so a reader never pairs a second with another's text.
    """
    global _last_second
    second = int(value.timestamp())
    last = _last_second
    if last[0] == second:
        return last[1]
    text = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _last_second = (second, text)
    return text
