"""A rolling upgrade of a region's two nodes, from a previous release to this tree, under load.

A previous release is a fixed older commit of this repository (``PREVIOUS``: the last one with the
v1 audit trail, before migration 0011; and one with audit trail v2 before the newest migration),
extracted with ``git archive`` at run time and run with this venv's dependencies. Two nodes of it
serve one database behind a load balancer that, as a real one does, routes each request to a ready
node (``/readyz``), takes a node out on a 5xx answer until its probe passes again, and takes a node
out before it is stopped. boto3 clients call through it all along. docs/OPERATIONS.md "Upgrading"
is the procedure this follows:

1. ``regiond migrate`` of the new release while the old nodes serve: they go on serving, no call fails.
2. Replace the nodes one at a time (stop, start the new one). From the v1 release: the first new node's
   audit writer closes the v1 chain; the old node still running then fails closed (its calls answer
   KMSInternalException, HTTP 500, which the AWS SDKs retry) and reports itself unready, so the
   balancer moves its traffic. From the v2 release: old and new nodes serve side by side.

Then: no call failed at the client; no attempt failed anywhere but, from the v1 release, 500s of the
old node after the closing, counted and bounded; every acknowledged call has its audit event exactly
once; ciphertexts made by the old release decrypt; ``regiond audit verify`` passes over the closed v1
chain (if any), every writer's segments and the digests. Skipped only where the checkout has no git
history holding the previous release.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import pytest
from aiohttp import web
from botocore.config import Config

from regiond.devtools.postgres import free_port
from tests.support.cluster import ACCOUNT_ID, PgServer
from tests.support.regions import wait_until

pytestmark = pytest.mark.cluster


@dataclass(frozen=True)
class Previous:
    commit: str
    settings: str  # of its TOML file, beyond what every release knows
    applies: str  # what `regiond migrate` of this tree starts with on its schema
    closes_v1: bool  # the first node of this tree closes its audit chain


PREVIOUS = {
    # The last commit before migration 0011: schema 0001-0010, the v1 audit trail (a digest a second).
    "v1-audit": Previous(
        "4487023368d16cef52af34ab01fd6fd189ba4c22", "audit_checkpoint_interval = 1.0\n", "[11, 12, 13", True
    ),
    # Audit trail v2 with schema 0001-0013, before migration 0014 (audit_prunes).
    "v2-audit": Previous("bacd2a18445e3cb7f37d45ca6e790ea5d0218f41", "audit_digest_interval = 0.5\n", "[14", False),
}
THIS_TREE_SETTINGS = "audit_digest_interval = 0.5\n"
REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
LOAD_THREADS = 3
MAX_ATTEMPTS = 5  # botocore's standard retry mode: 500, 502, 503, 504 and throttling are retried
SERVED_PER_PHASE = 30  # acknowledged calls each node answers in a phase before the next step
_SEQ = itertools.count()
# Makes a process of the previous release import its own packages, not this tree's: this venv installs
# the tree in editable mode, through a finder on sys.meta_path that PYTHONPATH does not outrank.
_SITECUSTOMIZE = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
)


def _previous_release(commit: str, dest: Path) -> Path:
    """The previous release's packages under ``dest``, or a skip saying why they cannot be had."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the previous release is extracted from this repository's history")
    probe = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(
            f"this checkout has no git history holding the previous release {commit[:10]} "
            "(a tarball or a shallow clone); a full clone runs this test"
        )
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "regiond", "replication", "kmsclient"],
        capture_output=True, check=True,
    )  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return dest


