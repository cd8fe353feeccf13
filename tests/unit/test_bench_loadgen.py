"""The load generator's statistics: histogram percentiles, merging, and result summaries (no network)."""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.loadgen import (
    LatencyHistogram,
    _parse_head,
    read_request_file,
    result_from_histogram,
    write_request_file,
)


def _exact_percentile(values: list[int], pct: float) -> int:
    ordered = sorted(values)
    rank = max(1, -(-int(pct * len(ordered)) // 100))  # ceil(pct/100 * n)
    return ordered[rank - 1]


def test_values_below_1024_us_are_exact() -> None:
    hist = LatencyHistogram()
    for v in range(1, 1001):
        hist.record(v)
    assert hist.percentile(50) == 500
    assert hist.percentile(90) == 900
    assert hist.percentile(99) == 990
    assert hist.percentile(100) == 1000
    assert (hist.min_us, hist.max_us, hist.count) == (1, 1000, 1000)
    assert hist.mean_us == 500.5


def test_percentiles_of_large_values_never_understate_and_stay_within_0_2_percent() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.2)) for _ in range(20_000)]  # ~3 ms median, long tail
    hist = LatencyHistogram()
    for v in values:
        hist.record(v)
    for pct in (50, 90, 99, 99.9):
        exact = _exact_percentile(values, pct)
        reported = hist.percentile(pct)
        assert exact <= reported <= exact * 1.002 + 1, (pct, exact, reported)
    assert hist.percentile(100) == max(values)


def test_bucket_high_is_the_largest_value_mapping_to_the_bucket() -> None:
    for v in (0, 1, 1023, 1024, 1025, 2047, 2048, 123_456, 10_000_000):
        index = LatencyHistogram.bucket_of(v)
        high = LatencyHistogram.bucket_high(index)
        assert high >= v
        assert LatencyHistogram.bucket_of(high) == index
        assert LatencyHistogram.bucket_of(high + 1) != index


def test_merged_histograms_equal_one_histogram_of_all_values() -> None:
    rng = random.Random(3)
    a_vals = [rng.randrange(100, 50_000) for _ in range(3000)]
    b_vals = [rng.randrange(10, 900_000) for _ in range(5000)]
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for v in a_vals:
        a.record(v)
        both.record(v)
    for v in b_vals:
        b.record(v)
        both.record(v)
    a.merge(b)
    assert a.buckets == both.buckets
    assert (a.count, a.total_us, a.min_us, a.max_us) == (both.count, both.total_us, both.min_us, both.max_us)
    assert LatencyHistogram.from_json(a.to_json()).buckets == both.buckets


def test_empty_histogram_reports_zeros() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(99) == 0
    assert hist.mean_us == 0.0


def test_throughput_counts_only_successful_requests() -> None:
    hist = LatencyHistogram()
    for _ in range(1000):
        hist.record(2000)
    result = result_from_histogram("asyncio", 8, 2.0, hist, errors=100, detail={"http_400": 100})
    assert result.requests == 1000
    assert result.rps == 450.0
    assert result.p99_ms == 2.0
    assert result.to_json()["rps"] == 450.0


def test_request_file_round_trips_binary_requests(tmp_path: Path) -> None:
    requests = [b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n\x00\n1", b"", b"x" * 5000]
    path = tmp_path / "requests.bin"
    write_request_file(path, requests)
    assert read_request_file(path) == requests


def test_response_head_parsing_finds_length_and_connection_close() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: x\r\nCONTENT-LENGTH: 42\r\nConnection: close\r\n"
    assert _parse_head(head) == (42, True)
    assert _parse_head(b"HTTP/1.1 204 No Content\r\nServer: y\r\n") == (0, False)
