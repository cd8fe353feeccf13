"""Replication lag: entries per second through one channel, and CreateKey to replica Enabled.

    python benchmarks/replication_lag.py [--iam-entries 2000] [--key-entries 300] [--samples 40]
                                         [--no-fsync] [--out benchmarks/results/replication_lag.json]

Standalone on purpose (the rest of benchmarks/ has its own harness). Two regions, us-east-1 and
eu-west-1, each a real ``regiond serve`` subprocess over its own database on a local PostgreSQL
(durable by default: fsync and synchronous_commit on), joined by the real channel: mutual TLS,
Ed25519-signed frames, HPKE-sealed material, as ``regiond dev`` wires it.

1. Throughput of one channel (us-east-1 -> eu-west-1). With us-east-1's sender held still (the
   benchmark locks its cursor row, so it blocks on its next read), the outbox is filled through
   the public APIs: ``--iam-entries`` PutUserPolicy calls (metadata entries), then, in a second
   round, ``--key-entries`` CreateKey(MultiRegion) + ReplicateKey pairs (each KEY_CREATED entry
   carries one backing key, unwrapped and HPKE-sealed to eu-west-1 at send time). The lock is
   released and eu-west-1's applied sequence number is polled until it holds every entry: the
   rate is entries / (last applied - release), so it includes reading, sealing, signing,
   sending, verifying, opening, applying and acknowledging every batch.
2. Lag of a new key, with both regions up: ``--samples`` times, CreateKey(MultiRegion) then
   ReplicateKey on us-east-1, then eu-west-1's database is polled (every millisecond) until the
   replica is Enabled. Reported: time from the CreateKey call and from the ReplicateKey answer.

Results go to ``--out`` (JSON) and a Markdown summary next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from kmsclient.admin import call_iam  # noqa: E402
from kmsclient.sigv4 import Credentials  # noqa: E402
from regiond.devtools.launcher import (  # noqa: E402
    ClusterCA,
    NodeProcess,
    bootstrap_admin,
    migrate,
    peers_document,
    prepare_region,
    write_peers_file,
)
from regiond.devtools.postgres import LocalPostgres, free_port  # noqa: E402
from regiond.store.databases import ensure_database  # noqa: E402

SOURCE, DEST = "us-east-1", "eu-west-1"
ACCOUNT = "111122223333"
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}]}
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 600.0
CLIENT_THREADS = 16


class Region(NodeProcess):
    """One region: a ``regiond serve`` subprocess over its own database (the launcher's ``NodeProcess``)."""

    @property
    def name(self) -> str:
        return self.region

    def serve(self, peers_file: Path) -> None:
        self.peers_file = peers_file
        self.start().wait_ready(READY_TIMEOUT_S)


async def _setup(pg_url: str, base: Path) -> tuple[dict[str, Region], Path, Credentials]:
    ca = ClusterCA.ensure(base / "cluster-ca")
    regions: dict[str, Region] = {}
    states = {}
    for name in (SOURCE, DEST):
        url = await ensure_database(pg_url, name.replace("-", "_"))
        regions[name] = Region(
            name, url, base / name, free_port(), replication_port=free_port(), log_level="warning", env=os.environ,
            cwd=ROOT,
        )  # fmt: skip
        states[name] = prepare_region(base / name, name, ca)
        await migrate(url)
    endpoints = {name: r.replication_endpoint for name, r in regions.items()}
    peers = write_peers_file(
        base / "peers.json", peers_document(home_region=SOURCE, ca=ca, regions=states, endpoints=endpoints)
    )
    # the admin, written straight into the home region's database (no outbox: it is bootstrap)
    source = regions[SOURCE]
    admin = await bootstrap_admin(source.database_url, source.state_dir, account_id=ACCOUNT, policy=POLICY)
    return regions, peers, Credentials(admin.access_key_id, admin.secret_access_key)


def _kms(region: Region, creds: Credentials) -> Any:
    return boto3.client(
        "kms", endpoint_url=region.endpoint, region_name=region.name, aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        config=Config(retries={"max_attempts": 1}, max_pool_connections=CLIENT_THREADS),
    )  # fmt: skip


async def _scalar(url: str, query: str, *args: Any) -> Any:
    con = await asyncpg.connect(url)
    try:
        return await con.fetchval(query, *args)
    finally:
        await con.close()


class HeldSender:
    """Hold us-east-1's sender for eu-west-1 still by locking its cursor row: the sender blocks on
    its next cursor read, so the outbox fills up; releasing the lock lets it drain at once."""

    def __init__(self, source: Region) -> None:
        self._source = source
        self._con: asyncpg.Connection | None = None
        self._tx: Any = None

    async def __aenter__(self) -> HeldSender:
        self._con = await asyncpg.connect(self._source.database_url)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await self._con.fetchval("SELECT EXISTS (SELECT 1 FROM replication_cursors WHERE dest = $1)", DEST):
            if time.monotonic() > deadline:
                raise RuntimeError("the sender never started")
            await asyncio.sleep(0.05)
        self._tx = self._con.transaction()
        await self._tx.start()
        await self._con.execute("SELECT 1 FROM replication_cursors WHERE dest = $1 FOR UPDATE", DEST)
        return self

    async def release(self) -> float:
        await self._tx.rollback()
        return time.perf_counter()

    async def __aexit__(self, *_exc: object) -> None:
        assert self._con is not None
        await self._con.close()


async def _applied(con: asyncpg.Connection) -> int:
    return int(await con.fetchval(
        "SELECT coalesce(max(applied_seq), 0) FROM replication_inbound WHERE source = $1", SOURCE
    ) or 0)  # fmt: skip


async def _drain(source: Region, dest: Region, fill: Any) -> dict[str, float]:
    """Queue entries with the sender held, release it, and time eu-west-1 applying all of them."""
    con = await asyncpg.connect(dest.database_url)
    try:
        start = await _applied(con)
        async with HeldSender(source) as held:
            fill_s = await asyncio.to_thread(fill)
            total = int(await _scalar(source.database_url,
                                      "SELECT last_seq FROM replication_dest_seq WHERE dest = $1", DEST))  # fmt: skip
            t0 = await held.release()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while await _applied(con) < total:
                if time.monotonic() > deadline:
                    raise RuntimeError("the destination did not apply every entry in time")
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - t0
    finally:
        await con.close()
    return {"entries": total - start, "seconds": round(elapsed, 3),
            "entries_per_s": round((total - start) / elapsed, 1), "fill_seconds": round(fill_s, 2)}  # fmt: skip


def _fill_iam(source: Region, creds: Credentials, n: int) -> float:
    arn_user = "admin"

    def put(i: int) -> None:
        call_iam(source.endpoint, SOURCE, "PutUserPolicy",
                 {"UserName": arn_user, "PolicyName": f"p{i % 50}", "PolicyDocument": json.dumps(
                     {**POLICY, "Statement": [{**POLICY["Statement"][0], "Sid": f"S{i}"}]})}, creds)  # fmt: skip

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(put, range(n)))
    return time.perf_counter() - started


