"""Two `regiond serve` nodes of one region over one database, each from its configuration file.

The region-wide background tasks run in exactly one process of the region (the holder of each
task's leader lock, regiond.background.leadership). SIGKILL the worker that holds them: another
process takes every task within seconds and the supervisor respawns the dead worker. SIGKILL the
whole first node: the second runs everything. The figures are polled with deadlines, never timed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from regiond.devtools.postgres import free_port
from regiond.statedir import init_state_dir
from regiond.store.locks import LEADER_LOCKS
from tests.support.cluster import PgServer
from tests.support.regions import wait_until

pytestmark = pytest.mark.cluster
TASKS = tuple(LEADER_LOCKS)
FAILOVER_DEADLINE_S = 30.0
_PID = re.compile(r"^regiond leader us-east-1 \S+ pid=(\d+)$")


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.endpoint + path) as resp:
            return resp.status, await resp.text()

    async def ready(self) -> bool:
        assert self.proc.poll() is None, f"{self.name} exited:\n" + self.log.read_text()[-3000:]
        try:
            status, _ = await self.get("/readyz")
        except aiohttp.ClientError:
            return False
        return status == 200

    async def leader_gauges(self) -> dict[str, float]:
        _, text = await self.get("/metrics")
        found = re.findall(r'^regionkms_background_leader\{task="([^"]+)"\} (\S+)$', text, re.M)
        return {task: float(value) for task, value in found}

    async def restarts(self) -> float:
        _, text = await self.get("/metrics")
        found = re.search(r"^regionkms_worker_restarts_total (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def workers(self) -> set[int]:
        """The node's worker processes: its supervisor's spawned children (not multiprocessing's resource
        tracker), from /proc."""
        out = set()
        for status in Path("/proc").glob("[0-9]*/status"):
            with suppress(OSError):
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
                cmdline = (status.parent / "cmdline").read_bytes()
                if int(fields.get("PPid", "0")) == self.proc.pid and b"spawn_main" in cmdline:
                    out.add(int(status.parent.name))
        return out


def _config(path: Path, *, url: str, state_dir: Path, port: int, workers: int) -> Path:
    path.write_text(
        f'region = "us-east-1"\ndatabase_url = "{url}"\nstate_dir = "{state_dir}"\nlisten = "127.0.0.1:{port}"\n'
        f"workers = {workers}\nplain_http = true\naudit = false\nleader_poll = 0.2\nlog_level = \"info\"\n"
    )
    return path


@asynccontextmanager
async def _node(name: str, tmp: Path, *, url: str, state_dir: Path, workers: int) -> AsyncIterator[Node]:
    port = free_port()
    config = _config(tmp / f"{name}.toml", url=url, state_dir=state_dir, port=port, workers=workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    private_tmp = tmp / f"{name}-tmp"
    private_tmp.mkdir()
    env["TMPDIR"] = str(private_tmp)  # the node's metrics directory
    log = tmp / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not waited on here
            [sys.executable, "-m", "regiond", "serve", "--config", str(config)],
            stdout=out, stderr=out, env=env, start_new_session=True,
        )  # fmt: skip
    node = Node(name, proc, f"http://127.0.0.1:{port}", log)
    try:
        await wait_until(node.ready, timeout_s=90, what=f"{name} to be ready")
        yield node
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=40)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def _holders(url: str) -> dict[str, int]:
    """The OS pid of the process holding each task's leader lock (pg_locks x pg_stat_activity)."""
    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch(
            "SELECT (l.classid::bigint << 32) | l.objid::bigint AS id, a.application_name FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        )
    finally:
        await con.close()
    by_id = {int(r["id"]): str(r["application_name"]) for r in rows}
    out = {}
    for task, lock in LEADER_LOCKS.items():
        found = _PID.match(by_id.get(int(lock), ""))
        if found:
            out[task] = int(found.group(1))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    init_state_dir(path, region="us-east-1")  # both nodes of the region share its root key
    yield path


@pytest.mark.timeout(300)
async def test_background_tasks_run_once_per_region_and_fail_over_on_sigkill(
    pg_server: PgServer, tmp_path: Path, state_dir: Path
) -> None:
    url = await pg_server.fresh_database()
    try:
        async with _node("a", tmp_path, url=url, state_dir=state_dir, workers=2) as a:
            await wait_until(lambda: _all_held_by(url, a.workers()), what="a's workers to lead every task")
            async with _node("b", tmp_path, url=url, state_dir=state_dir, workers=1) as b:
                b_pids = {b.proc.pid}  # one worker: the process is the worker
                await wait_until(lambda: _gauges_say(a, b, leader=a), what="the gauges to name a as the leader")
                holders = await _holders(url)
                assert set(holders) == set(TASKS) and set(holders.values()) <= a.workers()

                # 1. SIGKILL the worker holding the deletion sweeper: its session ends, another process
                # of the region takes each of its tasks, and a's supervisor respawns the worker.
                victim = holders["deletion-sweeper"]
                restarts = await a.restarts()
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                await wait_until(
                    lambda: _all_held_by(url, (a.workers() | b_pids) - {victim}), timeout_s=FAILOVER_DEADLINE_S,
                    what="another process to take every task",
                )  # fmt: skip
                failover_s = time.monotonic() - killed_at
                await wait_until(lambda: _respawned(a, restarts), timeout_s=60, what="a's supervisor to respawn")
                print(f"failover after SIGKILL of the leader worker: {failover_s:.2f} s")

                # 2. SIGKILL the whole node a (supervisor and workers): b runs every task, and says so.
                os.killpg(a.proc.pid, signal.SIGKILL)
                a.proc.wait()
                killed_at = time.monotonic()
                await wait_until(
                    lambda: _all_held_by(url, b_pids), timeout_s=FAILOVER_DEADLINE_S, what="b to take every task"
                )
                print(f"failover to the other node after SIGKILL of a whole node: {time.monotonic() - killed_at:.2f} s")
                await wait_until(lambda: _gauges_say(None, b, leader=b), what="b's gauges to say it leads")
                assert await b.ready()
    finally:
        await pg_server.drop_database(url)


async def _all_held_by(url: str, pids: set[int]) -> bool:
    holders = await _holders(url)
    return set(holders) == set(TASKS) and all(pid in pids and _alive(pid) for pid in holders.values())


async def _gauges_say(a: Node | None, b: Node, *, leader: Node) -> bool:
    """Every task is led by exactly one node, ``leader``, in the nodes' own /metrics."""
    nodes = [n for n in (a, b) if n is not None]
    gauges = {n.name: await n.leader_gauges() for n in nodes}
    for task in TASKS:
        if sum(g.get(task, 0.0) for g in gauges.values()) != 1.0 or gauges[leader.name].get(task) != 1.0:
            return False
    return True


async def _respawned(node: Node, before: float) -> bool:
    return await node.restarts() > before and len(node.workers()) == 2 and await node.ready()
