"""Audit batch sizes of one measured run: the writer's histogram before and after, and the difference.

Issue 15 asks for the batch sizes in the results, since PostgreSQL's cost is mostly per batch (one
segment, one INSERT, one synchronous commit each): the same server is cheap at 30 events per batch
and dear at 4. regiond exports them as the histogram ``regionkms_audit_batch_events``
(``regiond.audit.writer``) on ``/metrics``, one view of the whole node merged from the workers'
snapshots (``regiond.runtime.node_metrics``). The runner scrapes it right before and right after
each measured run (after waiting out the snapshot interval, so every worker's snapshot is current)
and keeps the difference: the batches of that run alone, warm-up excluded.

The minimal server with the audit writer (``minimal_audit``) serves no ``/metrics`` (its workers
share one port and nothing merges their registries), so its batches are counted in its database
instead: one ``audit_segments`` row per batch, ``record_count`` events each, grouped by size before
and after. Both become the same ``Batches``: cumulative counts per upper bound, as Prometheus has them.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

METRIC = "regionkms_audit_batch_events"
SCRAPE_TIMEOUT_S = 5.0


def _bound_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


@dataclass(frozen=True)
class Batches:
    """Batches of a histogram: ``buckets`` maps each upper bound (events, ``inf`` last) to the cumulative
    number of batches with at most that many events; ``events`` is the histogram's sum."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    events: float = 0.0

    def minus(self, before: Batches) -> Batches:
        """The batches written between ``before`` and this scrape (a bound missing from ``before`` counts 0)."""
        return Batches(
            {b: v - before.buckets.get(b, 0.0) for b, v in self.buckets.items()},
            self.count - before.count,
            self.events - before.events,
        )

    def plus(self, other: Batches) -> Batches:
        bounds = sorted(set(self.buckets) | set(other.buckets))
        return Batches(
            {b: _at(self.buckets, b) + _at(other.buckets, b) for b in bounds},
            self.count + other.count,
            self.events + other.events,
        )

    def quantile_bound(self, q: float) -> float | None:
        """The smallest upper bound that holds at least ``q`` of the batches (None without batches)."""
        if self.count <= 0:
            return None
        for bound in sorted(self.buckets):
            if self.buckets[bound] >= q * self.count:
                return bound
        return math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {_bound_text(b): round(v) for b, v in sorted(self.buckets.items())},
            "count": round(self.count),
            "events": round(self.events),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Batches:
        return cls(
            {float(b): float(v) for b, v in data.get("buckets", {}).items()},
            float(data.get("count", 0)),
            float(data.get("events", 0)),
        )


def _at(buckets: Mapping[float, float], bound: float) -> float:
    """Cumulative count at ``bound`` of a histogram that may not have that bound: its largest bound below."""
    below = [b for b in buckets if b <= bound]
    return buckets[max(below)] if below else 0.0


def parse(text: str, metric: str = METRIC) -> Batches:
    """The histogram ``metric`` of a Prometheus text exposition, summed over any labels it carries
    (a node's view may label per worker); an exposition without it is an empty ``Batches``."""
    buckets: dict[float, float] = {}
    count = events = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name == f"{metric}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + float(sample.value)
            elif sample.name == f"{metric}_count":
                count += float(sample.value)
            elif sample.name == f"{metric}_sum":
                events += float(sample.value)
    return Batches(buckets, count, events)


def scrape(host: str, port: int) -> Batches:
    """The node's batch histogram from its ``/metrics``; OSError/ValueError if unreachable or malformed."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as r:
        return parse(r.read().decode())


def from_sizes(sizes: Mapping[int, int], bounds: Iterable[float]) -> Batches:
    """``Batches`` of exact batch sizes (size -> number of batches), bucketed at ``bounds`` (``inf`` added)."""
    edges = sorted({*bounds, math.inf})
    buckets = {b: float(sum(n for size, n in sizes.items() if size <= b)) for b in edges}
    return Batches(buckets, float(sum(sizes.values())), float(sum(size * n for size, n in sizes.items())))


def writer_bounds() -> list[float]:
    """The upper bounds of regiond's batch histogram, as its writer defines them."""
    from regiond.audit.writer import AUDIT_BATCH_EVENTS

    return sorted({float(s.labels["le"]) for m in AUDIT_BATCH_EVENTS.collect() for s in m.samples if "le" in s.labels})


def summary(batches: Batches) -> dict[str, Any]:
    """What a results table shows of one run's (or one block's) batches: counts, the mean batch, and
    the histogram bounds its median and 90th percentile batch fall under (text: ``+Inf`` is not JSON)."""
    p50, p90 = batches.quantile_bound(0.5), batches.quantile_bound(0.9)
    return {
        "batches": round(batches.count),
        "events": round(batches.events),
        "mean": round(batches.events / batches.count, 1) if batches.count > 0 else None,
        "p50_le": None if p50 is None else _bound_text(p50),
        "p90_le": None if p90 is None else _bound_text(p90),
    }
