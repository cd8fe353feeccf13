"""`regiond serve --workers 2`: any worker's /metrics shows the whole node, and a killed worker's
counts stay in it (regiond.runtime.node_metrics; the merge rules are unit-tested in tests/unit). That the
killed worker is respawned is tests/integration/test_supervisor.py's."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import NodeFactory
from tests.support.regions import wait_until
from tests.support.served import Served, serve_workers

REJECTED = {"operation": "unknown", "outcome": "MissingAuthenticationTokenException"}


@pytest.fixture
async def served(nodes: NodeFactory, tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_workers(nodes, tmp_path) as node:
        yield node


def _rejected_by_worker(node: Served) -> dict[int, float]:
    """Each worker's published count of the rejected requests, by pid (white box)."""
    return {pid: _rejected(doc) for pid, doc in node.worker_snapshots().items()}


def _rejected(snapshot: dict[str, Any]) -> float:
    return float(sum(
        s[2] for f in snapshot["families"] if f["name"] == "regionkms_requests" for s in f["samples"]
        if s[0] == "regionkms_requests_total" and s[1] == REJECTED
    ))  # fmt: skip


def _session() -> aiohttp.ClientSession:
    # A new connection per request: SO_REUSEPORT spreads connections, not requests, over the workers.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def _reject(node: Served, n: int) -> None:
    """``n`` unsigned calls: each is refused (MissingAuthenticationTokenException) and counted by its worker."""
    async with _session() as session:
        for _ in range(n):
            async with session.post(node.endpoint + "/", data=b"{}") as resp:
                assert resp.status == 400


async def _scrape(node: Served) -> tuple[float, float]:
    """(rejected requests, their latency observations) from one /metrics answer of some worker."""
    async with _session() as session, session.get(node.endpoint + "/metrics") as resp:
        text = await resp.text()
    requests = latencies = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "regionkms_requests_total" and s.labels == REJECTED:
                requests += s.value
            if s.name == "regionkms_request_seconds_count" and s.labels == {"operation": "unknown"}:
                latencies += s.value
    return requests, latencies


async def _scrapes_agree(node: Served, expected: float, scrapes: int = 4) -> bool:
    answers = [await _scrape(node) for _ in range(scrapes)]
    return all(answer == (expected, expected) for answer in answers)


async def test_any_workers_metrics_show_the_whole_nodes_requests(served: Served) -> None:
    await _reject(served, 200)
    await wait_until(lambda: _scrapes_agree(served, 200), what="every scrape to show the node's 200 requests")
    per_worker = _rejected_by_worker(served)
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker  # both workers served
    assert sum(per_worker.values()) == 200
    for _ in range(10):  # whichever worker answers
        assert await _scrape(served) == (200, 200)


async def test_a_killed_workers_counts_stay_in_the_node_view(served: Served) -> None:
    await _reject(served, 100)
    await wait_until(lambda: _scrapes_agree(served, 100), what="every scrape to show the node's 100 requests")
    victim = next(pid for pid, n in _rejected_by_worker(served).items() if n > 0)
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: _dead(served, victim), what="the supervisor to mark the killed worker dead")
    for _ in range(5):
        assert await _scrape(served) == (100, 100)  # the survivor (or the respawned worker), with the dead one's share
    await _reject(served, 10)
    await wait_until(lambda: _scrapes_agree(served, 110), what="every scrape to show the 10 more")

    metrics_dir = served.metrics_dir()
    served.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.to_thread(served.proc.wait), timeout=30)
    assert not metrics_dir.exists()  # removed when the node stops


async def _dead(node: Served, pid: int) -> bool:
    return (node.metrics_dir() / f"{pid}.dead").exists()