@dataclass
class Release:
    """How to run ``python -m regiond`` of one release."""

    name: str
    pythonpath: Path | None  # None: this tree
    settings: str = THIS_TREE_SETTINGS

    def env(self, tmp: Path) -> dict[str, str]:
        """The environment of a process run in ``tmp`` (its working directory: ``python -m`` puts that
        first on sys.path, so it must not be a checkout)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_") and k != "PYTHONPATH"}
        if self.pythonpath is not None:
            env["PYTHONPATH"] = str(self.pythonpath)
        env["TMPDIR"] = str(tmp)  # the node's metrics directory
        return env

    def run(self, tmp: Path, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "regiond", *args], env=self.env(tmp), cwd=tmp, capture_output=True, text=True,
            check=False, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{self.name}: regiond {args[0]} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
        return done.stdout


@dataclass
class Backend:
    name: str
    release: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready: bool = False
    in_rotation: bool = True  # False once the operator takes it out (before stopping it)
    ejected: bool = False  # after a 5xx, until its readiness probe passes again
    readmitted: int = 0  # times an ejected backend came back on a passing probe
    served: int = 0  # 2xx answers relayed
    in_flight: int = 0  # requests relayed to it and not yet answered
    unready_because: set[str] = field(default_factory=set)  # the failed checks its probes named


@dataclass
class Attempt:
    backend: str
    release: str
    status: int
    code: str | None
    phase: str
    operation: str  # X-Amz-Target's operation


class Balancer:
    """An HTTP load balancer as deployments put in front of nodes (an ALB, nginx, a Kubernetes ingress):
    one request at a time to the next ready node in rotation, each on its own connection, so that a
    refused connect (a node gone) is tried on another node and nothing is sent twice."""

    def __init__(self) -> None:
        self.backends: list[Backend] = []
        self.failed: list[Attempt] = []
        self.phase = "old"
        self._next = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self._probe: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=30)
        )
        app = web.Application(client_max_size=2**20)
        app.router.add_route("POST", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self._probe = asyncio.create_task(self._probe_loop())

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _routable(self) -> list[Backend]:
        return [b for b in self.backends if b.in_rotation and b.ready and not b.ejected]

    async def _probe_loop(self) -> None:
        assert self._session is not None
        while True:
            for b in list(self.backends):
                try:
                    async with self._session.get(b.url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        answer = await r.json(content_type=None)
                        ready = r.status == 200
                    if not ready:
                        b.unready_because.update(f"{k}: {v}" for k, v in answer["checks"].items() if v != "ok")
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    ready = False
                if ready and b.ejected:
                    b.ejected, b.readmitted = False, b.readmitted + 1
                b.ready = ready
            await asyncio.sleep(0.1)

    async def _relay(self, request: web.Request) -> web.Response:
        try:
            return await self._route(request)
        except TimeoutError:  # the node did not answer within the balancer's timeout
            return web.Response(status=504, text="gateway timeout")

    async def _route(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "content-length")}
        for _ in range(100):  # a bound: about 5 s without any routable node
            routable = self._routable()
            if not routable:
                await asyncio.sleep(0.05)
                continue
            b = routable[next(self._next) % len(routable)]
            b.in_flight += 1
            try:
                async with self._session.post(b.url + request.path_qs, data=body, headers=headers) as resp:
                    data = await resp.read()
                    status, out = resp.status, {k: v for k, v in resp.headers.items() if k.lower() in _RELAYED}
            except aiohttp.ClientConnectorError:  # not connected, nothing sent: next node
                b.ready = False
                continue
            except aiohttp.ClientError:  # sent, then cut: the client decides (a 502, which the SDKs retry)
                self.failed.append(Attempt(b.name, b.release, 502, None, self.phase, _operation(request)))
                return web.Response(status=502, text="bad gateway")
            finally:
                b.in_flight -= 1
            if status >= 500:
                b.ejected = True
                code = json.loads(data).get("__type") if data.startswith(b"{") else None
                self.failed.append(Attempt(b.name, b.release, status, code, self.phase, _operation(request)))
            elif status < 300:
                b.served += 1
            return web.Response(status=status, body=data, headers=out)
        return web.Response(status=503, text="no node ready")


def _operation(request: web.Request) -> str:
    return request.headers.get("X-Amz-Target", "").rpartition(".")[2]


_RELAYED = ("content-type", "x-amzn-requestid")


class Load:
    """boto3 clients calling through the balancer until stopped; every acknowledged call is recorded."""

    def __init__(self, endpoint: str, key_id: str, secret: str, keys: list[str]) -> None:
        self.keys = keys
        self.acked: list[tuple[str, str]] = []  # (operation, request id) of every 2xx answer
        self.failures: list[str] = []
        self.created: list[str] = []  # keys whose CreateKey was acknowledged
        self.ciphertexts: list[tuple[bytes, bytes, dict[str, str]]] = []  # (ciphertext, plaintext, context)
        self.retries = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i, endpoint, key_id, secret), daemon=True)
            for i in range(LOAD_THREADS)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def halt(self) -> None:
        """Stop starting calls (the current ones finish)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, n: int, endpoint: str, key_id: str, secret: str) -> None:
        kms = _client(endpoint, key_id, secret)
        rng = random.Random(n)
        for i in itertools.count():
            if self._stop.is_set():
                return
            try:
                if i % 10 == 9:
                    out = kms.create_key(Description=f"load {n}-{i}")
                    self._ack("CreateKey", out, created=out["KeyMetadata"]["KeyId"])
                    continue
                plaintext = rng.randbytes(32)
                context = {"thread": str(n), "call": str(i)}
                enc = kms.encrypt(KeyId=rng.choice(self.keys), Plaintext=plaintext, EncryptionContext=context)
                self._ack("Encrypt", enc, ciphertext=(enc["CiphertextBlob"], plaintext, context))
                dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=context)
                self._ack("Decrypt", dec)
                if dec["Plaintext"] != plaintext:
                    self.failures.append(f"Decrypt returned other bytes (thread {n}, call {i})")
            except Exception as exc:  # a failure the SDK's retries did not absorb
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def _ack(
        self,
        op: str,
        out: dict[str, Any],
        *,
        created: str | None = None,
        ciphertext: tuple[bytes, bytes, dict[str, str]] | None = None,
    ) -> None:
        meta = out["ResponseMetadata"]
        with self._lock:
            self.acked.append((op, meta["RequestId"]))
            self.retries += int(meta.get("RetryAttempts", 0))
            if created is not None:
                self.created.append(created)
            if ciphertext is not None:
                self.ciphertexts.append(ciphertext)


