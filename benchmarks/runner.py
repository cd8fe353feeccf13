"""``python -m benchmarks`` (``make bench``): start everything, measure, write results and plots.

One run starts regionkms (its own PostgreSQL, audit on, N workers), the minimal server in
``work`` (b), ``audit`` (b plus regionkms's durable audit writer and its own PostgreSQL: a
diagnosis) and ``floor`` (c) modes with the same N workers, and moto_server (a); prepares
keys and ciphertexts on each through its API; then measures, in blocks:

    headline  Encrypt 1 KiB at c=32 on every server, interleaved in rounds (A B C D, A B C D)
    ops       each other workload on regionkms and (b), interleaved (A B per workload)
    sweep     Encrypt 1 KiB at each concurrency on regionkms, (b) and (c)
    keys      Encrypt 1 KiB over 1, 1,000, 100,000 keys chosen at random per request, with RSS

Each measurement signs its request set just before it starts, runs a discarded warm-up
and then the measured period. Nothing is committed: the JSON and PNGs land in
``benchmarks/results/`` (or ``--output-dir``) for a person to review and commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from benchmarks import audit_writer_micro, plots, profile, report
from benchmarks.audit_batches import Batches
from benchmarks.harness import (
    MinimalServer,
    MotoServer,
    RegionKmsServer,
    Server,
    audit_module_present,
    recorded_settings,
    server_settings,
    setting_pairs,
)
from benchmarks.loadgen import LoadResult, presign_all, run_load, wrk_available
from benchmarks.report import HEADLINE_CONCURRENCY, HEADLINE_WORKLOAD, Run
from benchmarks.scenarios import WORKLOADS, Call, Fixture, SetupError, create_keys, encrypt, prepare

RESULTS_DIR = Path(__file__).with_name("results")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    duration_s: float
    warmup_s: float
    rounds: int
    ops: tuple[str, ...]
    sweep: tuple[int, ...]
    key_counts: tuple[int, ...]
    writer_counts: tuple[int, ...] = (2, 4)  # the writers block: audit writer processes into one PostgreSQL


FULL = Plan(
    duration_s=10,
    warmup_s=2,
    rounds=2,
    ops=("encrypt_1k", "encrypt_4k", "decrypt", "generate_data_key", "re_encrypt", "mix", "edge"),
    sweep=(1, 8, 32, 128),
    key_counts=(1, 1_000, 100_000),
)
QUICK = Plan(
    duration_s=4,
    warmup_s=1,
    rounds=1,
    ops=("encrypt_1k", "decrypt", "generate_data_key"),
    sweep=(32, 128),
    key_counts=(1, 1_000),
    writer_counts=(2,),
)


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    wrk = ""
    if wrk_available():
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        wrk = (out.stdout or out.stderr).splitlines()[0].split(" [")[0] if (out.stdout or out.stderr) else "wrk"
    try:
        import psutil

        mem_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        mem_gib = 0.0
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk,
    }


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=False
    )
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class CpuMeter:
    """CPU use during one measured run: the server's, the load generator's and everyone else's.

    The machine is shared (2 cores, and other work may run beside a benchmark), so each run
    records where the CPU went: ``server_us_per_request`` (server processes, PostgreSQL
    included for regionkms) is the figure least disturbed by neighbours, and
    ``other_cores`` says how much of the machine something else used meanwhile.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self._wall = time.monotonic()
        self._server_s = server.cpu_seconds()
        self._postgres_s = server.postgres_cpu_seconds()
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._machine = psutil.cpu_times()

    @staticmethod
    def _busy(t: Any) -> float:
        return float(t.user + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + t.nice)

    def stop(self, requests: int) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self._wall)
        server = self._server.cpu_seconds() - self._server_s
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        loadgen = (children.ru_utime - self._children.ru_utime) + (children.ru_stime - self._children.ru_stime)
        machine = self._busy(psutil.cpu_times()) - self._busy(self._machine)
        postgres = self._server.postgres_cpu_seconds() - self._postgres_s
        return {
            "postgres_us_per_request": round(1e6 * postgres / requests, 1) if requests else 0.0,
            "server_cores": round(server / wall, 2),
            "loadgen_cores": round(loadgen / wall, 2),
            "other_cores": round(max(0.0, machine - server - loadgen) / wall, 2),
            "server_us_per_request": round(1e6 * server / requests, 1) if requests else 0.0,
        }


