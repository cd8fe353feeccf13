"""Where the CPU of one Encrypt 1 KiB goes, in regionkms and next to the minimal server: the table
of benchmarks/README.md "Where the CPU goes", regenerated.

    python -m benchmarks.cpu_table [--duration 5] [--rounds 2] [--workers 2] [--no-micro]
                                   [--setting KEY=VALUE] [--out FILE.json] [--update-readme]

One run starts the servers of ``python -m benchmarks`` (floor, minimal, minimal_audit, regionkms)
and regionkms without audit (``--no-audit``: what the audit trail costs regionkms itself), then:

1. **CPU accounting**, as the runner does it (``runner.CpuMeter``): Encrypt 1 KiB at c=32 on each
   server, interleaved in ``--rounds`` rounds, the CPU of the server's process tree per request and
   its PostgreSQL's share.
2. **Profiler samples**: one more run per server with py-spy (``pip install py-spy``) sampling one
   worker; each sample goes to the first component, from the innermost frame out, whose code it is in
   (``COMPONENTS``: SigV4, validation, authorization, the audit event, asyncpg, logging, metrics,
   aiohttp, the event loop...). A component's share of the samples times the workers' CPU per
   request during that run is its microseconds per request; the rest of the tree (the supervisor)
   and PostgreSQL are measured directly.
3. **In process** (``benchmarks.hotpath_micro --minimal``, unless ``--no-micro``): ``routes.handle``
   and the minimal server's handler on the same requests, without HTTP, event loop or audit writer.

Ratios within one run are what to read: the machine has two cores that other work may share
(``others' cores`` says how much it took meanwhile), and the host's speed drifts. py-spy samples
one worker and costs it a little CPU; the sampled run is not one of the accounting runs.
``--update-readme`` writes the table between the ``cpu-table`` markers of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from benchmarks import profile
from benchmarks.harness import (
    MinimalServer,
    RegionKmsServer,
    Server,
    recorded_settings,
    server_settings,
    setting_pairs,
)
from benchmarks.loadgen import presign_all, run_load, wrk_available
from benchmarks.report import HEADLINE_CONCURRENCY, HEADLINE_WORKLOAD
from benchmarks.runner import Bench, CpuMeter, Plan, _git_revision, machine
from benchmarks.scenarios import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
README = Path(__file__).with_name("README.md")
RESULTS_DIR = Path(__file__).with_name("results")
SERVERS = ("floor", "minimal", "minimal_audit", "regionkms_noaudit", "regionkms")
LABELS = {
    "floor": "floor (c)",
    "minimal": "minimal (b)",
    "minimal_audit": "minimal_audit",
    "regionkms_noaudit": "regionkms, no audit",
    "regionkms": "regionkms",
}

# (component, pattern over a py-spy frame's file, pattern over its function or None). A sample counts
# for the first component that one of its frames matches, innermost frame first: hmac called by the
# SigV4 code is SigV4, a dict lookup in the authorizer is authorization, aiohttp writing the response
# after the handler returned is HTTP. py-spy names files from their package (``aiohttp/web.py``,
# ``regiond/auth/sigv4.py``) and functions with their class; the minimal server's own methods
# (``_Work.seal``) are matched by name, so that its columns split as regionkms's do.
_MINIMAL = r"(^|/)minimal_server\.py$"
COMPONENTS: tuple[tuple[str, str, str | None], ...] = (
    ("audit: asyncpg (the writer's client)", r"(^|/)asyncpg/", None),
    ("audit: event, batch, chain (worker side)", r"(^|/)regiond/audit/", None),
    ("audit: event, batch, chain (worker side)", _MINIMAL, r"_record$|^_with_audit$"),
    ("logging (structlog)", r"(^|/)structlog/|(^|/)regiond/logging\.py$", None),
    ("metrics (prometheus_client)", r"(^|/)prometheus_client/|(^|/)regiond/runtime/(node_)?metrics\.py$", None),
    ("SigV4 and authentication", r"(^|/)regiond/auth/|(^|/)kmsclient/sigv4\.py$", None),
    ("SigV4 and authentication", _MINIMAL, r"\.signing_key$"),
    (
        "authorization (policies, grants, memo)",
        r"(^|/)regiond/service/(authz|iam_authz|grants)\.py$|(^|/)regiond/domain/(policy|policy_conditions"
        r"|key_conditions|permissions|decision|grants)\.py$",
        None,
    ),
    ("request validation and rendering (shapes)", r"(^|/)regiond/protocol/(iam_)?shapes\.py$", None),
    ("key resolution, AES-GCM, ciphertext format", r"(^|/)regiond/(service|crypto|domain)/|(^|/)regiond/cache\.py$",
     None),
    ("key resolution, AES-GCM, ciphertext format", _MINIMAL, r"\.(seal|unseal|dispatch)$"),
    ("base64, JSON (stdlib)", r"^base64\.py$|^json/", None),
    ("operation handlers (protocol/ops)", r"(^|/)regiond/protocol/ops/", None),
    ("request ids, clock", r"(^|/)regiond/(randomids|clock)\.py$|^uuid\.py$", None),
    ("request path (routes.handle, the handler itself)", r"(^|/)regiond/protocol/", None),
    ("request path (routes.handle, the handler itself)", _MINIMAL, r"\.handle$|^_floor$"),
    ("HTTP listener bounds", r"(^|/)regiond/runtime/listener\.py$", None),
    ("HTTP (aiohttp, multidict, yarl)", r"(^|/)(aiohttp|multidict|yarl)/", None),
    ("event loop (uvloop, asyncio)", r"^asyncio/|(^|/)uvloop/|(^|/)regiond/runtime/serve\.py$|^threading\.py$",
     None),
    ("event loop (uvloop, asyncio)", _MINIMAL, r"^(run_worker|_serve)$"),
)
OTHER = "other"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_COMPILED = tuple(
    (name, re.compile(file), re.compile(func) if func else None) for name, file, func in COMPONENTS
)


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def classify(stack: list[str]) -> str:
    """The component of one sample (``stack``: py-spy frames, outermost first)."""
    for frame in reversed(stack):
        m = _FRAME.match(frame.strip())
        if m is None:
            continue
        func, file = m.group("func"), m.group("file")
        for name, file_pattern, func_pattern in _COMPILED:
            if file_pattern.search(file) and (func_pattern is None or func_pattern.search(func)):
                return name
    return OTHER


def components(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, samples per component, innermost frames of the samples left as ``other``) of py-spy's
    collapsed-stack output."""
    per: Counter[str] = Counter()
    unclassified: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = [f for f in stack_text.split(";") if f]
        n = int(count)
        samples += n
        name = classify(stack)
        per[name] += n
        if name == OTHER and stack:
            unclassified[profile._short(stack[-1])] += n
    return samples, per, unclassified


