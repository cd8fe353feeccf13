"""CPU per audit event of the audit writer, in process: ``SegmentWriter`` against a real PostgreSQL.

    python -m benchmarks.audit_writer_micro [--events 4000] [--rounds 7] [--submitters 8,16] [--work-us 40]
                                            [--durable] [--variants sync-1,sync-2,async-2] [--profile 25]
    python -m benchmarks.audit_writer_micro --writers 2,4 [--seconds 8] [--submitters 16] [--work-us 40]

Not part of ``make test`` and not a load test: it measures what one worker process spends per
event on the audit path of a request (``SegmentWriter.submit``: ``events.encode``, the queue, the
segment built and hashed, one INSERT through asyncpg, the futures), and what PostgreSQL spends per
event (the CPU of the server's processes over the round, from /proc), so events per PostgreSQL
CPU-second say how far one region's database carries a multi-node region.

How: a local PostgreSQL (loopback only, ``regiond.devtools.postgres``; ``fsync=off`` unless ``--durable``)
migrated to the current schema, a pool, and one started ``SegmentWriter`` per variant
(``--variants``: ``sync-1`` is sync durability with one batch in flight, ``sync-2`` two, ``async-2``
async durability with two; ``-linger`` appended adds a 0.2 ms linger under load). ``N`` submitter
tasks (``--submitters``, the in-flight requests of one worker) each submit realistic Encrypt call
records in a loop until ``--events`` events are durable (async rounds wait for the backlog to
drain); the CPU time of the whole round is divided by the events. Before each submit a submitter
burns ``--work-us`` of CPU in a plain loop (the rest of a request: SigV4, JSON, AES-GCM, HTTP), so
the process is busy most of the time as a loaded worker is; that loop's CPU, calibrated in the
same round, is subtracted. The mean batch size is read from the writer's batch histogram.
``events.encode`` (the event building on the request path) is timed alone as well.

Rounds of every variant and submitter count take turns, so a burst of other load hits all of them
alike; the best round is reported (the least disturbed), with the median beside it.

``--writers K`` (``several_writers``, also the ``writers`` block of ``python -m benchmarks``) is the
region's view instead: K writer processes, each one worker's ``SegmentWriter`` with the default options
(sync, the node's defaults) and its own submitters, all into one durable PostgreSQL for ``--seconds``
at once. Events per PostgreSQL CPU-second over that window say how many nodes' audit trails one
region's database carries (PostgreSQL's CPU per event, not the writers', bounds a region: the writers
run on the nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import gc
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regiond import logging as regiond_logging  # noqa: E402
from regiond.audit import events  # noqa: E402
from regiond.audit import writer as writer_mod  # noqa: E402
from regiond.audit.calls import CallRecord  # noqa: E402
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


def _batches() -> float:
    """Batches written so far, from the writer's batch-size histogram."""
    for metric in writer_mod.AUDIT_BATCH_EVENTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0


def pg_cpu_s(data_dir: Path) -> float:
    """CPU seconds (user + system) of the PostgreSQL server's processes so far (postmaster and children)."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue  # a backend that ended meanwhile
    return total


def options_for(variant: str) -> writer_mod.WriterOptions:
    mode, _, rest = variant.partition("-")
    in_flight, _, linger = rest.partition("-")
    if mode not in ("sync", "async") or not in_flight.isdigit() or linger not in ("", "linger"):
        raise SystemExit(f"unknown variant {variant!r} (e.g. sync-1, sync-2, async-2, sync-2-linger)")
    return writer_mod.WriterOptions(durability="sync" if mode == "sync" else "async", max_in_flight=int(in_flight),
                                    linger_s=0.0002 if linger else 0.0, async_queue_events=100_000)  # fmt: skip


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


async def run_round(writer: writer_mod.SegmentWriter, records: list[CallRecord], submitters: int, n_events: int,
                    loops: int = 0, loop_us: float = 0.0, pg_dir: Path | None = None) -> dict[str, float]:  # fmt: skip
    """``n_events`` submitted by ``submitters`` tasks, each after ``burn(loops)``; audit CPU us per event (the
    burns' CPU subtracted), PostgreSQL CPU us per event, batch mean, wall rate, CPU share of this process."""
    per_task = n_events // submitters
    n = len(records)

    async def submitter(offset: int) -> None:
        for i in range(per_task):
            burn(loops)
            await writer.submit(records[(offset + i) % n])
            if i % 8 == 0:
                await asyncio.sleep(0)  # async submits never wait: let the writer run as a server's loop would

    gc.collect()
    batches = _batches()
    pg0 = pg_cpu_s(pg_dir) if pg_dir is not None else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(submitter(k * 7) for k in range(submitters)))
    while writer.backlog:  # noqa: ASYNC110 - async: the round ends when its events are durable (polled)
        await asyncio.sleep(0.0005)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg = (pg_cpu_s(pg_dir) - pg0) if pg_dir is not None else 0.0
    done = per_task * submitters
    written = _batches() - batches
    return {
        "us_per_event": cpu / done * 1e6 - loop_us,
        "pg_us_per_event": pg / done * 1e6,
        "batch_mean": done / written if written else 0.0,
        "events_per_s": done / wall,
        "cpu_share": cpu / wall,
    }


