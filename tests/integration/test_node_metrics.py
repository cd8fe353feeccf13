"""`regiond serve --workers 2`: any worker's /metrics shows the whole node, and a killed worker's
counts stay in it (regiond.node_metrics; the merge rules are unit-tested in tests/unit)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regiond.devdb import free_port
from regiond.init import init_state_dir
from regiond.node_metrics import DIR_PREFIX
from tests.support.cluster import NodeFactory
from tests.support.regions import wait_until

REJECTED = {"operation": "unknown", "outcome": "MissingAuthenticationTokenException"}


@dataclass
class Served:
    endpoint: str
    proc: subprocess.Popen[bytes]
    tmp: Path

    def metrics_dir(self) -> Path:
        (found,) = self.tmp.glob(f"{DIR_PREFIX}*")
        return found

    def snapshots(self) -> dict[int, float]:
        """Each worker's published count of the rejected requests, by pid (white box)."""
        out = {}
        for path in self.metrics_dir().glob("*.json"):
            doc = orjson.loads(path.read_bytes())
            out[doc["pid"]] = sum(
                s[2] for f in doc["families"] if f["name"] == "regionkms_requests" for s in f["samples"]
                if s[0] == "regionkms_requests_total" and s[1] == REJECTED
            )  # fmt: skip
        return out


@pytest.fixture
async def served(nodes: NodeFactory, tmp_path: Path) -> AsyncIterator[Served]:
    url = await nodes.database()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region="us-east-1")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    env["TMPDIR"] = str(tmp)  # where the node makes its metrics directory
    with (tmp_path / "regiond.log").open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a long-running server, not awaited
            [sys.executable, "-m", "regiond", "serve", "--region", "us-east-1", "--database-url", url,
             "--listen", f"127.0.0.1:{port}", "--state-dir", str(state_dir), "--workers", "2", "--no-audit"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    node = Served(f"http://127.0.0.1:{port}", proc, tmp)
    try:
        await wait_until(lambda: _healthy(node), what="regiond serve to answer")
        # Each worker publishes a first snapshot once it listens: until both do, one takes every connection.
        await wait_until(lambda: _workers_listening(node, 2), what="both workers to listen")
        yield node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=30)
            except TimeoutError:
                proc.kill()
                proc.wait()


async def _healthy(node: Served) -> bool:
    assert node.proc.poll() is None, "regiond serve exited early"
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(node.endpoint + "/healthz") as resp:
            return resp.status == 200
    return False


async def _workers_listening(node: Served, n: int) -> bool:
    return len(list(node.tmp.glob(f"{DIR_PREFIX}*/*.json"))) >= n


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
    per_worker = served.snapshots()
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker  # both workers served
    assert sum(per_worker.values()) == 200
    for _ in range(10):  # whichever worker answers
        assert await _scrape(served) == (200, 200)


async def test_a_killed_workers_counts_stay_in_the_node_view(served: Served) -> None:
    await _reject(served, 100)
    await wait_until(lambda: _scrapes_agree(served, 100), what="every scrape to show the node's 100 requests")
    victim = next(pid for pid, n in served.snapshots().items() if n > 0)
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: _dead(served, victim), what="the supervisor to mark the killed worker dead")
    for _ in range(5):
        assert await _scrape(served) == (100, 100)  # the survivor answers, with the dead worker's share
    await _reject(served, 10)
    assert await _scrape(served) == (110, 110)  # the survivor counted these itself: no staleness

    metrics_dir = served.metrics_dir()
    served.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.to_thread(served.proc.wait), timeout=30)
    assert not metrics_dir.exists()  # removed when the node stops


async def _dead(node: Served, pid: int) -> bool:
    return (node.metrics_dir() / f"{pid}.dead").exists()