def worker_pids(server: Server) -> list[int]:
    """The server's worker processes (spawned by multiprocessing), else the server process itself."""
    if server.proc is None:
        return []
    try:
        children = psutil.Process(server.proc.pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids or [server.proc.pid]


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def sampled_run(server: Server, calls: list[Any], duration_s: float, warmup_s: float, engine: str) -> dict[str, Any]:
    """One Encrypt run with py-spy on a worker: the components' microseconds per request."""
    requests = presign_all(server.endpoint, calls)
    host, port = server.endpoint.host, server.endpoint.port
    run_load(host, port, requests, concurrency=HEADLINE_CONCURRENCY, duration_s=warmup_s, engine=engine)
    pids = worker_pids(server)
    started = profile.record(pids[0], duration_s)
    if started is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    proc, raw_path = started
    meter = CpuMeter(server)
    workers0 = _cpu_s(pids)
    result = run_load(host, port, requests, concurrency=HEADLINE_CONCURRENCY, duration_s=duration_s, engine=engine)
    workers_s = _cpu_s(pids) - workers0
    usage = meter.stop(result.requests)
    _, err = proc.communicate(timeout=duration_s + 60)
    if not raw_path.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-300:]}")
    samples, per, unclassified = components(raw_path.read_text())
    shutil.rmtree(raw_path.parent, ignore_errors=True)
    served = max(1, result.requests)
    workers_us = 1e6 * workers_s / served
    return {
        "rps": round(result.rps, 1),
        "requests": result.requests,
        "errors": result.errors,
        "samples": samples,
        "workers": len(pids),
        "workers_us_per_request": round(workers_us, 1),
        "cpu": usage,
        "components_us": {name: round(workers_us * n / max(1, samples), 1) for name, n in per.most_common()},
        "unclassified_top": [(name, n) for name, n in unclassified.most_common(8)],
    }


