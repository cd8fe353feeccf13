"""Several replicated regions in one test: each its own node, database, state dir and certificate.

``replicated_cluster(nodes, ...)`` makes the cluster CA, issues each region's mTLS certificate,
picks each region's replication port, optionally puts a ``TcpProxy`` on every directed link
(so a test can cut ``us-east-1 -> eu-west-1`` alone), writes each region's peers file (a region
reaches its peers through its own proxies) and starts the nodes. With ``in_memory=True`` the
regions are joined by ``replication.memory.InMemoryNetwork`` instead, whose ``sent`` list shows
every envelope a sender transmitted.

Regions can also run as a real ``regiond serve`` subprocess (``process=...``), so a test can
SIGKILL one and start it again on the same database, state and ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from regiond.app import REPLICATION
from regiond.devtools.launcher import (
    ClusterCA,
    NodeFailed,
    NodeProcess,
    RegionState,
    peers_document,
    prepare_region,
    write_peers_file,
)
from regiond.devtools.postgres import free_port
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.protocol.routes import SERVICES
from replication.memory import InMemoryNetwork
from tests.support.cluster import ACCOUNT_ID, Identity, Node, NodeFactory
from tests.support.proxy import TcpProxy

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
HOME = REGIONS[0]
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}],
}
CONVERGE_TIMEOUT_S = 30.0
FAST = {"replication_backoff_cap_s": 0.3, "replication_heartbeat_s": 1.0}


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = CONVERGE_TIMEOUT_S, what: str = "condition"
) -> None:
    """Poll ``check`` until true; fail after ``timeout_s`` (a bound, never a sleep to wait out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


class Process(NodeProcess):
    """A region served by a ``regiond serve`` subprocess (the launcher's ``NodeProcess``)."""

    def client(self, identity: Identity) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "kms", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=identity.access_key_id, aws_secret_access_key=identity.secret_access_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )  # fmt: skip


