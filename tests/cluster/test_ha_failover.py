"""The region's database on PostgreSQL's own high availability: kill the primary under load, promote
its synchronous standby, and the node carries on without a restart, losing nothing it acknowledged.

A primary and a synchronous streaming standby are started from the same binaries (``LocalPostgres``:
initdb, ``pg_basebackup -R``, ``synchronous_standby_names``; ports from the OS). A real node
(in-process aiohttp on loopback, boto3 with SigV4) reaches them through a multi-host URL with
``target_session_attrs=read-write``. Three clients call CreateKey (with a tag) and Encrypt in a loop,
each with one attempt (no SDK retry), while every process of the primary is SIGKILLed and the standby
promoted. Then:

- every call in between failed with an AWS error a client retries (KMSInternalException or
  DependencyTimeoutException), none with a transport error, and nothing was logged with a traceback;
- ``/readyz`` said 503 while no primary was up, 200 again after the promotion, with no node restart,
  and the node's leadership lock sessions hold every region-wide task's lock on the new primary;
- every key whose CreateKey returned 200 exists on the new primary with its tag, and every ciphertext
  Encrypt returned decrypts;
- every call answered 200 has its audit event on the new primary, and ``regiond audit verify`` passes.

The phases wait on conditions with deadlines, never on timings (docs/OPERATIONS.md, High availability).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from regiond.devtools.postgres import LocalPostgres
from regiond.store.locks import LEADER_LOCKS
from tests.support.aws import aws_call
from tests.support.cluster import Identity, Node, NodeFactory
from tests.support.regions import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

STANDBY_NAME = "standby1"
CLIENTS = 3
RETRYABLE = {"KMSInternalException", "DependencyTimeoutException"}


@dataclass
class Load:
    """What the clients saw: every acknowledged write and call, every failure by its code."""

    keys: dict[str, str] = field(default_factory=dict)  # key id -> its tag value, CreateKey answered 200
    ciphertexts: list[tuple[str, bytes]] = field(default_factory=list)  # (key id, blob), Encrypt answered 200
    request_ids: set[str] = field(default_factory=set)  # of every call answered 200
    failures: dict[str, int] = field(default_factory=dict)  # AWS error code (or transport error) -> count
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def acknowledged(self) -> int:
        with self.lock:
            return len(self.keys)

    def run(self, client: Any, name: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            tag = f"{name}-{n}"
            try:
                made = client.create_key(Description=tag, Tags=[{"TagKey": "n", "TagValue": tag}])
                key_id = made["KeyMetadata"]["KeyId"]
                with self.lock:
                    self.keys[key_id] = tag
                    self.request_ids.add(made["ResponseMetadata"]["RequestId"])
                sealed = client.encrypt(KeyId=key_id, Plaintext=tag.encode())
                with self.lock:
                    self.ciphertexts.append((key_id, sealed["CiphertextBlob"]))
                    self.request_ids.add(sealed["ResponseMetadata"]["RequestId"])
            except botocore.exceptions.ClientError as exc:
                code = str(exc.response["Error"]["Code"])
                with self.lock:
                    self.failures[code] = self.failures.get(code, 0) + 1
                self.stop.wait(0.05)  # a client backing off before its next call
            except botocore.exceptions.BotoCoreError as exc:  # the node itself not answering
                with self.lock:
                    self.failures[type(exc).__name__] = self.failures.get(type(exc).__name__, 0) + 1
                self.stop.wait(0.05)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[LocalPostgres, LocalPostgres]]:
    """A running primary (durable: synchronous commits) and its streaming standby, not yet synchronous."""
    primary = LocalPostgres(tmp_path / "pg-a")
    standby = LocalPostgres(tmp_path / "pg-b")
    try:
        primary.start()
        standby.init_standby(primary, STANDBY_NAME)
        standby.start()
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()  # a no-op once it was killed


async def _sync_state(url: str) -> str | None:
    con = await asyncpg.connect(url)
    try:
        state = await con.fetchval("SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                                   STANDBY_NAME)  # fmt: skip
    finally:
        await con.close()
    return None if state is None else str(state)


def _kill_every_process(server: LocalPostgres) -> None:
    """SIGKILL the postmaster and each of its children at once, as a machine that loses power."""
    postmaster = server.postmaster_pid()
    assert postmaster is not None
    pids = {postmaster}
    for status in Path("/proc").glob("[0-9]*/status"):
        with suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            if int(fields.get("PPid", "0")) == postmaster:
                pids.add(int(status.parent.name))
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _ready(node: Node) -> int:
    async with aiohttp.ClientSession() as session, session.get(node.endpoint + "/readyz") as resp:
        return resp.status


def _client(node: Node, identity: Identity) -> Any:
    """A KMS client that makes one attempt per call: every failure is seen, none retried away."""
    return boto3.client(
        "kms", endpoint_url=node.endpoint, region_name=node.region, aws_access_key_id=identity.access_key_id,
        aws_secret_access_key=identity.secret_access_key,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )  # fmt: skip


def _regiond(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    return subprocess.run([sys.executable, "-m", "regiond", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


async def test_primary_killed_under_load_standby_promoted_nothing_acknowledged_lost(
    pair: tuple[LocalPostgres, LocalPostgres], nodes: NodeFactory, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    primary, standby = pair
    single = primary.url()
    url = single.replace(f"@127.0.0.1:{primary.port}/", f"@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/")
    url += "?target_session_attrs=read-write"
    admin = await asyncpg.connect(single)
    try:  # set after the base backup, so the standby's copy has none: once promoted it waits for no one
        await admin.execute(f"ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ({STANDBY_NAME})'")
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    await wait_until(lambda: _is_sync(single), what="the standby to be synchronous")

    # A small failed-authentication burst: a credential lookup that meets the outage (every cache is
    # emptied when the LISTEN connection drops) is a server fault, not a failed authentication, and
    # must not get the clients' shared source throttled.
    node = await nodes.start(database_url=url, auth_failure_burst=2)
    identity: Identity = await nodes.identity(node)
    load = Load()
    clients = [_client(node, identity) for _ in range(CLIENTS)]
    workers = [asyncio.create_task(asyncio.to_thread(load.run, c, f"c{i}")) for i, c in enumerate(clients)]
    try:
        await wait_until(lambda: _at_least(load, 10), timeout_s=60, what="acknowledged writes before the kill")
        killed_at = time.monotonic()
        _kill_every_process(primary)
        await wait_until(lambda: _status_is(node, 503), what="/readyz to say not ready without a primary")
        await wait_until(lambda: _failed_at_least(load, 4 * CLIENTS), what="calls to fail while there is no primary")
        acked_in_outage = load.acknowledged()
        promoted_at = time.monotonic()
        standby.promote()
        await wait_until(lambda: _status_is(node, 200), timeout_s=60, what="/readyz to say ready after promotion")
        unready_s, back_s = time.monotonic() - killed_at, time.monotonic() - promoted_at
        await wait_until(lambda: _at_least(load, acked_in_outage + 10), timeout_s=60,
                         what="writes acknowledged by the promoted standby")  # fmt: skip
        # The dedicated lock sessions reconnected too: the node leads every region-wide task again.
        await wait_until(lambda: _leads_every_task(standby.url()), what="every leader lock held on the new primary")
    finally:
        load.stop.set()
        await asyncio.gather(*workers)

    # Every failure was one a client retries, and the node answered each (no transport error).
    assert load.failures and set(load.failures) <= RETRYABLE, load.failures
    out = capsys.readouterr()
    logged = out.out + out.err + caplog.text
    where = logged.find("Traceback")
    assert where < 0, logged[max(0, where - 300) : where + 3000]
    assert "request.failed" not in logged
    print(f"acknowledged: {len(load.keys)} CreateKey, {len(load.ciphertexts)} Encrypt; failed: {load.failures};"
          f" unready {unready_s:.2f} s from the SIGKILL, ready {back_s:.2f} s after pg_ctl promote began")  # fmt: skip

    # Every acknowledged write is on the new primary, read back through the same node.
    client = node.client(identity)
    pages = await asyncio.to_thread(lambda: list(client.get_paginator("list_keys").paginate()))
    listed = {k["KeyId"] for page in pages for k in page["Keys"]}
    assert set(load.keys) <= listed
    for key_id, tag in load.keys.items():
        tags = await aws_call(client.list_resource_tags, KeyId=key_id)
        assert tags["Tags"] == [{"TagKey": "n", "TagValue": tag}]
    for key_id, blob in load.ciphertexts:
        opened = await aws_call(client.decrypt, CiphertextBlob=blob)
        assert opened["KeyId"].endswith(key_id)

    # Every acknowledged call's audit event is there, and the trail verifies.
    queried = await asyncio.to_thread(_regiond, "audit", "query", "--database-url", standby.url(), "--limit", "100000")
    assert queried.returncode == 0, queried.stderr
    audited = {json.loads(line)["requestID"] for line in queried.stdout.splitlines() if line.strip()}
    assert load.request_ids <= audited, f"{len(load.request_ids - audited)} acknowledged calls have no event"
    verified = await asyncio.to_thread(
        _regiond, "audit", "verify", "--database-url", standby.url(), "--state-dir", str(node.state_dir),
        "--format", "json",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (report,) = [json.loads(line) for line in verified.stdout.splitlines() if line.strip()]
    assert report["ok"] and not report["findings"] and report["segmentsChecked"] > 0, report


async def _leads_every_task(url: str) -> bool:
    con = await asyncpg.connect(url)
    try:
        held = await con.fetch(
            "SELECT (classid::bigint << 32) | objid::bigint AS id FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
    finally:
        await con.close()
    return {int(lock) for lock in LEADER_LOCKS.values()} <= {int(r["id"]) for r in held}


async def _is_sync(url: str) -> bool:
    return await _sync_state(url) == "sync"


async def _at_least(load: Load, n: int) -> bool:
    return load.acknowledged() >= n


async def _failed_at_least(load: Load, n: int) -> bool:
    with load.lock:
        return sum(load.failures.values()) >= n


async def _status_is(node: Node, status: int) -> bool:
    return await _ready(node) == status
