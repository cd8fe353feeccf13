"""Prometheus metrics, served on ``/metrics`` as one view of the whole node.

Every process updates its own registry (``REGISTRY``) in process: an update is a plain
prometheus_client value, with no file or lock shared between processes, because the hot path
updates two or three metrics per request. Under ``regiond serve --workers N`` each worker also
publishes a snapshot of its registry once a second, and ``render`` merges the answering
worker's live registry with its siblings' snapshots (regiond.runtime.node_metrics): counters and
histograms are summed over the node's workers (including workers that have died), gauges are
combined per ``GAUGE_MODES``. Siblings' figures are at most one publish interval old. A single
process (``--workers 1``, tests) renders its registry alone, as before.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from regiond.runtime import node_metrics

REGISTRY = CollectorRegistry()

REQUEST_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Latency:
    """One operation's ``regionkms_request_seconds`` histogram: per-bucket counts (not cumulative), the
    last one past every bound (``+Inf``), and the sum."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(REQUEST_SECONDS_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0


class RequestMetrics:
    """``regionkms_requests_total{operation,outcome}`` and ``regionkms_request_seconds{operation}``: the two
    metrics every API request updates, as plain numbers exposed by a collector of the registry.

    prometheus_client's ``Counter``/``Histogram`` children take a lock and walk the buckets one
    ``inc`` at a time on each update, which is most of what metrics cost a request; these update a
    dict and a list in place (``bisect`` finds the bucket). The exposition is the same families,
    names, labels and buckets (without the ``_created`` samples, which the node view drops
    anyway). Updated and collected on the worker's event loop only (the request path, ``/metrics``
    and the snapshot task), so no lock is needed. Label values are operation names and AWS error
    codes, bounded by the operation table and the error tree.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._outcomes: dict[tuple[str, str], int] = {}
        self._latencies: dict[str, _Latency] = {}
        registry.register(self)

    def count(self, operation: str, outcome: str) -> None:
        """One request of ``operation`` ended with ``outcome`` (``ok`` or its error code)."""
        key = (operation, outcome)
        self._outcomes[key] = self._outcomes.get(key, 0) + 1

    def observe(self, operation: str, seconds: float) -> None:
        latency = self._latencies.get(operation)
        if latency is None:
            latency = self._latencies[operation] = _Latency()
        latency.buckets[bisect_left(REQUEST_SECONDS_BUCKETS, seconds)] += 1  # the first bound >= seconds
        latency.count += 1
        latency.sum += seconds

    def value(self, operation: str, outcome: str) -> int:
        """The count of ``regionkms_requests_total{operation, outcome}`` in this process (tests)."""
        return self._outcomes.get((operation, outcome), 0)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("regionkms_requests", _REQUESTS_HELP, labels=("operation", "outcome"))
        yield HistogramMetricFamily("regionkms_request_seconds", _LATENCY_HELP, labels=("operation",))

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("regionkms_requests", _REQUESTS_HELP, labels=("operation", "outcome"))
        for (operation, outcome), value in self._outcomes.items():
            requests.add_metric((operation, outcome), value)
        yield requests
        latency = HistogramMetricFamily("regionkms_request_seconds", _LATENCY_HELP, labels=("operation",))
        for operation, observed in self._latencies.items():
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_LABELS, observed.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric((operation,), buckets, observed.sum)
        yield latency


_REQUESTS_HELP = "API requests by operation and outcome"
_LATENCY_HELP = "API request latency by operation"
_BUCKET_LABELS = (*map(floatToGoString, REQUEST_SECONDS_BUCKETS), "+Inf")  # le, as prometheus_client writes it

REQUESTS = RequestMetrics(REGISTRY)
FORWARDED = Counter(
    "regionkms_forwarded_requests_total",
    "Requests signed for another region of the cluster and forwarded there (regiond.protocol.forwarding), by"
    " target region and outcome (ok, error: the target answered an error; timeout, unreachable, bad_reply)",
    ["region", "outcome"],
    registry=REGISTRY,
)
FORWARD_LATENCY = Histogram(
    "regionkms_forward_seconds",
    "Time from sending a forwarded request to its target region to having its answer, by target region",
    ["region"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "regionkms_auth_failures_total",
    "Requests that failed authentication, by access key id (bounded: see regiond.auth.failures) and error",
    ["access_key_id", "error"],
    registry=REGISTRY,
)
AUTH_THROTTLED = Counter(
    "regionkms_auth_throttled_total",
    "Failed authentications answered ThrottlingException because their source had failed too often",
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
HTTP_CONNECTIONS = Gauge(
    "regionkms_http_connections", "Open client connections (regiond.runtime.listener)", registry=REGISTRY
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "regionkms_http_connections_refused",
    "Client connections refused at once because the worker had --http-max-connections open",
    registry=REGISTRY,
)
HTTP_TIMEOUTS = Counter(
    "regionkms_http_timeouts",
    "Client connections cut off for sending a request too slowly, by phase (header: closed; body: answered 408)",
    ["phase"],
    registry=REGISTRY,
)

TLS_HANDSHAKES = Counter(
    "regionkms_tls_handshakes",
    "TLS handshakes on the node's listeners by listener (client, replication) and outcome (ok; failed: the"
    " client's hello or certificate was refused or it hung up; timeout: not done within the handshake bound)",
    ["listener", "outcome"],
    registry=REGISTRY,
)
TLS_RELOADS = Counter(
    "regionkms_tls_reloads",
    "Reloads of the client endpoint's certificate on SIGHUP, by outcome (failed: the old one is kept)",
    ["outcome"],
    registry=REGISTRY,
)
BACKGROUND_LEADER = Gauge(
    "regionkms_background_leader",
    "1 while this node runs the region-wide background task (it holds the task's leader lock), else 0",
    ["task"],
    registry=REGISTRY,
)
BACKGROUND_LEADER_CHANGES = Counter(
    "regionkms_background_leader_acquired",
    "Times a process of this node took a background task's leader lock (start, failover, reconnect)",
    ["task"],
    registry=REGISTRY,
)

# The supervisor of `regiond serve --workers N` (regiond.runtime.supervisor) publishes this registry into the
# node's view as one more member; its counters are summed with the workers'.
SUPERVISOR_REGISTRY = CollectorRegistry()
WORKER_RESTARTS = Counter(
    "regionkms_worker_restarts", "Worker processes respawned after they died", registry=SUPERVISOR_REGISTRY
)

# How each gauge is combined over a node's live workers (a dead worker's gauges are dropped);
# prometheus_client's multiprocess names. A gauge not listed gets one series per worker
# (``liveall``, label ``worker``): summing per-process figures is rarely meaningful.
GAUGE_MODES: dict[str, str] = {
    # Only the worker holding a peer's sender lock updates these, and the lock can move to another
    # worker: the figure last changed is the current one (a max would keep a stale backlog).
    "regionkms_replication_lag_entries": "livemostrecent",
    "regionkms_replication_lag_seconds": "livemostrecent",
    # Sequence numbers only grow: the node's progress is the highest any worker reached.
    "regionkms_replication_sent_seq": "livemax",
    "regionkms_replication_acked_seq": "livemax",
    "regionkms_replication_applied_seq": "livemax",
    # At most one process of the region holds a task's lock: the node leads if one of its workers does.
    "regionkms_background_leader": "livemax",
    # Each worker counts its own connections: the node's are their sum.
    "regionkms_http_connections": "livesum",
}


def render() -> bytes:
    """The text exposition of ``/metrics``: the node's aggregate when this process is one of its workers."""
    node = node_metrics.current()
    if node is None:
        return generate_latest(REGISTRY)
    return node.render(REGISTRY)
