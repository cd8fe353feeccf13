"""The servers under test, each started as its users start it, in a throwaway directory.

- ``RegionKmsServer``: its own PostgreSQL (``regiond.devtools.postgres.LocalPostgres``, durable as in
  production), a state directory from ``regiond init``, an account with an admin user and
  access key written straight into the database (as ``regiond dev`` bootstraps), then
  ``python -m regiond serve ... --workers N`` as a subprocess, audit on unless told otherwise,
  with the server settings it is given (``server_settings``: the caller's ``REGIOND_*``
  variables and ``--setting KEY=VALUE``), which the results record.
- ``MinimalServer``: ``benchmarks.baselines.minimal_server`` in ``work`` (b) or ``floor`` (c) mode.
- ``MotoServer``: ``moto_server`` (a).

Every server exposes an ``Endpoint`` (address, region, credentials) for the load generator
and its resident memory (the server process and all its children; PostgreSQL separately).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psutil

from benchmarks import audit_batches
from benchmarks.audit_batches import Batches
from benchmarks.baselines import moto_runner
from benchmarks.loadgen import PROJECT_ROOT, Endpoint
from kmsclient.sigv4 import Credentials
from regiond.devtools.postgres import LocalPostgres, free_port

if TYPE_CHECKING:
    from regiond.devtools.launcher import NodeProcess

REGION = "us-east-1"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
HOST = "127.0.0.1"


# Settings the harness gives regiond itself (flags of ``NodeProcess``, the state dir's root key, one
# node): the same setting from elsewhere would be overridden by the flag, or would change what the
# harness set up (a REGIOND_AUDIT=false under a run that records "audit: true"), so it is refused.
HARNESS_SETTINGS = frozenset(
    {"region", "database_url", "listen", "workers", "state_dir", "plain_http", "tls_cert", "tls_key", "audit",
     "root_key", "peers_file", "replication_listen", "home_region"}
)  # fmt: skip


AUDIT_SETTING_PREFIX = "REGIOND_AUDIT_"  # the settings of regiond.audit.writer.WriterOptions.from_settings


def server_settings(given: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The settings regiond runs with beyond the harness's own, as ``REGIOND_*`` variables.

    The caller's ``REGIOND_*`` variables (``environ``), then ``given`` (key -> text, the runner's
    ``--setting``) over them. Every one is checked as ``regiond serve`` will read it (an unknown
    name, a bad value), because regiond ignores a variable that is not a setting of its revision:
    a run given ``REGIOND_AUDIT_DURABILITY`` before that setting existed would silently measure
    the default, which is how settings given this way once went unmeasured. ``REGIOND_CONFIG``
    is refused too (a file's settings would not be recorded: give them with ``--setting``).
    ValueError names what is wrong.
    """
    from regiond import config

    chosen: dict[str, str] = {}
    for name, text in environ.items():
        if not name.startswith(config.ENV_PREFIX) or text == "":
            continue
        if name == config.CONFIG_ENV:
            raise ValueError(f"{name} is not passed to the benchmarked server: give its settings with --setting")
        key = name.removeprefix(config.ENV_PREFIX).lower()
        if key not in config.BY_KEY:
            raise ValueError(f"{name} is not a setting of this regiond revision (docs/CONFIGURATION.md)")
        chosen[key] = text
    for key, text in given.items():
        if key not in config.BY_KEY:
            raise ValueError(f"--setting {key}: not a setting of this regiond revision (docs/CONFIGURATION.md)")
        chosen[key] = text
    for key in chosen:
        if key in HARNESS_SETTINGS:
            raise ValueError(f"{key} is set by the benchmark harness itself and cannot be given as a setting")
    variables = {config.BY_KEY[key].env: text for key, text in chosen.items()}
    try:  # the same parse and checks as ``regiond serve`` (the two required ones only stand in)
        config.load(environ={"REGIOND_REGION": REGION, "REGIOND_DATABASE_URL": "postgresql:///x", **variables})
    except config.ConfigError as exc:
        raise ValueError(str(exc)) from None
    return variables


def setting_pairs(pairs: list[str]) -> dict[str, str]:
    """``--setting KEY=VALUE`` arguments as a mapping (the last of a repeated key wins); SystemExit if malformed."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--setting {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def recorded_settings(variables: Mapping[str, str]) -> dict[str, str]:
    """``server_settings``'s variables as a results file records them: by key, secrets redacted."""
    from regiond import config

    out = {}
    for name, text in sorted(variables.items()):
        entry = config.BY_KEY[name.removeprefix(config.ENV_PREFIX).lower()]
        out[entry.key] = str(config.redact(entry, text))
    return out


