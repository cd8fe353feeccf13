"""The node-wide /metrics view: workers' registries merged from snapshots (regiond.runtime.node_metrics).

Each "worker" here is a registry and a NodeMetrics with its own pid over one directory, as
the processes of ``regiond serve --workers N`` are; the multi-process run is in
tests/integration/test_node_metrics.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from regiond.runtime import metrics, node_metrics
from regiond.runtime.node_metrics import NodeMetrics

MODES = {"lag": "livemostrecent", "seq": "livemax", "inflight": "livesum"}


class Worker:
    def __init__(self, directory: Path, index: int, pid: int | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("requests", "r", ["operation"], registry=self.registry)
        self.latency = Histogram("latency_seconds", "l", buckets=(0.1, 1.0), registry=self.registry)
        self.cached = Gauge("cached_keys", "per worker", registry=self.registry)
        self.lag = Gauge("lag", "one writer at a time", ["peer"], registry=self.registry)
        self.seq = Gauge("seq", "grows", registry=self.registry)
        self.inflight = Gauge("inflight", "summed", registry=self.registry)
        self.node = NodeMetrics(directory, str(index), MODES, pid=pid or 100_000 + index)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.node.render(self.registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def total(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in scrape.items() if n == name)


def test_every_worker_answers_with_the_node_totals(tmp_path: Path) -> None:
    a, b = Worker(tmp_path, 0), Worker(tmp_path, 1)
    for _ in range(3):
        a.requests.labels("Encrypt").inc()
        a.latency.observe(0.05)
    for _ in range(4):
        b.requests.labels("Encrypt").inc()
        b.latency.observe(0.5)
    b.requests.labels("Decrypt").inc()
    a.node.publish(a.registry)
    b.node.publish(b.registry)

    for scrape in (a.scrape(), b.scrape()):
        assert scrape[("requests_total", (("operation", "Encrypt"),))] == 7
        assert scrape[("requests_total", (("operation", "Decrypt"),))] == 1
        assert scrape[("latency_seconds_bucket", (("le", "0.1"),))] == 3
        assert scrape[("latency_seconds_bucket", (("le", "1.0"),))] == 7
        assert scrape[("latency_seconds_count", ())] == 7
        assert scrape[("latency_seconds_sum", ())] == pytest.approx(3 * 0.05 + 4 * 0.5)
        assert not any(name.endswith("_created") for name, _ in scrape)  # no one creation time for a sum
    # Without the merge each worker's registry shows only its own share.
    alone = {s.name: s.value for f in text_string_to_metric_families(generate_latest(a.registry).decode())
             for s in f.samples if s.labels.get("operation") == "Encrypt"}  # fmt: skip
    assert alone["requests_total"] == 3


def test_the_answering_worker_counts_its_live_registry_not_its_last_snapshot(tmp_path: Path) -> None:
    a, b = Worker(tmp_path, 0), Worker(tmp_path, 1)
    a.node.publish(a.registry)
    b.requests.labels("Encrypt").inc()
    b.node.publish(b.registry)
    a.requests.labels("Encrypt").inc(5)  # not yet published by a's timer
    assert total(a.scrape(), "requests_total") == 6
    # ...and answering published it, so b sees it too without waiting for a's next publish.
    assert total(b.scrape(), "requests_total") == 6


def test_gauges_are_combined_per_mode_and_per_worker_by_default(tmp_path: Path) -> None:
    a, b = Worker(tmp_path, 0), Worker(tmp_path, 1)
    a.cached.set(10)
    b.cached.set(20)
    a.seq.set(41)
    b.seq.set(42)
    a.inflight.set(2)
    b.inflight.set(3)
    a.lag.labels("eu-west-1").set(1000)  # a held the sender lock, then lost it...
    a.node.publish(a.registry)
    b.lag.labels("eu-west-1").set(0)  # ...and b took over later and caught up
    b.node.publish(b.registry)

    scrape = a.scrape()
    assert scrape[("cached_keys", (("worker", "0"),))] == 10
    assert scrape[("cached_keys", (("worker", "1"),))] == 20
    assert scrape[("seq", ())] == 42
    assert scrape[("inflight", ())] == 5
    assert scrape[("lag", (("peer", "eu-west-1"),))] == 0


def test_a_dead_workers_counters_stay_and_its_gauges_go(tmp_path: Path) -> None:
    a, b = Worker(tmp_path, 0), Worker(tmp_path, 1)
    a.requests.labels("Encrypt").inc(3)
    b.requests.labels("Encrypt").inc(4)
    b.cached.set(20)
    b.node.publish(b.registry)
    before = a.scrape()
    assert total(before, "requests_total") == 7

    node_metrics.mark_dead(tmp_path, b.node.pid)
    restarted = Worker(tmp_path, 1, pid=100_002)  # a new process in the dead one's place starts from zero
    restarted.requests.labels("Encrypt").inc()
    restarted.node.publish(restarted.registry)

    after = a.scrape()
    assert total(after, "requests_total") == 8  # 3 + the dead worker's 4 + the new one's 1
    assert total(restarted.scrape(), "requests_total") == 8
    assert after[("cached_keys", (("worker", "1"),))] == 0  # the new worker's gauge, not the dead one's 20


def test_a_scrape_never_shows_less_than_an_earlier_one_after_the_answering_worker_dies(tmp_path: Path) -> None:
    a, b = Worker(tmp_path, 0), Worker(tmp_path, 1)
    b.node.publish(b.registry)
    a.requests.labels("Encrypt").inc(9)
    seen = total(a.scrape(), "requests_total")
    node_metrics.mark_dead(tmp_path, a.node.pid)  # killed right after answering, before its timer
    assert total(b.scrape(), "requests_total") >= seen == 9


def test_unreadable_or_foreign_files_are_skipped(tmp_path: Path) -> None:
    a = Worker(tmp_path, 0)
    a.requests.labels("Encrypt").inc()
    (tmp_path / "123.json").write_bytes(b"{not json")
    (tmp_path / "124.json").write_bytes(b'{"format": 99}')
    (tmp_path / "notes.txt").write_text("hello")
    assert total(a.scrape(), "requests_total") == 1


def test_snapshots_are_private_to_the_user(tmp_path: Path) -> None:
    a = Worker(tmp_path, 0)
    a.node.publish(a.registry)
    assert stat.S_IMODE(a.node.path.stat().st_mode) == 0o600


def test_a_single_process_renders_its_registry_alone() -> None:
    assert node_metrics.current() is None
    assert metrics.render() == generate_latest(metrics.REGISTRY)


def test_unknown_gauge_modes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown gauge modes"):
        NodeMetrics(tmp_path, "0", {"lag": "average"})


def test_every_configured_gauge_mode_is_known() -> None:
    assert set(metrics.GAUGE_MODES.values()) <= node_metrics.GAUGE_MODES


def test_the_node_directory_is_fresh_private_and_replaces_leftovers(tmp_path: Path) -> None:
    gone = tmp_path / f"{node_metrics.DIR_PREFIX}{2**22 + 7}-abc"  # above pid_max's default: no such process
    gone.mkdir()
    (gone / "1.json").write_text("{}")
    alive = tmp_path / f"{node_metrics.DIR_PREFIX}{os.getppid()}-abc"  # another node still running
    alive.mkdir()

    made = node_metrics.create_directory([tmp_path / "missing", tmp_path])
    assert made is not None and made.parent == tmp_path
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert list(made.iterdir()) == []
    assert not gone.exists()
    assert alive.exists()
    node_metrics.remove_directory(made)
    assert not made.exists()


def test_no_writable_base_means_per_worker_metrics(tmp_path: Path) -> None:
    assert node_metrics.create_directory([tmp_path / "missing"]) is None
