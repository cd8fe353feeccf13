"""Python CPU per audit event of the group commit, in process: ``GroupCommitter`` against a real PostgreSQL.

    python -m benchmarks.audit_writer_micro [--events 4000] [--rounds 7] [--submitters 8,16] [--work-us 40]
                                            [--durable] [--against REV] [--profile 25]

Not part of ``make test`` and not a load test: it measures what one worker process spends per
event on the audit path of a request (``GroupCommitter.submit``: ``events.prepare``, the queue,
the writer's batches through ``regiond.store.audit.append_batch`` and asyncpg, the futures), the
part of a request's CPU that the group commit owns. PostgreSQL's own CPU (the procedure, chain
hashing, commits) is not counted: ``time.process_time`` covers this process only.

How: a local PostgreSQL (loopback only, ``regiond.devtools.postgres``; ``fsync=off`` unless ``--durable``)
migrated to the current schema, a pool, and a started ``GroupCommitter`` with the production
options. ``N`` submitter tasks (``--submitters``, the in-flight requests of one worker) each
submit realistic Encrypt call records in a loop (the ``CallRecord`` the Encrypt path hands its
sink: principal, validated params, result, the key ARN as resource) until ``--events`` events
are durable; the CPU time of the whole round is divided by the events. Before each submit a
submitter burns ``--work-us`` of CPU in a plain loop (the rest of a request: SigV4, JSON, AES-GCM,
HTTP), so the process is busy most of the time as a loaded worker is; that loop's CPU, calibrated
in the same round, is subtracted. The submitters move in step (a batch's futures wake them
together, and they all submit before the writer runs again), so a batch holds one event per
submitter: ``--submitters 8`` gives the batches of ~8 a worker sees at c=32. The mean batch size
is read from the committer's batch histogram. ``events.prepare`` (the event building on the request
path, regiond/audit/events.py) is timed alone as well, so the committer's own share is the
difference.

A process that waits in epoll for PostgreSQL pays wake-up costs that depend on how often it
idles; ``cpu %`` (CPU time / wall time of the round) says how saturated a round was, and more
submitters saturate it more (and make batches larger). Rounds of every variant and submitter
count take turns, so a burst of other load hits all of them alike; the best round is reported
(the least disturbed), with the median beside it.

``--against REV`` loads ``regiond/audit/committer.py`` and ``regiond/store/audit.py`` as they
are at git revision ``REV`` into separate modules and runs them interleaved with the working
tree's (before/after in one invocation, one database; the schema is the working tree's, so REV
must write through a procedure it still has).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import gc
import io
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

import regiond.runtime.metrics  # noqa: E402
from regiond import logging as regiond_logging  # noqa: E402
from regiond.audit import committer as committer_mod  # noqa: E402
from regiond.audit import events  # noqa: E402
from regiond.audit.calls import CallRecord  # noqa: E402
from regiond.crypto.sign import RegionIdentityKey  # noqa: E402
from regiond.devtools.postgres import LocalPostgres  # noqa: E402
from regiond.domain.principal import Principal, PrincipalKind  # noqa: E402
from regiond.randomids import uuid4_str  # noqa: E402
from regiond.store.migrate import migrate  # noqa: E402
from regiond.store.pool import create_pool  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "111122223333"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
PRINCIPAL = Principal(f"arn:aws:iam::{ACCOUNT}:user/bench", ACCOUNT, PrincipalKind.USER, "bench", "AIDABENCHUSER0001")
USER_AGENT = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux lang/python#3.11.7"


def encrypt_record() -> CallRecord:
    """What the Encrypt path hands the sink for one call (the secrets are dropped by the event builder)."""
    return CallRecord(
        operation="Encrypt", event_source="kms.amazonaws.com", request_id=uuid4_str(),
        event_time=dt.datetime.now(dt.UTC), region=REGION, source_ip="127.0.0.1", user_agent=USER_AGENT,
        principal=PRINCIPAL, access_key_id="AKIABENCHKEY00000001",
        params={"KeyId": KEY_ID, "Plaintext": b"\x00" * 1024, "EncryptionContext": {"tenant": "acme"}},
        result={"KeyId": KEY_ARN, "CiphertextBlob": b"\x01" * 1100, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        resources=[KEY_ARN],
    )  # fmt: skip


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def _load_module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def load_committer_at(rev: str) -> types.ModuleType:
    """The committer module of ``rev``, writing through the store of ``rev``; its metrics in a private registry."""
    store = _load_module(f"audit_store_{rev}", _git_show(rev, "regiond/store/audit.py"))
    shared = regiond.runtime.metrics.REGISTRY
    regiond.runtime.metrics.REGISTRY = CollectorRegistry()  # the module registers its histograms at import
    try:
        module = _load_module(f"audit_committer_{rev}", _git_show(rev, "regiond/audit/committer.py"))
    finally:
        regiond.runtime.metrics.REGISTRY = shared
    module.audit_store = store
    return module


def _batches(module: types.ModuleType) -> float:
    """Batches written so far, from the module's batch-size histogram."""
    for metric in module.AUDIT_BATCH_EVENTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0


def burn(loops: int) -> None:
    """The rest of a request's work (SigV4, JSON, AES-GCM, HTTP): CPU only, nothing shared with the audit path."""
    x = 0
    for i in range(loops):
        x += i


