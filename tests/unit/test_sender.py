"""replication.sender: the backoff between failed exchanges."""

from __future__ import annotations

import pytest

from replication.sender import MIN_DELAY_S, Backoff


def test_backoff_ceiling_doubles_then_caps() -> None:
    top = Backoff(base_s=0.1, cap_s=2.0, rand=lambda: 1.0)
    assert [top.delay(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert top.delay(10_000) == 2.0  # no overflow for a long outage


def test_backoff_is_full_jitter_with_a_floor() -> None:
    assert Backoff(base_s=0.1, cap_s=2.0, rand=lambda: 0.5).delay(3) == pytest.approx(0.4)
    assert Backoff(base_s=0.1, cap_s=2.0, rand=lambda: 0.0).delay(3) == MIN_DELAY_S