def _writer_process(url: str, submitters: int, seconds: float, work_us: float, ready: Any, go: Any,
                    out: Any, finish: Any) -> None:  # fmt: skip
    """One writer process of ``several_writers``: a pool, a started ``SegmentWriter``, a warm-up, then
    ``submitters`` tasks submitting until ``seconds`` after ``go``; puts its counts on ``out``, then holds
    its connections until ``finish`` (a backend that exits takes its CPU time out of the postmaster's tree)."""
    regiond_logging.configure("warning")
    asyncio.run(_writer_child(url, submitters, seconds, work_us, ready, go, out, finish))


async def _writer_child(url: str, submitters: int, seconds: float, work_us: float, ready: Any, go: Any,
                        out: Any, finish: Any) -> None:  # fmt: skip
    pool = await create_pool(url, min_size=2, max_size=4)
    writer = writer_mod.SegmentWriter(pool, REGION, options=writer_mod.WriterOptions(), node=f"bench-{os.getpid()}")
    await writer.start()
    records = [encrypt_record() for _ in range(64)]
    loops = loops_for(work_us)
    await run_round(writer, records, submitters, 500)  # statements prepared, connections held
    ready.set()
    await asyncio.to_thread(go.wait)
    deadline = time.monotonic() + seconds
    done = 0

    async def submitter(offset: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < deadline:
            burn(loops)
            await writer.submit(records[(offset + i) % len(records)])
            done += 1
            i += 1

    batches, cpu, wall = _batches(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(submitter(k * 7) for k in range(submitters)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    written = _batches() - batches
    loop_us = burn_us(loops) if loops else 0.0
    out.put({"events": done, "batches": written, "cpu_s": cpu - done * loop_us / 1e6, "wall_s": wall})
    await asyncio.to_thread(finish.wait, 120)
    await writer.close()
    await pool.close()


def several_writers(writers: int, submitters: int, seconds: float, work_us: float = 40.0) -> dict[str, Any]:
    """``writers`` writer processes into one durable PostgreSQL at once (module docstring): events per
    second, PostgreSQL CPU per event and events per PostgreSQL CPU-second, the writers' CPU per event
    (their burned "other work" subtracted) and the mean batch."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="audit-writers-"))
    pg = LocalPostgres(tmp / "pg", durable=True)
    procs: list[Any] = []
    try:
        url = pg.start()

        async def prepare() -> None:
            pool = await create_pool(url, min_size=1, max_size=2)
            try:
                await migrate(pool)
            finally:
                await pool.close()

        asyncio.run(prepare())
        go, finish, out = ctx.Event(), ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in range(writers)]
        procs = [
            ctx.Process(
                target=_writer_process, args=(url, submitters, seconds, work_us, r, go, out, finish), daemon=True
            )
            for r in readies
        ]
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(120):
                raise RuntimeError("a writer process did not start within 120 s")
        pg0, started = pg_cpu_s(pg.data_dir), time.perf_counter()
        go.set()
        counts = [out.get(timeout=seconds + 120) for _ in procs]
        pg_s, wall = pg_cpu_s(pg.data_dir) - pg0, time.perf_counter() - started
        finish.set()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    events_n = sum(c["events"] for c in counts)
    batches = sum(c["batches"] for c in counts)
    return {
        "writers": writers,
        "submitters": submitters,
        "seconds": seconds,
        "work_us": work_us,
        "events": events_n,
        "events_per_s": round(events_n / wall, 1),
        "pg_cpu_s": round(pg_s, 3),
        "pg_us_per_event": round(pg_s / events_n * 1e6, 1) if events_n else None,
        "events_per_pg_cpu_s": round(events_n / pg_s) if pg_s > 0 else None,
        "writer_us_per_event": round(sum(c["cpu_s"] for c in counts) / events_n * 1e6, 1) if events_n else None,
        "batch_mean": round(events_n / batches, 1) if batches else None,
    }


def encode_us(records: list[CallRecord], n: int) -> float:
    gc.collect()
    start = time.process_time()
    for i in range(n):
        events.encode(records[i % len(records)])
    return (time.process_time() - start) / n * 1e6


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    variants = {v: options_for(v) for v in args.variants.split(",")}
    counts = [int(c) for c in args.submitters.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="audit-writer-micro-"))
    pg = LocalPostgres(tmp / "pg", durable=args.durable)
    try:
        url = pg.start()
        pool = await create_pool(url, min_size=2, max_size=12)
        await migrate(pool)
        records = [encrypt_record() for _ in range(64)]
        loops = loops_for(args.work_us)
        writers = {}
        for name, options in variants.items():
            w = writer_mod.SegmentWriter(pool, REGION, options=options, node="bench")
            await w.start()
            writers[name] = w
        for w in writers.values():  # warm up: statements prepared, connections held
            await run_round(w, records, max(counts), 2000)
        timings: dict[str, list[dict[str, float]]] = {f"{v} / {s}": [] for v in variants for s in counts}
        encodes: list[float] = []
        for _ in range(args.rounds):
            loop_us = burn_us(loops) if loops else 0.0  # again each round: the machine's load changes
            for s in counts:
                for name, w in writers.items():
                    timings[f"{name} / {s}"].append(
                        await run_round(w, records, s, args.events, loops, loop_us, pg.data_dir)
                    )
            encodes.append(encode_us(records, args.events))
        profile = ""
        if args.profile:
            profiler = cProfile.Profile(time.process_time)  # CPU: the waits in epoll are not counted
            profiler.enable()
            await run_round(next(iter(writers.values())), records, counts[0], args.events, loops)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
            profile = out.getvalue()
        for w in writers.values():
            await w.close()
        await pool.close()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"timings": timings, "encode_us": min(encodes), "profile": profile}


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"audit writer, CPU per event: best (median) of {args.rounds} rounds of {args.events} events,"
          f" {'durable' if args.durable else 'fsync=off'} PostgreSQL, {args.work_us:g} us of other work per request"
          " (subtracted)")  # fmt: skip
    print(f"  {'variant / submitters':<26} {'us/event':>9} {'(median)':>9} {'pg us':>6} {'ev/pg-s':>8} {'batch':>6}"
          f" {'events/s':>9} {'cpu %':>6}")  # fmt: skip
    for name, rounds in results["timings"].items():
        best = min(rounds, key=lambda r: r["us_per_event"])
        med = statistics.median(r["us_per_event"] for r in rounds)
        batch = statistics.median(r["batch_mean"] for r in rounds)
        rate = statistics.median(r["events_per_s"] for r in rounds)
        share = statistics.median(r["cpu_share"] for r in rounds)
        pg = statistics.median(r["pg_us_per_event"] for r in rounds)
        per_pg_s = 1e6 / pg if pg else 0.0
        print(f"  {name:<26} {best['us_per_event']:9.1f} {med:9.1f} {pg:6.1f} {per_pg_s:8.0f} {batch:6.1f}"
              f" {rate:9.0f} {share * 100:6.0f}")  # fmt: skip
    print(f"  events.encode alone (best): {results['encode_us']:.1f} us per event (included above)")
    if results["profile"]:
        print("\ncProfile of one round (first variant, first submitter count), by self time")
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
    parser.add_argument(
        "--variants",
        default="sync-1,sync-2,async-2",
        help="comma-separated writer variants: sync-N / async-N (N batches in flight), -linger",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    parser.add_argument("--writers", help="comma-separated writer process counts: several writers into one "
                        "durable PostgreSQL instead (--submitters each, --seconds)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=8.0, help="with --writers: seconds of submitting")
    args = parser.parse_args()
    regiond_logging.configure("warning")
    if args.writers:
        submitters = int(args.submitters.split(",")[0]) if args.submitters != "8,16" else 16
        for k in (int(x) for x in args.writers.split(",")):
            r = several_writers(k, submitters, args.seconds, args.work_us)
            print(
                f"{k} writers x {submitters} submitters, {args.seconds:g} s: {r['events_per_s']:.0f} events/s,"
                f" PostgreSQL {r['pg_us_per_event']} us/event = {r['events_per_pg_cpu_s']} events per PostgreSQL"
                f" CPU-second; writers {r['writer_us_per_event']} us/event; mean batch {r['batch_mean']}"
            )
        return
    report(asyncio.run(main_async(args)), args)


if __name__ == "__main__":
    main()