def burn_us(loops: int) -> float:
    """CPU us of one ``burn(loops)``, best of a few runs (subtracted from every round)."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(2000):
            burn(loops)
        best = min(best, (time.process_time() - start) / 2000 * 1e6)
    return best


def loops_for(work_us: float) -> int:
    if work_us <= 0:
        return 0
    per_loop = burn_us(1000) / 1000
    return max(1, round(work_us / per_loop))


async def run_round(committer: Any, module: types.ModuleType, records: list[CallRecord], submitters: int,
                    n_events: int, loops: int = 0, loop_us: float = 0.0) -> dict[str, float]:  # fmt: skip
    """``n_events`` submitted by ``submitters`` tasks, each after ``burn(loops)``; audit CPU us per event (the
    burns' CPU subtracted), batch mean, wall rate, CPU share (of the whole process, burns included)."""
    per_task = n_events // submitters
    n = len(records)

    async def submitter(offset: int) -> None:
        for i in range(per_task):
            burn(loops)
            await committer.submit(records[(offset + i) % n])

    gc.collect()
    batches = _batches(module)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(submitter(k * 7) for k in range(submitters)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per_task * submitters
    written = _batches(module) - batches
    return {
        "us_per_event": cpu / done * 1e6 - loop_us,
        "batch_mean": done / written if written else 0.0,
        "events_per_s": done / wall,
        "cpu_share": cpu / wall,
    }


def prepare_us(records: list[CallRecord], n: int) -> float:
    gc.collect()
    start = time.process_time()
    for i in range(n):
        events.prepare(records[i % len(records)])
    return (time.process_time() - start) / n * 1e6


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    variants: dict[str, types.ModuleType] = {"working tree": committer_mod}
    if args.against:
        variants = {args.against: load_committer_at(args.against), **variants}
    counts = [int(c) for c in args.submitters.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="audit-writer-micro-"))
    pg = LocalPostgres(tmp / "pg", durable=args.durable)
    try:
        url = pg.start()
        pool = await create_pool(url, min_size=2, max_size=8)
        await migrate(pool)
        records = [encrypt_record() for _ in range(64)]
        loops = loops_for(args.work_us)
        signer = RegionIdentityKey.generate()
        committers = {}
        for name, module in variants.items():
            c = module.GroupCommitter(pool, REGION, signer)
            await c.start()
            committers[name] = c
        for name, c in committers.items():  # warm up: statements prepared, connections held
            await run_round(c, variants[name], records, max(counts), 2000)
        timings: dict[str, list[dict[str, float]]] = {f"{v} / {s}": [] for v in variants for s in counts}
        prepares: list[float] = []
        for _ in range(args.rounds):
            loop_us = burn_us(loops) if loops else 0.0  # again each round: the machine's load changes
            for s in counts:
                for name, c in committers.items():
                    timings[f"{name} / {s}"].append(
                        await run_round(c, variants[name], records, s, args.events, loops, loop_us)
                    )
            prepares.append(prepare_us(records, args.events))
        profile = ""
        if args.profile:
            profiler = cProfile.Profile(time.process_time)  # CPU: the waits in epoll are not counted
            profiler.enable()
            await run_round(committers["working tree"], committer_mod, records, counts[0], args.events, loops)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
            profile = out.getvalue()
        for c in committers.values():
            await c.close()
        await pool.close()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"timings": timings, "prepare_us": min(prepares), "profile": profile}


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"audit group commit, Python CPU per event: best (median) of {args.rounds} rounds of {args.events} events,"
          f" {'durable' if args.durable else 'fsync=off'} PostgreSQL, {args.work_us:g} us of other work per request"
          " (subtracted)")  # fmt: skip
    print(f"  {'variant / submitters':<34} {'us/event':>9} {'(median)':>9} {'batch':>6} {'events/s':>9} {'cpu %':>6}")
    for name, rounds in results["timings"].items():
        best = min(rounds, key=lambda r: r["us_per_event"])
        med = statistics.median(r["us_per_event"] for r in rounds)
        batch = statistics.median(r["batch_mean"] for r in rounds)
        rate = statistics.median(r["events_per_s"] for r in rounds)
        share = statistics.median(r["cpu_share"] for r in rounds)
        print(f"  {name:<34} {best['us_per_event']:9.1f} {med:9.1f} {batch:6.1f} {rate:9.0f} {share * 100:6.0f}")
    print(f"  events.prepare alone (best): {results['prepare_us']:.1f} us per event (included above)")
    if results["profile"]:
        print("\ncProfile of one round (working tree, first submitter count), by self time")
        print(results["profile"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4000, help="events per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--submitters", default="8,16", help="comma-separated submitter task counts")
    parser.add_argument(
        "--work-us",
        type=float,
        default=40.0,
        help="CPU each submitter burns before each submit (the rest of a request; subtracted)",
    )
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on (slower, more idle)")
    parser.add_argument("--against", metavar="REV", help="git revision whose committer runs interleaved (before)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    args = parser.parse_args()
    regiond_logging.configure("warning")
    report(asyncio.run(main_async(args)), args)


if __name__ == "__main__":
    main()