KEYS_WARMUP_PER_S = 250  # keys per second of warm-up by traffic before the steady-state keys run (Bench.keys)
KEYS_WARMUP_MAX_S = 480.0
PRELOAD_TIMEOUT_S = 600.0
QUIET_BUSY_CORES = 0.3  # machine CPU in use, outside any run, below which it counts as quiet
QUIET_WAIT_S = 120.0
DISTURBED_CORES = 0.4  # other work during a run above which the run is repeated
DISTURBED_RETRIES = 2  # repeats of a disturbed run; the least disturbed attempt is kept


def wait_for_quiet(max_wait_s: float = QUIET_WAIT_S) -> float:
    """Wait (up to ``max_wait_s``) until the machine is idle between runs; return the seconds waited.

    Between runs our own servers are idle, so CPU in use then is someone else's (the machine
    may be shared). Starting a run while a neighbour is busy would measure the neighbour.
    """
    started = time.monotonic()
    cores = os.cpu_count() or 1
    while time.monotonic() - started < max_wait_s:
        busy = psutil.cpu_percent(interval=1.0) / 100 * cores
        if busy < QUIET_BUSY_CORES:
            break
    return time.monotonic() - started


class Bench:
    def __init__(self, plan: Plan, servers: dict[str, Server], engine: str) -> None:
        self.plan = plan
        self.servers = servers
        self.engine = engine
        self.fixtures: dict[str, Fixture] = {}
        self.runs: list[Run] = []
        self.notes: list[str] = []
        self.quiet_wait_s = QUIET_WAIT_S
        self.retries = DISTURBED_RETRIES
        self.audit_writer: list[dict[str, Any]] = []  # the writers block's figures, one per writer count

    def measure(
        self,
        block: str,
        name: str,
        workload: str,
        calls: list[Call],
        concurrency: int,
        keys: int = 1,
        round_: int = 0,
        warmup_s: float | None = None,
    ) -> Run | None:
        server = self.servers[name]
        warmup_s = self.plan.warmup_s if warmup_s is None else warmup_s
        best: tuple[LoadResult, dict[str, float], dict[str, Any] | None] | None = None
        for attempt in range(1 + self.retries):
            try:
                measured = self._attempt(server, calls, concurrency, warmup_s)
            except RuntimeError as exc:
                self.notes.append(f"{block}/{name}/{workload}/c{concurrency}: {exc}")
                _say(f"  {name:<15} {workload:<18} c={concurrency:<4} FAILED: {exc}")
                return None
            if best is None or measured[1]["other_cores"] < best[1]["other_cores"]:
                best = measured
            if measured[1]["other_cores"] <= DISTURBED_CORES or attempt == self.retries:
                break
            _say(f"  (disturbed: other work used {measured[1]['other_cores']:.2f} cores during the run; repeating)")
        assert best is not None
        result, usage, batches = best
        run = Run(
            cpu=usage,
            block=block,
            server=name,
            workload=workload,
            concurrency=concurrency,
            keys=keys,
            round=round_,
            result=result.to_json(),
            rss_mb=round(server.rss_bytes() / MIB, 1),
        )
        if batches is not None:
            run.extra["audit_batches"] = batches
        postgres_rss = server.postgres_rss_bytes()
        if postgres_rss:
            run.postgres_rss_mb = round(postgres_rss / MIB, 1)
        self.runs.append(run)
        mean_batch = ""
        if batches is not None and batches["count"]:
            mean_batch = f"  batch {batches['events'] / batches['count']:.1f}"
        _say(
            f"  {name:<15} {workload:<18} c={concurrency:<4} keys={keys:<7} {result.rps:>9.1f} req/s  "
            f"p50 {result.p50_ms:.2f}  p99 {result.p99_ms:.2f} ms  errors {result.errors}  rss {run.rss_mb} MiB"
            f"  pg {usage['postgres_us_per_request']:.0f} us/req{mean_batch}"
        )
        return run

    def _attempt(
        self, server: Server, calls: list[Call], concurrency: int, warmup_s: float
    ) -> tuple[LoadResult, dict[str, float], dict[str, Any] | None]:
        waited = wait_for_quiet(self.quiet_wait_s) if self.quiet_wait_s > 0 else 0.0
        if waited > 2:
            _say(f"  (waited {waited:.0f}s for other work on the machine to finish)")
        requests = presign_all(server.endpoint, calls)
        host, port = server.endpoint.host, server.endpoint.port
        if warmup_s > 0:
            run_load(host, port, requests, concurrency=concurrency, duration_s=warmup_s, engine=self.engine)
        before = self._audit_batches(server)
        cpu = CpuMeter(server)
        result = run_load(host, port, requests, concurrency=concurrency, duration_s=self.plan.duration_s,
                          engine=self.engine)  # fmt: skip
        usage = cpu.stop(result.requests)
        after = self._audit_batches(server) if before is not None else None
        batches = after.minus(before).to_json() if after is not None and before is not None else None
        return result, usage, batches

    def _audit_batches(self, server: Server) -> Batches | None:
        """The server's audit batch histogram, once every batch of the load before is in it (for regiond,
        after its workers' next metrics snapshot: outside the measured period); None without one."""
        settle = server.audit_batches_settle_s()
        if settle > 0:
            time.sleep(settle)
        try:
            return server.audit_batches()
        except (OSError, ValueError) as exc:
            self.notes.append(f"{server.name}: audit batches not read: {exc}")
            return None

    def prepare(self) -> None:
        for name, server in self.servers.items():
            if name == "floor":
                continue
            try:
                self.fixtures[name] = prepare(server.endpoint)
            except SetupError as exc:
                self.notes.append(f"prepare {name}: {exc}")
                _say(f"cannot prepare {name}: {exc}")
        if "floor" in self.servers and "minimal" in self.fixtures:
            self.fixtures["floor"] = self.fixtures["minimal"]  # (c) answers without reading the calls

    def _ready(self, *names: str) -> list[str]:
        return [n for n in names if n in self.servers and n in self.fixtures]

    def headline(self) -> None:
        _say("headline: Encrypt 1 KiB, c=32, interleaved rounds")
        order = self._ready(*report.HEADLINE_SERVERS)
        for r in range(self.plan.rounds):
            for name in order:
                calls = WORKLOADS[HEADLINE_WORKLOAD](self.fixtures[name])
                self.measure("headline", name, HEADLINE_WORKLOAD, calls, HEADLINE_CONCURRENCY, round_=r)

    def ops(self) -> None:
        """Each workload on regionkms and (b), in as many rounds as the headline. Encrypt 1 KiB is
        measured here again so that each operation's ratio to it comes from the same stretch of
        time: the disk's flush latency, which every audited call waits for, drifts by the minute."""
        _say("ops: each workload at c=32, regionkms and minimal interleaved, in rounds")
        for r in range(max(1, self.plan.rounds)):
            for workload in self.plan.ops:
                for name in self._ready("regionkms", "minimal"):
                    calls = WORKLOADS[workload](self.fixtures[name])
                    self.measure("ops", name, workload, calls, HEADLINE_CONCURRENCY, round_=r)

    def sweep(self) -> None:
        """Each concurrency once, but the one a target names (c=128) in as many interleaved rounds as the
        headline, so its ratio is a mean over rounds as the c=32 one is."""
        _say("sweep: Encrypt 1 KiB at each concurrency")
        for concurrency in self.plan.sweep:
            if concurrency == HEADLINE_CONCURRENCY and self.plan.rounds > 0:
                continue  # measured in the headline block
            rounds = max(1, self.plan.rounds) if concurrency == report.HIGH_CONCURRENCY else 1
            for r in range(rounds):
                for name in self._ready("regionkms", "minimal", "floor"):
                    calls = WORKLOADS[HEADLINE_WORKLOAD](self.fixtures[name])
                    self.measure("sweep", name, HEADLINE_WORKLOAD, calls, concurrency, round_=r)

    def writers(self) -> None:
        """The audit writer alone, the region's view: several writer processes into one durable PostgreSQL
        (``audit_writer_micro.several_writers``), 16 submitters each (c=32 over 2 workers)."""
        for count in self.plan.writer_counts:
            _say(f"writers: {count} audit writer processes into one PostgreSQL, {self.plan.duration_s:g}s")
            if self.quiet_wait_s > 0:
                wait_for_quiet(self.quiet_wait_s)
            try:
                figures = audit_writer_micro.several_writers(count, 16, self.plan.duration_s)
            except (RuntimeError, OSError) as exc:
                self.notes.append(f"writers/{count}: {exc}")
                _say(f"  writers {count} FAILED: {exc}")
                continue
            self.audit_writer.append(figures)
            _say(
                f"  {count} writers: {figures['events_per_s']:.0f} events/s, PostgreSQL"
                f" {figures['pg_us_per_event']} us/event ({figures['events_per_pg_cpu_s']} events per PostgreSQL"
                f" CPU-s), batch {figures['batch_mean']}"
            )

    def keys(self) -> None:
        if "regionkms" not in self._ready("regionkms"):
            return
        server, fx = self.servers["regionkms"], self.fixtures["regionkms"]
        key_ids = list(fx.key_ids[:1])
        for count in self.plan.key_counts:
            if count > len(key_ids):
                _say(f"keys: creating {count - len(key_ids):,} keys through CreateKey")
                started = time.monotonic()
                key_ids += create_keys(server.endpoint, count - len(key_ids))
                self.notes.append(f"created {count:,} keys in {time.monotonic() - started:.0f}s")
            calls = encrypt(fx, 1024, key_ids[:count])
            warmup_s = self.plan.warmup_s
            if isinstance(server, RegionKmsServer):  # every count alike, the one-key figure included
                warmup_s = self._restart_with_preload(server, count)
                # Right after the restart (block keys_restart), then in the steady state (block keys):
                # keys are preloaded, but each worker's authorization memo (one entry per principal,
                # key and operation) fills only with traffic, and with a key chosen at random per
                # request a key a worker has seen n times is still cold there with probability e^-n.
                self.measure("keys_restart", "regionkms", HEADLINE_WORKLOAD, calls, HEADLINE_CONCURRENCY,
                             keys=count, warmup_s=warmup_s)  # fmt: skip
                warmup_s = min(KEYS_WARMUP_MAX_S, max(self.plan.warmup_s, count / KEYS_WARMUP_PER_S))
                if warmup_s > self.plan.warmup_s:
                    _say(f"keys: {warmup_s:.0f}s of traffic so every worker's memo holds the {count:,} keys")
            self.measure("keys", "regionkms", HEADLINE_WORKLOAD, calls, HEADLINE_CONCURRENCY, keys=count,
                         warmup_s=warmup_s)  # fmt: skip

    def _restart_with_preload(self, server: RegionKmsServer, count: int) -> float:
        """Restart regiond over ``count`` keys and wait for its workers' cache preload: the steady
        state of a node that has been up a while, reached the way a restarted node reaches it.
        Returns the warm-up to run before measuring.

        Keys made through CreateKey after the workers started are not in their caches (each is
        loaded on its first request, per worker). A restart preloads them all, and how long that
        takes is itself a figure (``preload_s`` in the notes). Without the preload (older
        revisions) the warm-up falls back to traffic, sized as the steady state's (``keys``).
        """
        _say(f"keys: restarting regiond over {count:,} keys")
        started = time.monotonic()
        server.restart()
        try:
            durations = server.wait_for_preload(PRELOAD_TIMEOUT_S)
        except RuntimeError as exc:
            warmup_s = min(KEYS_WARMUP_MAX_S, max(self.plan.warmup_s, count / KEYS_WARMUP_PER_S))
            self.notes.append(f"keys {count:,}: {exc}; {warmup_s:.0f}s warm-up by traffic instead")
            _say(f"keys: {exc}; {warmup_s:.0f}s warm-up by traffic instead")
            return warmup_s
        ready = time.monotonic() - started
        note = (
            f"keys {count:,}: restart to every worker preloaded {ready:.1f}s "
            f"(preload_s per worker: {', '.join(f'{d:.1f}' for d in durations)})"
        )
        self.notes.append(note)
        _say(note)
        return self.plan.warmup_s

    def profile(self, output: Path) -> Path | None:
        server = self.servers.get("regionkms")
        if not isinstance(server, RegionKmsServer) or "regionkms" not in self.fixtures:
            return None
        pids = server.worker_pids()
        started = profile.record(pids[0], self.plan.duration_s) if pids else None
        if started is None:
            self.notes.append("profile skipped: py-spy is not installed (pip install py-spy)")
            return None
        proc, raw_path = started
        requests = presign_all(server.endpoint, WORKLOADS[HEADLINE_WORKLOAD](self.fixtures["regionkms"]))
        result = run_load(
            server.endpoint.host,
            server.endpoint.port,
            requests,
            concurrency=HEADLINE_CONCURRENCY,
            duration_s=self.plan.duration_s,
            engine=self.engine,
        )
        _, err = proc.communicate(timeout=self.plan.duration_s + 60)
        if not raw_path.exists():
            self.notes.append(f"profile failed: {err.decode(errors='replace')[-300:]}")
            return None
        context = (
            f"regiond worker (1 of {len(pids)}), Encrypt 1 KiB, c={HEADLINE_CONCURRENCY}, "
            f"{result.rps:.0f} req/s while sampled; revision {_git_revision()}."
        )
        output.write_text(
            profile.markdown("Profile: regiond worker under Encrypt 1 KiB", raw_path.read_text(), context)
        )
        shutil.rmtree(raw_path.parent, ignore_errors=True)
        return output


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run, about 2 minutes")
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--warmup", type=float, help="discarded warm-up seconds before each run")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the headline block")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes of regiond and (b)/(c)")
    p.add_argument("--servers", default=",".join(report.HEADLINE_SERVERS), help="comma-separated subset")
    p.add_argument("--blocks", default="headline,ops,sweep,keys,writers", help="comma-separated subset")
    p.add_argument("--writers", help="writer process counts of the writers block, e.g. 2,4")
    p.add_argument("--key-counts", help="e.g. 1,1000,100000")
    p.add_argument("--sweep", help="concurrency levels, e.g. 1,8,32,128")
    p.add_argument("--engine", choices=["auto", "wrk", "asyncio"], default="auto")
    p.add_argument("--no-audit", action="store_true", help="regiond without audit (diagnosis only)")
    p.add_argument(
        "--no-fsync", action="store_true", help="regiond's PostgreSQL without fsync (diagnosis only: not durable)"
    )
    p.add_argument(
        "--setting", action="append", default=[], metavar="KEY=VALUE",
        help="a regiond setting for the run (docs/CONFIGURATION.md; repeatable); REGIOND_* variables of this"
        " environment are passed too. Both are checked, and recorded in the results",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="add a py-spy profile of one regiond worker")
    p.add_argument("--name", help="scenario name in the output file names (default: full or quick)")
    p.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-workdir", action="store_true", help="keep server logs and databases")
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="before each run, wait up to this many seconds for the machine to be idle "
        f"(0: never; default {QUIET_WAIT_S:.0f}, or 10 with --quick)",
    )
    return p.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.duration is not None:
        plan = replace(plan, duration_s=args.duration)
    if args.warmup is not None:
        plan = replace(plan, warmup_s=args.warmup)
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    if args.key_counts:
        plan = replace(plan, key_counts=tuple(int(x) for x in args.key_counts.split(",")))
    if args.sweep:
        plan = replace(plan, sweep=tuple(int(x) for x in args.sweep.split(",")))
    if args.writers:
        plan = replace(plan, writer_counts=tuple(int(x) for x in args.writers.split(",")))
    return plan


