"""`regiond serve --workers 2` keeps its workers: a SIGKILLed one is respawned and serves, SIGTERM stops
everything without respawning, a worker that cannot start stops the node (issue 13, finding 11)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from regiond.devtools.postgres import free_port
from regiond.statedir import init_state_dir
from tests.support.cluster import NodeFactory
from tests.support.regions import wait_until
from tests.support.served import Served, serve_workers


def _log(node_log: Path) -> list[dict[str, Any]]:
    out = []
    for line in node_log.read_bytes().splitlines():
        if line.startswith(b"{"):
            out.append(orjson.loads(line))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _requests_served_by(node: Served, pid: int) -> float:
    """Send a few unsigned calls over new connections; what worker ``pid`` has published of its count so far."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(20):
            async with session.post(node.endpoint + "/", data=b"{}") as resp:
                assert resp.status == 400  # MissingAuthenticationTokenException, from whichever worker
    snapshot = node.worker_snapshots().get(pid)
    if snapshot is None:
        return 0.0
    return float(sum(
        s[2] for f in snapshot["families"] if f["name"] == "regionkms_requests" for s in f["samples"]
        if s[0] == "regionkms_requests_total"
    ))  # fmt: skip


async def _restarts(node: Served) -> float:
    async with aiohttp.ClientSession() as session, session.get(node.endpoint + "/metrics") as resp:
        text = await resp.text()
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == "regionkms_worker_restarts_total"
    )  # fmt: skip


async def test_a_sigkilled_worker_is_respawned_and_serves_and_sigterm_stops_everything(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    async with serve_workers(nodes, tmp_path) as node:
        first = node.live_worker_pids()
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            live = node.live_worker_pids()
            return len(live) == 2 and victim not in live

        await wait_until(replaced, what="a new worker to take the killed one's place")
        (new,) = node.live_worker_pids() - first
        await wait_until(
            lambda: _more_than_zero(_requests_served_by(node, new)), what="the new worker to serve requests"
        )
        assert await _restarts(node) == 1  # whichever worker answers: the supervisor's counter is in the view

        workers = node.live_worker_pids()
        assert await node.stop() == 0
        assert not any(_alive(pid) for pid in workers | {victim})
    events = _log(node.log)
    (exited,) = [e for e in events if e["event"] == "node.worker_exited"]
    assert exited["pid"] == victim and exited["signal"] == "SIGKILL"
    (respawned,) = [e for e in events if e["event"] == "node.worker_respawned"]  # once: not after SIGTERM
    assert respawned["pid"] == new


async def _more_than_zero(count: Any) -> bool:
    return bool(await count > 0)


async def test_a_worker_that_cannot_start_stops_the_node_instead_of_respawning(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region="us-east-1")
    nowhere = f"postgresql://nobody:x@127.0.0.1:{free_port()}/regionkms"  # nothing listens there
    log = tmp_path / "regiond.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220 - awaited below, in a thread
            [sys.executable, "-m", "regiond", "serve", "--region", "us-east-1", "--database-url", nowhere,
             "--plain-http", "--listen", f"127.0.0.1:{free_port()}", "--state-dir", str(state_dir), "--workers", "2",
             "--no-audit"],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code != 0
    events = _log(log)
    assert any(e["event"] == "node.worker_failed_to_start" for e in events)
    assert not any(e["event"] == "node.worker_respawned" for e in events)
