"""regiond.clock: the memoised UTC second text."""

from __future__ import annotations

import datetime as dt

from regiond.clock import utc_second_text


def test_second_text_is_strftime_of_the_second() -> None:
    start = dt.datetime(2026, 11, 29, 23, 59, 58, 999_999, tzinfo=dt.UTC)
    for step_ms in range(0, 3000, 250):
        when = start + dt.timedelta(milliseconds=step_ms)
        assert utc_second_text(when) == when.strftime("%Y-%m-%dT%H:%M:%SZ")