def _client(endpoint: str, key_id: str, secret: str) -> Any:
    return boto3.client(
        "kms", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}, connect_timeout=5, read_timeout=30),
    )  # fmt: skip


def _config(path: Path, *, url: str, state_dir: Path, port: int, extra: str) -> Path:
    path.write_text(
        f'region = "{REGION}"\ndatabase_url = "{url}"\nstate_dir = "{state_dir}"\nlisten = "127.0.0.1:{port}"\n'
        f'workers = 1\nplain_http = true\nleader_poll = 0.2\nlog_level = "info"\n{extra}'
    )
    return path


@asynccontextmanager
async def _node(
    name: str, release: Release, lb: Balancer, tmp: Path, *, url: str, state_dir: Path
) -> AsyncIterator[Backend]:
    """A node of ``release`` (one worker: the process is the worker, so the previous release's process
    imports only its own packages), put in the balancer's rotation once ready; taken out before stopped."""
    port = free_port()
    config = _config(tmp / f"{name}.toml", url=url, state_dir=state_dir, port=port, extra=release.settings)
    private_tmp = tmp / f"{name}-tmp"
    private_tmp.mkdir()
    log = tmp / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not waited on here
            [sys.executable, "-m", "regiond", "serve", "--config", str(config)],
            stdout=out, stderr=out, env=release.env(private_tmp), cwd=private_tmp, start_new_session=True,
        )  # fmt: skip
    backend = Backend(name, release.name, f"http://127.0.0.1:{port}", proc, log)

    async def ready() -> bool:
        assert proc.poll() is None, f"{name} exited:\n" + log.read_text()[-3000:]
        return backend.ready

    lb.backends.append(backend)
    try:
        await wait_until(ready, timeout_s=90, what=f"{name} to be ready")
        yield backend
    finally:
        await _stop(backend)


async def _stop(b: Backend) -> None:
    """Stop a node as a rolling update does: out of the balancer's rotation, its requests in flight
    answered (a load balancer's deregistration delay, a Kubernetes preStop hook), then SIGTERM (the node
    drains and stops) and, past a bound, SIGKILL."""
    b.in_rotation = False

    async def drained() -> bool:
        return b.in_flight == 0

    await wait_until(drained, timeout_s=30, what=f"{b.name}'s requests in flight to be answered")
    if b.proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(b.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(b.proc.wait), timeout=40)
        except TimeoutError:
            os.killpg(b.proc.pid, signal.SIGKILL)
            b.proc.wait()


