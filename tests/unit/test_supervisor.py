"""The supervisor's respawn backoff (regiond.runtime.supervisor).

The process tree is tests/integration/test_supervisor.py's."""

from __future__ import annotations

import itertools

from regiond.runtime.supervisor import BACKOFF_CAP_S, BACKOFF_FIRST_S, backoff_s


def test_backoff_doubles_from_its_first_delay_to_its_cap() -> None:
    delays = [backoff_s(n) for n in range(1, 12)]
    assert delays[:4] == [BACKOFF_FIRST_S, 2 * BACKOFF_FIRST_S, 4 * BACKOFF_FIRST_S, 8 * BACKOFF_FIRST_S]
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert delays[-1] == BACKOFF_CAP_S
    assert backoff_s(10**9) == BACKOFF_CAP_S  # no overflow, however long a slot keeps dying
