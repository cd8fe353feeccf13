"""The benchmark report's targets and audit batch figures, computed from made-up runs (nothing is started).

Issue 15's targets must come out of a results file with their measured value, bound and verdict, and a
miss must say by how much: these tests pin that arithmetic, which results file figures feed each
target, and how the audit batch histogram scraped from ``/metrics`` (or counted in the minimal audit
server's database) becomes a run's batches.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks import audit_batches, report
from benchmarks.audit_batches import Batches
from benchmarks.report import Run

EXPOSITION = """\
# HELP regionkms_audit_batch_events Events per group-commit batch (one segment each)
# TYPE regionkms_audit_batch_events histogram
regionkms_audit_batch_events_bucket{le="1.0"} 2.0
regionkms_audit_batch_events_bucket{le="2.0"} 3.0
regionkms_audit_batch_events_bucket{le="4.0"} 3.0
regionkms_audit_batch_events_bucket{le="8.0"} 7.0
regionkms_audit_batch_events_bucket{le="16.0"} 10.0
regionkms_audit_batch_events_bucket{le="+Inf"} 10.0
regionkms_audit_batch_events_count 10.0
regionkms_audit_batch_events_sum 62.0
# HELP regionkms_requests_total Requests
# TYPE regionkms_requests_total counter
regionkms_requests_total{operation="Encrypt"} 99.0
"""


def _run(block: str, server: str, rps: float, *, c: int = 32, keys: int = 1, round_: int = 0, **extra: Any) -> Run:
    result = {"rps": rps, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": extra.pop("p99", 4.0), "max_ms": 9.0, "errors": 0}
    cpu = {"server_us_per_request": 100.0, "postgres_us_per_request": extra.pop("pg", 0.0), "other_cores": 0.0}
    return Run(block, server, "encrypt_1k", c, keys, round_, result, cpu=cpu, extra=extra)


def _target(summary: dict[str, Any], prefix: str) -> dict[str, Any]:
    (t,) = [t for t in summary["targets"] if t["name"].startswith(prefix)]
    return dict(t)


@pytest.mark.parametrize(
    ("value", "op", "bound", "met", "margin", "factor"),
    [
        (0.45, ">=", 0.6, False, -25.0, 1.33),
        (0.66, ">=", 0.6, True, 10.0, 0.91),
        (0.6, ">=", 0.6, True, 0.0, 1.0),
        (3.0, "<=", 2, False, -50.0, 1.5),
        (12.0, "<=", 15, True, 20.0, 0.8),
    ],
)
def test_a_target_says_whether_it_is_met_and_by_how_much(
    value: float, op: str, bound: float, met: bool, margin: float, factor: float
) -> None:
    t = report._target("x", value, op, bound)
    assert (t["met"], t["margin_pct"], t["factor"]) == (met, margin, factor)


def test_the_verdict_names_the_shortfall_and_the_factor_needed() -> None:
    assert report.verdict(report._target("x", 0.45, ">=", 0.6)) == "**missed** by 25 %, needs x1.33"
    assert report.verdict(report._target("x", 3.0, "<=", 2)) == "**missed** by 50 %, needs /1.50"
    assert report.verdict(report._target("x", 0.66, ">=", 0.6)) == "met (+10 %)"
    assert report.verdict(report._target("x", None, ">=", 0.6)) == "not measured"
    assert report.verdict(report._target("x", 41_000.0, "reported", 0, unit="events")) == "reported"


def test_issue_15_targets_come_from_the_headline_the_sweep_the_keys_and_the_writers() -> None:
    runs = [
        *(_run("headline", "regionkms", 3000, round_=r, pg=20.0, p99=9.0) for r in (0, 1)),
        _run("headline", "minimal", 9000, p99=3.0),
        _run("headline", "minimal", 11000, round_=1, p99=3.0),
        _run("headline", "minimal_audit", 8500),
        _run("headline", "regionkms_async", 4000),
        _run("headline", "moto", 100),
        _run("sweep", "regionkms", 7000, c=128),
        _run("sweep", "minimal", 10000, c=128),
        _run("keys_restart", "regionkms", 5000, keys=1),
        _run("keys_restart", "regionkms", 3500, keys=100_000),
        _run("keys", "regionkms", 5000, keys=1),
        _run("keys", "regionkms", 4750, keys=100_000),
    ]
    writer = {"configurations": [
        {"writers": 2, "submitters": 16, "events_per_pg_cpu_s": 50_000},
        {"writers": 4, "submitters": 16, "events_per_pg_cpu_s": 61_000},
    ]}  # fmt: skip
    s = report.summarize(runs, writer)
    assert _target(s, "minimal_audit vs minimal")["value"] == 0.85  # 8,500 over the mean of 9,000 and 11,000
    assert _target(s, "regionkms vs minimal server (b), c=32")["value"] == 0.3
    assert _target(s, "regionkms vs minimal server (b), c=128")["value"] == 0.7
    assert _target(s, "regionkms vs minimal server (b), c=128")["met"] is True
    assert _target(s, "regionkms vs moto")["value"] == 30.0
    assert _target(s, "regionkms p99")["value"] == 3.0
    pg = _target(s, "PostgreSQL CPU per audited call")
    assert (pg["value"], pg["met"], pg["target"]) == (20.0, False, "<= 15 us")
    assert _target(s, "100,000 keys vs 1 key, right after")["value"] == 0.7
    assert _target(s, "100,000 keys vs 1 key, steady")["value"] == 0.95
    writers = _target(s, "audit writer alone")
    assert (writers["value"], writers["met"]) == (61_000, None) and "4 writers" in writers["name"]
    assert s["ratios"]["regionkms_async_vs_minimal"] == 0.4  # reported, never a target's figure
    assert not [t for t in s["targets"] if "async" in t["name"]]


def test_the_targets_table_prints_value_bound_and_verdict() -> None:
    runs = [_run("headline", "regionkms", 3000, pg=20.0), _run("headline", "minimal", 10000)]
    results = {"summary": report.summarize(runs), "config": {"regiond_settings": {}}}
    table = report.markdown(results)
    assert "| regionkms vs minimal server (b), c=32 | 0.30x | >= 0.6 | **missed** by 50 %, needs x2.00 | 15 |" in table
    assert "| PostgreSQL CPU per audited call, c=32 | 20.0 us | <= 15 us | **missed** by 33 %, needs /1.33 | 15 |" in (
        table
    )
    assert "| 100,000 keys vs 1 key, steady state | — | >= 0.9 | not measured | 15 |" in table


def test_an_async_or_unaudited_main_server_is_flagged_in_the_report() -> None:
    results = {"summary": report.summarize([]), "config": {"regiond_settings": {"audit_durability": "async"}}}
    assert "not sync's" in report.markdown(results)
    results["config"] = {"audit": False}
    assert "without audit" in report.markdown(results)


def test_the_histogram_is_parsed_from_the_exposition_and_other_metrics_ignored() -> None:
    b = audit_batches.parse(EXPOSITION)
    assert (b.count, b.events) == (10.0, 62.0)
    assert b.buckets[8.0] == 7.0 and b.buckets[math.inf] == 10.0
    assert audit_batches.parse("# nothing here\n") == Batches()


def test_labelled_series_are_summed() -> None:
    lines = ["# TYPE regionkms_audit_batch_events histogram"]
    for worker in ("1", "2"):
        lines += [
            f'regionkms_audit_batch_events_bucket{{worker="{worker}",le="8.0"}} 3.0',
            f'regionkms_audit_batch_events_bucket{{worker="{worker}",le="+Inf"}} 5.0',
            f'regionkms_audit_batch_events_count{{worker="{worker}"}} 5.0',
            f'regionkms_audit_batch_events_sum{{worker="{worker}"}} 40.0',
        ]
    b = audit_batches.parse("\n".join(lines) + "\n")
    assert (b.count, b.events, b.buckets[8.0], b.buckets[math.inf]) == (10.0, 80.0, 6.0, 10.0)


def test_the_difference_of_two_scrapes_is_the_runs_batches() -> None:
    before = audit_batches.parse(EXPOSITION)
    after = Batches({1.0: 2, 2.0: 3, 4.0: 3, 8.0: 17, 16.0: 40, math.inf: 40}, 40, 462)
    run = after.minus(before)
    assert (run.count, run.events) == (30, 400)
    assert audit_batches.summary(run) == {"batches": 30, "events": 400, "mean": 13.3, "p50_le": "16", "p90_le": "16"}
    assert Batches.from_json(run.to_json()) == run


def test_exact_sizes_from_the_database_bucket_as_the_histogram_does() -> None:
    b = audit_batches.from_sizes({1: 2, 2: 1, 7: 4, 10: 3}, [1, 2, 4, 8, 16])
    assert b == audit_batches.parse(EXPOSITION)
    assert audit_batches.summary(audit_batches.from_sizes({2000: 1}, [1, 2]))["p90_le"] == "+Inf"


def test_the_writers_own_bounds_are_read_from_its_histogram() -> None:
    bounds = audit_batches.writer_bounds()
    assert bounds[0] == 1.0 and bounds[-1] == math.inf and bounds == sorted(bounds)


def test_batches_are_reported_per_block_server_and_concurrency() -> None:
    one = Batches({1.0: 1, 8.0: 4, math.inf: 4}, 4, 20).to_json()
    two = Batches({1.0: 0, 8.0: 2, 16.0: 6, math.inf: 6}, 6, 70).to_json()
    runs = [
        _run("headline", "regionkms", 1, audit_batches=one),
        _run("headline", "regionkms", 1, round_=1, audit_batches=two),
        _run("sweep", "regionkms", 1, c=128, audit_batches=two),
        _run("headline", "minimal", 1),
    ]
    groups = {(g["block"], g["concurrency"]): g for g in report.summarize(runs)["audit_batches"]}
    assert set(groups) == {("headline", 32), ("sweep", 128)}
    head = groups[("headline", 32)]
    assert (head["batches"], head["events"], head["mean"], head["p50_le"], head["p90_le"]) == (10, 90, 9.0, "8", "16")
    assert groups[("sweep", 128)]["mean"] == 11.7
