"""`regiond serve --workers N` as a real process tree (a supervisor and its spawned workers), for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from regiond.devtools.launcher import NodeProcess
from regiond.devtools.postgres import free_port
from regiond.runtime.node_metrics import DIR_PREFIX
from regiond.runtime.supervisor import SUPERVISOR_WORKER
from regiond.statedir import init_state_dir
from tests.support.cluster import NodeFactory
from tests.support.regions import wait_until
from tests.support.tls import ServerFiles


@dataclass
class Served:
    endpoint: str
    proc: subprocess.Popen[bytes]
    tmp: Path
    log: Path
    tls: ssl.SSLContext | None = None  # what clients verify the node with, when it serves TLS

    def metrics_dir(self) -> Path:
        (found,) = self.tmp.glob(f"{DIR_PREFIX}*")
        return found

    def worker_snapshots(self) -> dict[int, dict[str, Any]]:
        """Each worker's published metrics snapshot by pid, dead workers' included
        (white box: regiond.runtime.node_metrics)."""
        out = {}
        for path in self.metrics_dir().glob("*.json"):
            with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
                doc = orjson.loads(path.read_bytes())
                if doc["worker"] != SUPERVISOR_WORKER:
                    out[int(doc["pid"])] = doc
        return out

    def live_worker_pids(self) -> set[int]:
        dead = {int(p.stem) for p in self.metrics_dir().glob("*.dead")}
        return set(self.worker_snapshots()) - dead

    async def healthy(self) -> bool:
        assert self.proc.poll() is None, "regiond serve exited early:\n" + self.log.read_text()[-3000:]
        with contextlib.suppress(aiohttp.ClientError):
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.endpoint + "/healthz", ssl=self.tls or True) as resp,
            ):
                return resp.status == 200
        return False

    async def stop(self) -> int:
        """SIGTERM, as a service manager stops the node; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout=60)


@contextlib.asynccontextmanager
async def serve_workers(
    nodes: NodeFactory, tmp_path: Path, workers: int = 2, tls: ServerFiles | None = None, ca_bundle: Path | None = None
) -> AsyncIterator[Served]:
    """A node of ``workers`` processes, once each of them listens (each has published a metrics snapshot);
    with ``tls`` its client endpoint serves those files, verified with ``ca_bundle``."""
    url = await nodes.database()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region="us-east-1")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    env["TMPDIR"] = str(tmp)  # where the node makes its metrics directory
    log = tmp_path / "regiond.log"
    launched = NodeProcess(
        "us-east-1", url, state_dir, port, workers=workers, audit=False,
        tls=(tls.cert_file, tls.key_file) if tls is not None else None, log_path=log, env=env,
    ).start()  # fmt: skip
    assert launched.proc is not None
    proc = launched.proc
    client_tls = ssl.create_default_context(cafile=str(ca_bundle)) if tls is not None else None
    node = Served(launched.endpoint, proc, tmp, log, client_tls)
    try:
        await wait_until(node.healthy, what="regiond serve to answer")
        # Each worker publishes a first snapshot once it listens: until all do, some take every connection.
        await wait_until(lambda: _listening(node, workers), what="every worker to listen")
        yield node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=30)
            except TimeoutError:
                proc.kill()
                proc.wait()


async def _listening(node: Served, n: int) -> bool:
    return len(node.live_worker_pids()) >= n
