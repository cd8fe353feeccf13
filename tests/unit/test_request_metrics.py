"""regiond.runtime.metrics.RequestMetrics: the same exposition as prometheus_client's Counter and Histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from regiond.runtime.metrics import REQUEST_SECONDS_BUCKETS, RequestMetrics

CALLS = [
    ("Encrypt", "ok", 0.0004), ("Encrypt", "ok", 0.0005), ("Encrypt", "ok", 0.0012), ("Decrypt", "ok", 3.0),
    ("Encrypt", "AccessDeniedException", 2.5), ("unknown", "SerializationException", 0.0),
]  # fmt: skip


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_requests_and_latency_render_as_prometheus_client_renders_them() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter(
        "regionkms_requests_total", "API requests by operation and outcome", ["operation", "outcome"],
        registry=reference,
    )  # fmt: skip
    histogram = Histogram(
        "regionkms_request_seconds", "API request latency by operation", ["operation"],
        buckets=REQUEST_SECONDS_BUCKETS, registry=reference,
    )  # fmt: skip
    metrics = RequestMetrics(ours)
    for operation, outcome, seconds in CALLS:
        counter.labels(operation, outcome).inc()
        histogram.labels(operation).observe(seconds)
        metrics.count(operation, outcome)
        metrics.observe(operation, seconds)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(reference))
    assert metrics.value("Encrypt", "ok") == 3
    assert metrics.value("Encrypt", "ThrottlingException") == 0


def test_an_empty_registry_has_both_families_and_no_samples() -> None:
    registry = CollectorRegistry()
    RequestMetrics(registry)
    text = generate_latest(registry).decode()
    assert "# TYPE regionkms_requests_total counter" in text
    assert "# TYPE regionkms_request_seconds histogram" in text
    assert "regionkms_requests_total{" not in text