def async_variant(settings: dict[str, str]) -> dict[str, str]:
    """The ``regionkms_async`` server's settings: the run's (``server_settings``'s variables) with
    ``audit_durability = async`` over them, checked as regiond reads them."""
    from regiond import config

    variables = {**settings, config.BY_KEY["audit_durability"].env: "async"}
    return server_settings({}, variables)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    # SIGTERM (and SIGINT, which a shell ignores in background jobs) must still run main()'s
    # cleanup: servers, PostgreSQL and the work directory.
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    plan = _plan(args)
    engine = args.engine if args.engine != "auto" else ("wrk" if wrk_available() else "asyncio")
    wanted = [s for s in args.servers.split(",") if s]
    blocks = [b for b in args.blocks.split(",") if b]
    try:
        settings = server_settings(setting_pairs(args.setting), os.environ)
    except ValueError as exc:
        raise SystemExit(f"python -m benchmarks: {exc}") from None
    unknown = [name for name in wanted if name not in report.HEADLINE_SERVERS]
    if unknown:
        known = ", ".join(report.HEADLINE_SERVERS)
        raise SystemExit(f"python -m benchmarks: unknown server {unknown[0]!r} (of {known})")
    async_settings = async_variant(settings)
    workdir = Path(tempfile.mkdtemp(prefix="regionkms-bench-"))
    started_at = dt.datetime.now(dt.UTC)
    factories: dict[str, Callable[[], Server]] = {
        "regionkms": lambda: RegionKmsServer(
            workdir / "regionkms",
            workers=args.workers,
            audit=not args.no_audit,
            durable=not args.no_fsync,
            settings=settings,
        ),
        "regionkms_async": lambda: RegionKmsServer(
            workdir / "regionkms_async",
            workers=args.workers,
            audit=not args.no_audit,
            durable=not args.no_fsync,
            settings=async_settings,
            name="regionkms_async",
        ),
        "minimal": lambda: MinimalServer(workdir / "minimal", mode="work", workers=args.workers),
        "minimal_audit": lambda: MinimalServer(
            workdir / "minimal_audit", mode="audit", workers=args.workers, settings=settings
        ),
        "floor": lambda: MinimalServer(workdir / "floor", mode="floor", workers=args.workers),
        "moto": lambda: MotoServer(workdir / "moto"),
    }
    servers: dict[str, Server] = {}
    _say(f"load generator: {engine}; workers: {args.workers}; work dir: {workdir}")
    if settings:
        _say("regiond settings: " + ", ".join(f"{k} = {v}" for k, v in recorded_settings(settings).items()))
    try:
        for name in wanted:
            _say(f"starting {name}")
            servers[name] = factories[name]()
            servers[name].start()
        bench = Bench(plan, servers, engine)
        bench.quiet_wait_s = args.quiet_wait if args.quiet_wait is not None else (10.0 if args.quick else QUIET_WAIT_S)
        bench.retries = 0 if args.quick else DISTURBED_RETRIES
        bench.prepare()
        for block in blocks:
            getattr(bench, block)()
        stamp = started_at.strftime("%Y-%m-%d")
        scenario = args.name or ("quick" if args.quick else "full")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        stem = args.output_dir / f"{stamp}-{scenario}"
        profile_path = bench.profile(stem.with_name(stem.name + "-profile.md")) if args.profile else None
        results: dict[str, Any] = {
            "schema": 1,
            "date": started_at.isoformat(timespec="seconds"),
            "scenario": scenario,
            "revision": _git_revision(),
            "machine": machine(),
            "config": {
                **asdict(plan),
                "workers": args.workers,
                "engine": engine,
                "servers": wanted,
                "audit": not args.no_audit,
                "postgres_fsync": not args.no_fsync,
                "regiond_settings": recorded_settings(settings),
                "regionkms_async_settings": recorded_settings(async_settings),
                "quiet_wait_s": bench.quiet_wait_s,
                "disturbed_retries": bench.retries,
                "audit_module_present": audit_module_present(),
                "wall_time_s": round((dt.datetime.now(dt.UTC) - started_at).total_seconds()),
            },
            "runs": [asdict(r) for r in bench.runs],
            "audit_writer": {"configurations": bench.audit_writer} if bench.audit_writer else None,
            "notes": bench.notes,
        }
        results["summary"] = report.summarize(bench.runs, results["audit_writer"])
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps(results, indent=1) + "\n")
        written = [json_path, *plots.write_plots(results, stem)]
        if profile_path:
            written.append(profile_path)
        print()
        print(report.markdown(results))
        print()
        for note in bench.notes:
            _say(f"note: {note}")
        _say("wrote " + ", ".join(str(p) for p in written))
        return 0
    finally:
        for server in servers.values():
            server.stop()
        if args.keep_workdir:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report_main(argv: list[str]) -> int:
    """``python -m benchmarks report [--plots] [--update] FILE.json...``: print the README tables of
    results files, their summary computed again from their runs by this revision's rules (with
    ``--update``, written back into the file; with ``--plots``, PNGs redrawn beside it)."""
    redraw, update = "--plots" in argv, "--update" in argv
    for path in (Path(a) for a in argv if a not in ("--plots", "--update")):
        results = json.loads(path.read_text())
        runs = [report.Run(**run) for run in results["runs"]]
        results["summary"] = report.summarize(runs, results.get("audit_writer"))
        if update:
            path.write_text(json.dumps(results, indent=1) + "\n")
        print(report.markdown(results))
        if redraw:
            for png in plots.write_plots(results, path.with_suffix("")):
                print(f"redrew {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