def _micro(rounds: int) -> dict[str, Any] | None:
    out = Path(tempfile.mkdtemp(prefix="cpu-table-micro-")) / "micro.json"
    cmd = [sys.executable, "-m", "benchmarks.hotpath_micro", "--minimal", "--rounds", str(rounds),
           "--requests", "3000", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        _say(f"hotpath_micro failed: {done.stderr[-400:]}")
        return None
    figures: dict[str, Any] = json.loads(out.read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return figures


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def markdown(results: dict[str, Any]) -> str:
    """The README table: one column per server, one row per component, then the measured totals."""
    names = [n for n in SERVERS if n in results["sampled"]]
    sampled, accounting = results["sampled"], results["accounting"]
    head = "| Encrypt 1 KiB, c=32: CPU us per request | " + " | ".join(LABELS[n] for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    order = [*dict.fromkeys(name for name, _, _ in COMPONENTS), OTHER]
    for component in order:
        values = [sampled[n]["components_us"].get(component) for n in names]
        if all(v is None or v < 0.5 for v in values):
            continue
        lines.append(f"| {component} | " + " | ".join(_fmt(v) for v in values) + " |")

    def row(label: str, values: list[float | None]) -> None:
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")

    row("**workers, sampled run (sum of the rows above)**", [sampled[n]["workers_us_per_request"] for n in names])
    row(
        "rest of the process tree (supervisor)",
        [
            max(0.0, sampled[n]["cpu"]["server_us_per_request"] - sampled[n]["cpu"]["postgres_us_per_request"]
                - sampled[n]["workers_us_per_request"])
            for n in names
        ],
    )  # fmt: skip
    row("PostgreSQL", [sampled[n]["cpu"]["postgres_us_per_request"] or None for n in names])
    row("**server total, sampled run**", [sampled[n]["cpu"]["server_us_per_request"] for n in names])
    row("**server total, accounting runs (median)**", [accounting[n]["server_us_per_request"] for n in names])
    row("of which PostgreSQL", [accounting[n]["postgres_us_per_request"] or None for n in names])
    row("req/s, accounting runs (median)", [accounting[n]["rps"] for n in names])
    lines.append(
        "| others' cores meanwhile (accounting runs, max) | "
        + " | ".join(f"{accounting[n]['other_cores_max']:.2f}" for n in names)
        + " |"
    )
    micro = results.get("micro")
    if micro:
        timed = micro["us_per_request"]
        lines += [
            "",
            "| in process (`hotpath_micro --minimal`, best round) | regionkms `routes.handle` | minimal handler"
            " | gap |",
            "|---|---:|---:|---:|",
        ]
        for scenario in ("Encrypt 1 KiB", "Decrypt 1 KiB", "GenerateDataKey AES_256"):
            if scenario in timed and f"minimal: {scenario}" in timed:
                a, b = timed[scenario]["min"], timed[f"minimal: {scenario}"]["min"]
                lines.append(f"| {scenario} | {a:.1f} | {b:.1f} | {a - b:.1f} |")
        steps = micro.get("components_us", {})
        if steps:
            lines.append("")
            lines.append("Encrypt 1 KiB steps alone, in process (us per call): " + ", ".join(
                f"{name} {value:.1f}" for name, value in steps.items()
            ) + ".")  # fmt: skip
    return "\n".join(lines) + "\n"


def update_readme(table: str, context: str, path: Path = README) -> None:
    """Replace what is between ``<!-- cpu-table -->`` and ``<!-- /cpu-table -->`` in the README."""
    text = path.read_text()
    start, end = "<!-- cpu-table -->", "<!-- /cpu-table -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} ... {end} markers")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{context}\n\n{table}{end}{after}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=2, help="interleaved accounting rounds")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--no-micro", action="store_true", help="skip the in-process hotpath_micro figures")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="a regiond setting")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="seconds to wait for an idle machine per run")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/<date>-cpu-table.json)")
    p.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = p.parse_args(argv)
    settings = server_settings(setting_pairs(args.setting), os.environ)
    engine = "wrk" if wrk_available() else "asyncio"
    wanted = [s for s in args.servers.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="regionkms-cpu-table-"))
    started_at = dt.datetime.now(dt.UTC)
    factories: dict[str, Callable[[], Server]] = {
        "floor": lambda: MinimalServer(workdir / "floor", mode="floor", workers=args.workers),
        "minimal": lambda: MinimalServer(workdir / "minimal", mode="work", workers=args.workers),
        "minimal_audit": lambda: MinimalServer(workdir / "minimal_audit", mode="audit", workers=args.workers),
        "regionkms_noaudit": lambda: RegionKmsServer(
            workdir / "regionkms_noaudit", workers=args.workers, audit=False, settings=settings,
            name="regionkms_noaudit",
        ),
        "regionkms": lambda: RegionKmsServer(workdir / "regionkms", workers=args.workers, settings=settings),
    }  # fmt: skip
    servers: dict[str, Server] = {}
    plan = Plan(duration_s=args.duration, warmup_s=args.warmup, rounds=args.rounds, ops=(), sweep=(), key_counts=())
    try:
        for name in wanted:
            _say(f"starting {name}")
            servers[name] = factories[name]()
            servers[name].start()
        bench = Bench(plan, servers, engine)
        bench.quiet_wait_s, bench.retries = args.quiet_wait, 0
        bench.prepare()
        if "floor" in servers and "floor" not in bench.fixtures and bench.fixtures:
            bench.fixtures["floor"] = next(iter(bench.fixtures.values()))
        load_before = os.getloadavg()
        for r in range(args.rounds):
            for name in wanted:
                calls = WORKLOADS[HEADLINE_WORKLOAD](bench.fixtures[name])
                bench.measure("accounting", name, HEADLINE_WORKLOAD, calls, HEADLINE_CONCURRENCY, round_=r)
        sampled: dict[str, Any] = {}
        for name in wanted:
            calls = WORKLOADS[HEADLINE_WORKLOAD](bench.fixtures[name])
            sampled[name] = sampled_run(servers[name], calls, args.duration, args.warmup, engine)
            done = sampled[name]
            _say(f"  {name:<18} sampled: {done['rps']:>8.0f} req/s, workers "
                 f"{done['workers_us_per_request']:.0f} us/request, {done['samples']} samples")  # fmt: skip
        load_after = os.getloadavg()
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    accounting: dict[str, Any] = {}
    for name in wanted:
        runs = [r for r in bench.runs if r.server == name]
        accounting[name] = {
            "rps": round(statistics.median(r.result["rps"] for r in runs), 1),
            "server_us_per_request": round(statistics.median(r.cpu["server_us_per_request"] for r in runs), 1),
            "postgres_us_per_request": round(statistics.median(r.cpu["postgres_us_per_request"] for r in runs), 1),
            "other_cores_max": max(r.cpu["other_cores"] for r in runs),
        }
    micro = None if args.no_micro else _micro(max(3, args.rounds + 1))
    results: dict[str, Any] = {
        "date": started_at.isoformat(timespec="seconds"),
        "revision": _git_revision(),
        "machine": machine(),
        "config": {
            "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds, "workers": args.workers,
            "engine": engine, "concurrency": HEADLINE_CONCURRENCY, "workload": HEADLINE_WORKLOAD,
            "regiond_settings": recorded_settings(settings),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in load_after],
        },
        "accounting": accounting,
        "sampled": sampled,
        "micro": micro,
        "runs": [asdict(r) for r in bench.runs],
    }
    out = args.out or RESULTS_DIR / f"{started_at:%Y-%m-%d}-cpu-table.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    print()
    print(table)
    for name in wanted:
        if sampled[name]["unclassified_top"]:
            print(f"{name}: unclassified samples, innermost frames: {sampled[name]['unclassified_top']}")
    if args.update_readme:
        context = (
            f"<!-- python -m benchmarks.cpu_table --update-readme; {out.name}, revision {results['revision']}, "
            f"{args.workers} workers, {args.rounds} rounds of {args.duration:.0f} s, load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after -->"
        )
        update_readme(table, context)
        _say(f"wrote the table into {README}")
    _say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
