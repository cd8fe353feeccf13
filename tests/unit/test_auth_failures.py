"""The failed-authentication throttle and the bounded metric labels (issue 13, finding 10)."""

from __future__ import annotations

from regiond.auth.failures import FailureThrottle, KeyLabels, source_bucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_source_is_throttled_after_its_burst_and_recovers_at_the_refill_rate() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(burst=3, refill_per_s=0.5, clock=clock)
    emptied = [throttle.failed("192.0.2.1") for _ in range(3)]
    assert emptied == [False, False, True]  # the third failure empties the bucket, once
    assert throttle.exhausted("192.0.2.1")
    assert not throttle.exhausted("192.0.2.2")  # other sources are unaffected
    clock.now += 1.9  # < 2 s: not a whole failure given back yet
    assert throttle.exhausted("192.0.2.1")
    clock.now += 0.2
    assert not throttle.exhausted("192.0.2.1")
    throttle.failed("192.0.2.1")
    assert throttle.exhausted("192.0.2.1")


def test_a_refilled_source_is_forgotten() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(burst=2, refill_per_s=1.0, clock=clock)
    throttle.failed("192.0.2.1")
    assert len(throttle) == 1
    clock.now += 10
    assert not throttle.exhausted("192.0.2.1")
    assert len(throttle) == 0


def test_memory_is_bounded_whatever_the_number_of_sources() -> None:
    throttle = FailureThrottle(burst=1, refill_per_s=0.001, max_sources=100, clock=FakeClock())
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) == 100
    assert throttle.exhausted("10.0.39.15")  # the newest are kept (9999 = 39 * 256 + 15)


def test_burst_zero_turns_the_throttle_off() -> None:
    throttle = FailureThrottle(burst=0, refill_per_s=0.0, clock=FakeClock())
    for _ in range(100):
        assert not throttle.failed("192.0.2.1")
    assert not throttle.exhausted("192.0.2.1")
    assert len(throttle) == 0


def test_ipv6_sources_count_per_slash_64() -> None:
    throttle = FailureThrottle(burst=2, refill_per_s=0.001, clock=FakeClock())
    throttle.failed("2001:db8:1:2::1")
    throttle.failed("2001:db8:1:2:ffff::9")  # same /64: one host can hold all of it
    assert throttle.exhausted("2001:db8:1:2::77")
    assert not throttle.exhausted("2001:db8:1:3::1")
    assert source_bucket("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_bucket("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_bucket("192.0.2.7") == "192.0.2.7"
    assert source_bucket("not-an-address") == "not-an-address"


def test_key_labels_are_capped() -> None:
    labels = KeyLabels(max_labels=3)
    assert [labels.label(f"AKIA{i:016d}") for i in range(5)] == [
        "AKIA0000000000000000", "AKIA0000000000000001", "AKIA0000000000000002", "other", "other",
    ]  # fmt: skip
    assert labels.label("AKIA0000000000000001") == "AKIA0000000000000001"  # a known one keeps its label