def _tree_rss_bytes(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _tree_cpu_s(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


class Server:
    """A server subprocess on a loopback port; subclasses say how to start it."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port(HOST)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.credentials = Credentials("AKIABENCHMARKBASELIN", secrets.token_urlsafe(30))

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self.port, REGION, self.credentials)

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=self._log, env={**os.environ, **(env or {})}, cwd=PROJECT_ROOT
        )

    def _wait_ready(self, path: str | None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.workdir}/{self.name}.log"
                )
            try:
                if path is None:
                    with socket.create_connection((HOST, self.port), timeout=1):
                        return
                else:
                    with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=2) as r:
                        if r.status == 200:
                            return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S:.0f}s")

    def start(self) -> None:
        raise NotImplementedError

    def rss_bytes(self) -> int:
        return _tree_rss_bytes(self.proc.pid) if self.proc is not None else 0

    def cpu_seconds(self) -> float:
        """CPU time used so far by everything serving requests (for regionkms, PostgreSQL too)."""
        return _tree_cpu_s(self.proc.pid) if self.proc is not None else 0.0

    def postgres_cpu_seconds(self) -> float:
        """The share of ``cpu_seconds`` that the server's own PostgreSQL used (0: it has none)."""
        return 0.0

    def postgres_rss_bytes(self) -> int:
        return 0

    def audit_batches_settle_s(self) -> float:
        """Seconds to wait after the load stops before ``audit_batches`` counts every batch (0: at once)."""
        return 0.0

    def audit_batches(self) -> Batches | None:
        """The server's audit batches so far (a histogram, cumulative), or None if it writes no audit trail."""
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class _OwnPostgres(Server):
    """A server with its own PostgreSQL (``self.postgres``, started by ``start``): its CPU counts in
    the server's, and it stops with the server."""

    postgres: LocalPostgres | None = None

    def postgres_cpu_seconds(self) -> float:
        return _postgres_cpu_s(self.postgres)

    def postgres_rss_bytes(self) -> int:
        pid = _postmaster_pid(self.postgres)
        return _tree_rss_bytes(pid) if pid else 0

    def cpu_seconds(self) -> float:
        return super().cpu_seconds() + self.postgres_cpu_seconds()

    def stop(self) -> None:
        super().stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


class MinimalServer(_OwnPostgres):
    """Baselines (b) ``work`` and (c) ``floor``; ``audit`` is (b) plus regionkms's durable audit writer.

    In ``audit`` mode the server has its own durable PostgreSQL, as regionkms does, and its CPU
    counts that PostgreSQL's as regionkms's does.
    """

    NAMES = {"work": "minimal", "floor": "floor", "audit": "minimal_audit"}

    def __init__(self, workdir: Path, *, mode: str, workers: int, settings: Mapping[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.mode = mode
        self.workers = workers
        # The run's audit settings (``server_settings``'s variables): the writer measured here is the
        # one regiond runs, with the same options (batch linger, batches in flight, durability).
        self.audit_settings = {k: v for k, v in (settings or {}).items() if k.startswith(AUDIT_SETTING_PREFIX)}
        self.name = self.NAMES[mode]
        self.postgres: LocalPostgres | None = None
        self.database_url = ""

    def environment(self) -> dict[str, str]:
        """What the server process is given beyond this process's environment."""
        env = {
            "BENCH_ACCESS_KEY_ID": self.credentials.access_key_id,
            "BENCH_SECRET_ACCESS_KEY": self.credentials.secret_access_key,
        }
        if self.mode == "audit":
            env["BENCH_DATABASE_URL"] = self.database_url
            env.update(self.audit_settings)
        return env

    def start(self) -> None:
        if self.mode == "audit":
            self.postgres = LocalPostgres(self.workdir / "postgres", durable=True)
            self.database_url = asyncio.run(_create_database(self.postgres.start()))
        env = self.environment()
        self._spawn(
            [
                sys.executable,
                "-m",
                "benchmarks.baselines.minimal_server",
                "--mode",
                self.mode,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--region",
                REGION,
            ],
            env=env,
        )
        self._wait_ready("/healthz")

    def audit_batches(self) -> Batches | None:
        """Its workers share one port and serve no ``/metrics``: the batches are counted in its database
        (one ``audit_segments`` row per batch), bucketed as regiond's histogram is."""
        if self.mode != "audit" or not self.database_url:
            return None
        return audit_batches.from_sizes(asyncio.run(_segment_sizes(self.database_url)), audit_batches.writer_bounds())


async def _segment_sizes(url: str) -> dict[int, int]:
    """Segments per record count in the database at ``url`` (the minimal audit server's)."""
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch("SELECT record_count, count(*) AS n FROM audit_segments GROUP BY record_count")
    finally:
        await con.close()
    return {int(r["record_count"]): int(r["n"]) for r in rows}


class MotoServer(Server):
    name = "moto"

    def start(self) -> None:
        self._spawn(moto_runner.command(HOST, self.port))
        self._wait_ready(None)


def audit_module_present() -> bool:
    return importlib.util.find_spec("regiond.audit") is not None


async def _create_database(admin_url: str) -> str:
    """A new, migrated regionkms database on the server at ``admin_url``; its URL."""
    from regiond.devtools.launcher import migrate
    from regiond.store.databases import ensure_database

    url = await ensure_database(admin_url, "regionkms")
    await migrate(url)
    return url


async def _bootstrap(admin_url: str, state_dir: Path) -> tuple[str, Credentials]:
    """Create the database, migrate, and make the admin user and its access key."""
    from benchmarks.identity import create_bench_user
    from regiond.crypto.keyring import load_file_keyring
    from regiond.store.pool import create_pool

    url = await _create_database(admin_url)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        credentials, _arn = await create_bench_user(pool, load_file_keyring(state_dir / "root.key"))
    finally:
        await pool.close()
    return url, credentials


def server_environment(variables: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmarked regiond: ``base`` (default this process's) without its
    ``REGIOND_*`` variables, plus ``variables`` (``server_settings``: the ones checked and recorded)."""
    base = os.environ if base is None else base
    return {**{k: v for k, v in base.items() if not k.startswith("REGIOND_")}, **variables}


def _postmaster_pid(postgres: LocalPostgres | None) -> int | None:
    if postgres is None:
        return None
    try:
        return int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postgres_cpu_s(postgres: LocalPostgres | None) -> float:
    pid = _postmaster_pid(postgres)
    return _tree_cpu_s(pid) if pid else 0.0


class RegionKmsServer(_OwnPostgres):
    """regiond over its own PostgreSQL. ``settings`` are ``server_settings``'s variables: regiond is
    started with exactly them as its ``REGIOND_*`` environment (none of the caller's others)."""

    name = "regionkms"

    def __init__(
        self, workdir: Path, *, workers: int, audit: bool = True, durable: bool = True,
        settings: Mapping[str, str] | None = None, name: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(workdir)
        if name is not None:
            self.name = name
        self.workers = workers
        self.audit = audit
        self.durable = durable
        self.settings = dict(settings or {})
        self.postgres: LocalPostgres | None = None
        self.database_url = ""
        self._state_dir = self.workdir / "state"
        self._log_offset = 0

    def start(self) -> None:
        from regiond.statedir import init_state_dir

        self._state_dir = self.workdir / "state"
        init_state_dir(self._state_dir, region=REGION)
        self.postgres = LocalPostgres(self.workdir / "postgres", durable=self.durable)
        admin_url = self.postgres.start()
        self.database_url, self.credentials = asyncio.run(_bootstrap(admin_url, self._state_dir))
        self._start_regiond()

    def _start_regiond(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{self.name}.log"
        self._log_offset = log.stat().st_size if log.exists() else 0
        node = self.node_process(log).start()
        self.proc = node.proc
        node.wait_ready(READY_TIMEOUT_S)

    def node_process(self, log: Path) -> NodeProcess:
        """The ``regiond serve`` to start: the harness's flags, and ``settings`` as its environment."""
        from regiond.devtools.launcher import NodeProcess

        return NodeProcess(
            REGION, self.database_url, self._state_dir, self.port, workers=self.workers, audit=self.audit,
            log_path=log, env=server_environment(self.settings),
        )  # fmt: skip

    def audit_batches_settle_s(self) -> float:
        """The node's ``/metrics`` merges its workers' snapshots, each published once per interval."""
        from regiond.runtime.node_metrics import PUBLISH_INTERVAL_S

        return PUBLISH_INTERVAL_S + 0.2 if self.audit else 0.0

    def audit_batches(self) -> Batches | None:
        """The node's ``regionkms_audit_batch_events`` histogram, from its ``/metrics`` (None without audit)."""
        if not self.audit:
            return None
        return audit_batches.scrape(HOST, self.port)

    def restart(self) -> None:
        """Stop regiond and start it again on the same database: fresh workers with cold caches."""
        Server.stop(self)
        self._start_regiond()

    def wait_for_preload(self, timeout_s: float) -> list[float]:
        """Wait until every worker has finished a complete cache preload pass since the last
        start (the ``cache.preload_finished`` log line); the workers' pass durations, in seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            durations = []
            with (self.workdir / f"{self.name}.log").open("rb") as log:
                log.seek(self._log_offset)
                for line in log:
                    if b"cache.preload_finished" in line:
                        event = json.loads(line)
                        if event.get("complete"):
                            durations.append(float(event["duration_s"]))
            if len(durations) >= self.workers:
                return durations
            time.sleep(1.0)
        raise RuntimeError(f"cache preload not finished by every worker after {timeout_s:.0f}s")

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []
        workers = []
        for child in children:
            try:
                if "spawn_main" in " ".join(child.cmdline()):  # not multiprocessing's resource tracker
                    workers.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return workers or [self.proc.pid]

    def _postgres_pid(self) -> int | None:
        return _postmaster_pid(self.postgres)
