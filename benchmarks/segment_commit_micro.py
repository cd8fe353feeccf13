"""What one durable segment commit costs, by batch size and body form: the worker's CPU and PostgreSQL's.

    python -m benchmarks.segment_commit_micro [--commits 1500] [--rounds 3] [--batches 1,8,16,32]

Not part of ``make test``: the figures behind the stored body's form (``regiond.audit.segment``:
JSON lines compressed as one zlib stream) and behind the batch-size targets of issue 15. One
connection to a durable local PostgreSQL (fsync and synchronous commit on, as production) migrated
to the current schema stores ``--commits`` segments of realistic Encrypt records per batch size,
one ``insert_segment`` each, as the writer does; the client's CPU is this process's (building the
body, hashing it, the INSERT through asyncpg, the socket), PostgreSQL's is its processes' from
/proc. Each round measures the body as ``segment.encode`` stores it (``zlib``) and the uncompressed
JSON lines older writers stored (``plain``), alternated, so a burst of other load hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from benchmarks.audit_writer_micro import encrypt_record, pg_cpu_s  # noqa: E402
from regiond.audit import events, segment  # noqa: E402
from regiond.devtools.postgres import LocalPostgres  # noqa: E402
from regiond.store import audit_segments as store  # noqa: E402
from regiond.store.migrate import migrate  # noqa: E402
from regiond.store.pool import create_pool  # noqa: E402

REGION = "us-east-1"
FORMS = ("zlib", "plain")


def body_of(form: str, records: list[bytes]) -> bytes:
    return segment.encode(records) if form == "zlib" else b"\n".join(records)


async def measure(args: argparse.Namespace) -> dict[tuple[str, int], list[tuple[float, float, int]]]:
    tmp = Path(tempfile.mkdtemp(prefix="segment-commit-"))
    pg = LocalPostgres(tmp / "pg", durable=True)
    url = pg.start()
    results: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    try:
        pool = await create_pool(url, min_size=1, max_size=2)
        await migrate(pool)
        await pool.close()
        con = await asyncpg.connect(url)
        await store.require_synchronous_commit(con)
        writer = uuid.uuid4()
        head, seq = segment.writer_genesis(REGION, writer), 0
        await store.register_writer(con, writer, "micro", os.getpid(), head)
        records = [events.encode(encrypt_record()) for _ in range(max(args.batches))]
        second = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for _ in range(args.rounds):
            for n in args.batches:
                for form in FORMS:
                    cpu0, pg0 = time.process_time(), pg_cpu_s(pg.data_dir)
                    for _ in range(args.commits):
                        seq += 1
                        body = body_of(form, records[:n])
                        h = segment.segment_hash(head, writer, seq, n, body)
                        await store.insert_segment(con, store.NewSegment(writer, seq, second, second, n, head, h, body))
                        head = h
                    cpu, pg_s = time.process_time() - cpu0, pg_cpu_s(pg.data_dir) - pg0
                    size = len(body_of(form, records[:n]))
                    results.setdefault((form, n), []).append(
                        (cpu / args.commits * 1e6, pg_s / args.commits * 1e6, size)
                    )
        await con.close()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16, 32])
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    print(
        "| events per segment | body | stored bytes | worker CPU us per commit | PostgreSQL CPU us per commit"
        " | PostgreSQL us per event |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for (form, n), rounds in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        client = statistics.median(r[0] for r in rounds)
        pg = statistics.median(r[1] for r in rounds)
        print(f"| {n} | {form} | {rounds[0][2]:,} | {client:.1f} | {pg:.1f} | {pg / n:.1f} |")


if __name__ == "__main__":
    main()