@dataclass
class Cluster:
    factory: NodeFactory
    regions: tuple[str, ...]
    databases: dict[str, str]
    state_dirs: dict[str, Path]
    repl_ports: dict[str, int]
    peers_files: dict[str, Path]
    settings: dict[str, Any]
    proxies: dict[tuple[str, str], TcpProxy] = field(default_factory=dict)
    network: InMemoryNetwork | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    audited: tuple[str, ...] = ()  # regions whose nodes write the audit trail (the others do not)
    ca: ClusterCA | None = None
    region_states: dict[str, RegionState] = field(default_factory=dict)

    # --- faults -----------------------------------------------------------------------------

    def cut(self, a: str, b: str, *, both: bool = True) -> None:
        if self.network is not None:
            self.network.cut(a, b, both=both)
            return
        self.proxies[(a, b)].cut()
        if both:
            self.proxies[(b, a)].cut()

    def heal(self, a: str, b: str, *, both: bool = True) -> None:
        if self.network is not None:
            self.network.heal(a, b, both=both)
            return
        self.proxies[(a, b)].heal()
        if both:
            self.proxies[(b, a)].heal()

    def isolate(self, region: str) -> None:
        for other in self.regions:
            if other != region:
                self.cut(region, other)

    def heal_all(self) -> None:
        if self.network is not None:
            self.network.heal_all()
        for proxy in self.proxies.values():
            proxy.heal()

    # --- topology ---------------------------------------------------------------------------

    def write_peers_files(self) -> None:
        """Each region's peers file (IAM home: the first region); a region reaches its peers through
        its own proxies when there are some."""
        assert self.ca is not None
        for src in self.regions:
            endpoints = {
                dst: self.proxies[(src, dst)].endpoint if (src, dst) in self.proxies
                else f"https://127.0.0.1:{self.repl_ports[dst]}"
                for dst in self.regions
            }  # fmt: skip
            document = peers_document(home_region=self.regions[0], ca=self.ca, regions=self.region_states,
                                      endpoints=endpoints)  # fmt: skip
            self.peers_files[src] = write_peers_file(self.state_dirs[src] / "peers.json", document)

    async def add_region(self, region: str) -> Node:
        """Add ``region`` to the running cluster as an operator does (docs/OPERATIONS.md, Adding a
        region): its state and certificate from the cluster CA, its own database, every peers file
        rewritten with it, every running node restarted on the new file one at a time, then the new
        region started. Its IAM is empty until a resync."""
        assert self.ca is not None and not self.proxies and self.network is None
        self.databases[region] = await self.factory.database()
        self.region_states[region] = prepare_region(self.factory.tmp / f"{region}-replicated", region, self.ca)
        self.state_dirs[region] = self.region_states[region].state_dir
        self.repl_ports[region] = free_port()
        running = [r for r in self.regions if r in self.nodes]
        self.regions = (*self.regions, region)
        self.write_peers_files()
        for name in running:
            await self.stop(name)
            await self.start(name)
        return await self.start(region)

    # --- nodes ------------------------------------------------------------------------------

    async def start(self, region: str) -> Node:
        transport = self.network.transport(region) if self.network is not None else None
        listen = None if self.network is not None else f"127.0.0.1:{self.repl_ports[region]}"
        node = await self.factory.start(
            region, database_url=self.databases[region], state_dir=self.state_dirs[region],
            audit=region in self.audited,
            replication_transport=transport, peers_file=self.peers_files[region], replication_listen=listen,
            **self.settings,
        )  # fmt: skip
        if self.network is not None:
            self.network.register(node.app[REPLICATION].receiver)
        self.nodes[region] = node
        return node

    async def stop(self, region: str) -> None:
        await self.factory.stop(self.nodes.pop(region))

    def start_process(self, region: str) -> Process:
        """Serve ``region`` from a ``regiond serve`` subprocess (same database, state and ports)."""
        previous = self.processes.get(region)
        process = Process(
            region, self.databases[region], self.state_dirs[region], previous.port if previous else free_port(),
            peers_file=self.peers_files[region], replication_port=self.repl_ports[region], audit=False,
            log_level="warning", env={**os.environ, "PYTHONWARNINGS": "ignore"},
        ).start()  # fmt: skip
        self.processes[region] = process
        return process

    async def wait_ready(self, process: Process, timeout_s: float = 60.0) -> None:
        async def check() -> bool:
            try:
                return await asyncio.to_thread(process.ready)
            except NodeFailed as exc:
                raise AssertionError(str(exc)) from None

        await wait_until(check, timeout_s=timeout_s, what=f"{process.region} to be ready")

    def kill(self, region: str) -> None:
        """SIGKILL the region's subprocess: no drain, no flush, no goodbye."""
        self.processes[region].kill()

    # --- data ---------------------------------------------------------------------------------

    async def fetchval(self, region: str, query: str, *args: Any) -> Any:
        con = await asyncpg.connect(self.databases[region])
        try:
            return await con.fetchval(query, *args)
        finally:
            await con.close()

    async def fetch(self, region: str, query: str, *args: Any) -> list[asyncpg.Record]:
        con = await asyncpg.connect(self.databases[region])
        try:
            return list(await con.fetch(query, *args))
        finally:
            await con.close()

    async def admin(self) -> Identity:
        """An admin user made in the IAM home region through its (replicating) IAM service, usable
        everywhere once replication has carried it."""
        home = self.nodes[HOME]
        iam = home.app[SERVICES].iam
        await iam.ensure_account(ACCOUNT_ID)
        arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, "admin")
        if not any(p.arn == arn for p in await iam.list_principals(ACCOUNT_ID, PrincipalKind.USER)):
            await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.put_identity_policy(arn, "admin", json.dumps(ADMIN_POLICY))
        new = await iam.create_access_key(arn)
        for region in self.regions:
            await self.wait_for_access_key(region, new.access_key_id)
        return Identity(arn, new.access_key_id, new.secret_access_key)

    async def wait_for_access_key(self, region: str, access_key_id: str) -> None:
        async def present() -> bool:
            return bool(await self.fetchval(
                region, "SELECT EXISTS (SELECT 1 FROM access_keys k JOIN identity_policies p"
                " ON p.principal_arn = k.principal_arn WHERE k.access_key_id = $1)", access_key_id,
            ))  # fmt: skip

        await wait_until(present, what=f"access key in {region}")

    async def drained(self) -> bool:
        """True when every region's outbox is empty and every peer has applied all it was sent."""
        for region in self.regions:
            if await self.fetchval(region, "SELECT count(*) FROM replication_outbox"):
                return False
        for source in self.regions:
            for dest in self.regions:
                if source == dest:
                    continue
                appended = await self.fetchval(
                    source, "SELECT coalesce(max(last_seq), 0) FROM replication_dest_seq WHERE dest = $1", dest
                )
                applied = await self.fetchval(
                    dest, "SELECT coalesce(max(applied_seq), 0) FROM replication_inbound WHERE source = $1", source
                )
                if appended != applied:
                    return False
        return True

    async def close(self) -> None:
        for process in self.processes.values():
            process.stop()
        for proxy in self.proxies.values():
            await proxy.close()


@contextlib.asynccontextmanager
async def replicated_cluster(
    factory: NodeFactory, regions: Sequence[str] = REGIONS, *, proxies: bool = False, in_memory: bool = False,
    process: Sequence[str] = (), audit: Sequence[str] = (), **settings: Any,
) -> AsyncIterator[Cluster]:  # fmt: skip
    """Start ``regions`` as one replicated cluster (IAM home: the first region); see module docstring."""
    names = tuple(regions)
    ca = ClusterCA.ensure(factory.tmp / "cluster-ca")
    databases = {r: await factory.database() for r in names}
    states = {r: prepare_region(factory.tmp / f"{r}-replicated", r, ca) for r in names}
    state_dirs = {r: states[r].state_dir for r in names}
    repl_ports = {r: free_port() for r in names}
    cluster = Cluster(factory, names, databases, state_dirs, repl_ports, {}, {**FAST, **settings}, audited=tuple(audit),
                      ca=ca, region_states=states)  # fmt: skip
    if in_memory:
        cluster.network = InMemoryNetwork()
    elif proxies:
        for src in names:
            for dst in names:
                if src != dst:
                    cluster.proxies[(src, dst)] = await TcpProxy("127.0.0.1", repl_ports[dst]).start()
    cluster.write_peers_files()
    try:
        for region in names:
            if region in process:
                await cluster.wait_ready(cluster.start_process(region))
            else:
                await cluster.start(region)
        yield cluster
    finally:
        await cluster.close()