def _fill_keys(source: Region, creds: Credentials, n: int) -> float:
    kms = _kms(source, creds)

    def one(_i: int) -> None:
        key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        kms.replicate_key(KeyId=key_id, ReplicaRegion=DEST)

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - started


async def _latency(regions: dict[str, Region], creds: Credentials, samples: int) -> dict[str, Any]:
    kms = _kms(regions[SOURCE], creds)
    con = await asyncpg.connect(regions[DEST].database_url)
    from_create: list[float] = []
    from_replicate: list[float] = []
    try:
        for _ in range(samples):
            t0 = time.perf_counter()
            key_id = (await asyncio.to_thread(kms.create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
            await asyncio.to_thread(kms.replicate_key, KeyId=key_id, ReplicaRegion=DEST)
            t1 = time.perf_counter()
            while await con.fetchval("SELECT key_state FROM keys WHERE key_id = $1", key_id) != "Enabled":  # noqa: ASYNC110
                await asyncio.sleep(0.001)  # polling another process's database: nothing to wait on
            t2 = time.perf_counter()
            from_create.append(t2 - t0)
            from_replicate.append(t2 - t1)
    finally:
        await con.close()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
            "max_ms": round(1000 * ordered[-1], 1),
            "mean_ms": round(1000 * statistics.fmean(ordered), 1),
        }

    return {"samples": samples, "create_key_to_replica_enabled": summary(from_create),
            "replicate_key_answer_to_replica_enabled": summary(from_replicate)}  # fmt: skip


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2)}  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="regionkms-repl-bench-"))
    pg = LocalPostgres(base / "postgres", durable=not args.no_fsync)
    try:
        regions, peers, creds = await _setup(pg.start(), base)
        source, dest = regions[SOURCE], regions[DEST]
        source.serve(peers)
        dest.serve(peers)
        try:
            # 1. one channel's throughput: metadata entries (IAM), then entries with sealed key material
            iam_rate = await _drain(source, dest, lambda: _fill_iam(source, creds, args.iam_entries))
            key_rate = await _drain(source, dest, lambda: _fill_keys(source, creds, args.key_entries))
            # 2. lag of a new key with both regions up and idle
            lag = await _latency(regions, creds, args.samples)
        finally:
            for r in regions.values():
                r.stop(timeout_s=20)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "benchmark": "replication_lag",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": _machine(),
        "postgres_durable": not args.no_fsync,
        "channel": f"{SOURCE} -> {DEST}, HTTPS mutual TLS on loopback, one sender, batches of up to 256 frames",
        "throughput_metadata_entries": iam_rate,
        "throughput_key_material_entries": key_rate,
        "new_key_lag": lag,
    }


def _markdown(result: dict[str, Any]) -> str:
    m, iam, keys, lag = (result["machine"], result["throughput_metadata_entries"],
                         result["throughput_key_material_entries"], result["new_key_lag"])  # fmt: skip
    c, r = lag["create_key_to_replica_enabled"], lag["replicate_key_answer_to_replica_enabled"]
    return "\n".join([
        "# Replication lag", "",
        f"{result['date']}, {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"PostgreSQL {'durable (fsync on)' if result['postgres_durable'] else 'fsync off'}; "
        f"1-minute load average at start {m['load_average_1m_at_start']} (other work on the machine).",
        f"Channel: {result['channel']}. Command: `python benchmarks/replication_lag.py`.", "",
        "| measure | result |", "|---|---|",
        f"| metadata entries (IAM) through one channel | {iam['entries_per_s']} entries/s "
        f"({iam['entries']} entries in {iam['seconds']} s) |",
        f"| key entries with HPKE-sealed material | {keys['entries_per_s']} entries/s "
        f"({keys['entries']} entries in {keys['seconds']} s) |",
        f"| CreateKey call to replica Enabled (n={lag['samples']}) | p50 {c['p50_ms']} ms, p95 {c['p95_ms']} ms, "
        f"max {c['max_ms']} ms |",
        f"| ReplicateKey answer to replica Enabled | p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
        f"max {r['max_ms']} ms |",
        "",
    ])  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--iam-entries", type=int, default=2000)
    p.add_argument("--key-entries", type=int, default=300)
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync (not production-like)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "replication_lag.json"))
    args = p.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
