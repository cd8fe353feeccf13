"""Prometheus metrics of one process, served on ``/metrics``.

Each worker process exposes its own registry; the ``worker`` is visible through the
process's own /metrics (scrape each node, or run one worker per container).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "regionkms_requests_total", "API requests by operation and outcome", ["operation", "outcome"], registry=REGISTRY
)
REQUEST_LATENCY = Histogram(
    "regionkms_request_seconds",
    "API request latency by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
CACHE_EVENTS = Counter(
    "regionkms_cache_events_total", "Hot-path cache hits and misses", ["cache", "event"], registry=REGISTRY
)
CACHE_PRELOADED_KEYS = Counter(
    "regionkms_cache_preloaded_keys_total",
    "Keys put in this worker's cache by the bulk preload (at start and after every cache drop)",
    registry=REGISTRY,
)
REPLICATION_LAG = Gauge(
    "regionkms_replication_lag_entries", "Outbox entries not yet acknowledged per peer", ["peer"], registry=REGISTRY
)
REPLICATION_LAG_SECONDS = Gauge(
    "regionkms_replication_lag_seconds",
    "Age of the oldest unacknowledged outbox entry per peer",
    ["peer"],
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