async def _empty_database(pg: PgServer) -> str:
    """A database with no schema: the previous release makes its own."""
    name = f"upgrade_{next(_SEQ)}_{os.getpid()}"
    con = await asyncpg.connect(pg.admin_url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return pg.url_for(name)


async def _served(b: Backend, at_least: int) -> None:
    start = b.served
    await wait_until(lambda: _at_least(b, start + at_least), timeout_s=60, what=f"{b.name} to answer {at_least} calls")


async def _at_least(b: Backend, n: int) -> bool:
    return b.served >= n


@pytest.mark.timeout(240)
@pytest.mark.parametrize("previous", list(PREVIOUS))
async def test_rolling_upgrade_from_a_previous_release_under_load(
    pg_server: PgServer, tmp_path: Path, previous: str
) -> None:
    release = PREVIOUS[previous]
    old = Release("previous release", _previous_release(release.commit, tmp_path / "previous"), release.settings)
    new = Release("this tree", None)
    url = await _empty_database(pg_server)
    state_dir = tmp_path / "state"  # the region's, shared by its nodes (root key, identity, anchors)
    old.run(tmp_path, "init", "--state-dir", str(state_dir), "--region", REGION)
    old.run(tmp_path, "migrate", "--database-url", url)
    iam = ("iam", "--database-url", url, "--state-dir", str(state_dir), "--region", REGION)
    old.run(tmp_path, *iam, "create-account", "--account-id", ACCOUNT_ID)
    access = json.loads(old.run(tmp_path, *iam, "create-access-key", "--account-id", ACCOUNT_ID, "--root"))
    key_id, secret = access["access_key_id"], access["secret_access_key"]

    lb = Balancer()
    await lb.start()
    load: Load | None = None
    try:
        async with (
            _node("old-a", old, lb, tmp_path, url=url, state_dir=state_dir) as old_a,
            _node("old-b", old, lb, tmp_path, url=url, state_dir=state_dir) as old_b,
        ):
            try:
                kms = await asyncio.to_thread(_client, lb.url, key_id, secret)
                keys = [(await asyncio.to_thread(kms.create_key))["KeyMetadata"]["KeyId"] for _ in range(3)]
                load = Load(lb.url, key_id, secret, keys)
                load.start()
                await asyncio.gather(_served(old_a, SERVED_PER_PHASE), _served(old_b, SERVED_PER_PHASE))
                made_by_old = list(load.ciphertexts)

                # 1. The new release's migrations while the old nodes serve: they go on, nothing fails.
                lb.phase = "migrated"
                applied = await asyncio.to_thread(new.run, tmp_path, "migrate", "--database-url", url)
                assert f"applied migrations: {release.applies}" in applied, applied
                await asyncio.gather(_served(old_a, SERVED_PER_PHASE), _served(old_b, SERVED_PER_PHASE))
                assert lb.failed == [] and load.failures == [], (lb.failed, load.failures)

                # 2. Replace a: its node is taken out, drained and stopped; the new node starts. From the v1
                # release, it closes the v1 chain and b fails closed from its next call on; from the v2
                # release, b serves on beside it.
                lb.phase = "mixed"
                await _stop(old_a)
                async with _node("new-a", new, lb, tmp_path, url=url, state_dir=state_dir) as new_a:
                    await _served(new_a, SERVED_PER_PHASE)
                    if release.closes_v1:
                        await wait_until(lambda: _refused(old_b), timeout_s=60, what="old-b to fail closed")
                    else:
                        await _served(old_b, SERVED_PER_PHASE)
                        assert lb.failed == [], lb.failed

                    # 3. Replace b.
                    lb.phase = "replacing b"
                    await _stop(old_b)
                    lb.phase = "new"
                    async with _node("new-b", new, lb, tmp_path, url=url, state_dir=state_dir) as new_b:
                        await asyncio.gather(_served(new_a, SERVED_PER_PHASE), _served(new_b, SERVED_PER_PHASE))
                        await asyncio.to_thread(load.stop)
                        assert load.acked, "no call was acknowledged"

                        # What the old release encrypted decrypts on the new nodes.
                        for blob, plaintext, context in made_by_old:
                            out = await asyncio.to_thread(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)
                            assert out["Plaintext"] == plaintext
                        for created in load.created:  # every acknowledged CreateKey is there
                            meta = (await asyncio.to_thread(kms.describe_key, KeyId=created))["KeyMetadata"]
                            assert meta["KeyState"] == "Enabled"
                        region_keys = await asyncio.to_thread(_all_keys, kms)
                        await _wait_for_digest(url)
                        verify = await asyncio.to_thread(
                            new.run, tmp_path, "audit", "verify", "--database-url", url, "--state-dir", str(state_dir)
                        )
                        events = await asyncio.to_thread(
                            new.run,
                            tmp_path,
                            "audit",
                            "query",
                            "--database-url",
                            url,
                            "--since",
                            "1h",
                            "--limit",
                            "1000000",
                        )
            except BaseException:  # stop the load first: the nodes then stop without clients waiting on them
                if load is not None:
                    load.halt()
                raise
            refusals = _trigger_refusals(old_b.log)
    finally:
        if load is not None:
            await asyncio.to_thread(load.stop)
        await lb.close()
        await pg_server.drop_database(url)

    # No call failed at the client; every failed attempt was the previous release's node refusing, after
    # the closing, what it could not audit (HTTP 500 KMSInternalException, retried by the SDK).
    assert load.failures == [], load.failures[:5]
    assert all(
        (a.release, a.status, a.code, a.backend) == ("previous release", 500, "KMSInternalException", "old-b")
        for a in lb.failed
    ), lb.failed
    assert all(a.phase in ("mixed", "replacing b") for a in lb.failed), lb.failed
    # Bounded: the balancer takes a node out on its first 5xx; only the calls already on their way to it,
    # at most one per client thread, fail with it, and again only after a passing probe re-admitted it.
    assert len(lb.failed) <= LOAD_THREADS * (1 + old_b.readmitted), (len(lb.failed), old_b.readmitted)
    if release.closes_v1:
        assert refusals > 0 and "audit: audit writes are failing" in old_b.unready_because
    else:
        assert lb.failed == [] and refusals == 0, lb.failed
    print(
        f"rolling upgrade from {previous}: {len(load.acked)} calls acknowledged, {len(lb.failed)} attempts"
        f" refused by the previous release (all retried), {load.retries} SDK retries"
    )

    # Every acknowledged call has its audit event, once; verify passes the closed v1 chain and the writers.
    by_request = Counter(json.loads(line)["requestID"] for line in events.splitlines() if line.strip())
    missing = [(op, rid) for op, rid in load.acked if by_request[rid] != 1]
    assert not missing, f"{len(missing)} acknowledged calls without exactly one audit event: {missing[:5]}"
    assert "OK: " in verify, verify
    # A refused CreateKey may have made its key before its event failed (docs/OPERATIONS.md "Upgrading"):
    # every key without a CreateKey event is one of those, never a key some acknowledged call made.
    records = [json.loads(line) for line in events.splitlines() if line.strip()]
    evented = {
        r["responseElements"]["keyMetadata"]["keyId"]
        for r in records
        if r["eventName"] == "CreateKey" and r.get("responseElements")
    }
    unrecorded = region_keys - evented
    assert len(unrecorded) <= sum(1 for a in lb.failed if a.operation == "CreateKey"), (unrecorded, lb.failed)
    print(f"keys made by a refused CreateKey, without an event: {len(unrecorded)}")


def _all_keys(kms: Any) -> set[str]:
    return {k["KeyId"] for page in kms.get_paginator("list_keys").paginate() for k in page["Keys"]}


async def _refused(b: Backend) -> bool:
    """The node of the previous release refused to append to the closed v1 chain (the trigger of 0011:
    feature_not_supported, 0A000) and said so in its readiness."""
    return "audit: audit writes are failing" in b.unready_because and _trigger_refusals(b.log) > 0


def _trigger_refusals(log: Path) -> int:
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return sum(1 for e in lines if e.get("event") == "audit.write_failed" and e.get("sqlstate") == "0A000")


async def _wait_for_digest(url: str) -> None:
    """Wait for a v2 digest signed after the last segment: verify then has every writer's head signed."""

    async def signed() -> bool:
        con = await asyncpg.connect(url)
        try:
            return bool(
                await con.fetchval(
                    "SELECT (SELECT max(digest_time) FROM audit_digests_v2)"
                    " >= (SELECT max(last_time) FROM audit_segments)"
                )
            )
        finally:
            await con.close()

    await wait_until(signed, timeout_s=30, what="a digest over every writer's last segment")
