"""Forwarding's extra latency: a call to eu-west-1 sent to eu-west-1's node, or to us-east-1's.

    python benchmarks/forward_latency.py [--samples 2000] [--operation Encrypt|ListKeys]
                                         [--out benchmarks/results/forward_latency.json]

Standalone, like replication_lag.py: two regions, each a real ``regiond serve`` subprocess
(one worker, plain HTTP on loopback, audit on as by default) over its own database on a local
durable PostgreSQL, joined by the real replication channel (mutual TLS), as ``regiond dev``
wires them. One boto3 client signs for eu-west-1 and calls its node directly; a second,
identical but for its endpoint, calls us-east-1's node, which forwards (regiond/protocol/
forwarding.py). The calls alternate, one at a time, so both paths see the same machine noise;
each is timed around the boto3 call (SigV4 signing, HTTP, the server, parsing). Reported: p50,
p90, p99 and mean per path and the difference of the percentiles.

Results go to ``--out`` (JSON) and a Markdown summary next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from benchmarks.replication_lag import READY_TIMEOUT_S, _machine  # noqa: E402
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

RELAY, TARGET = "us-east-1", "eu-west-1"
ACCOUNT = "111122223333"
WARMUP = 50
PLAINTEXT = os.urandom(1024)


async def _setup(pg_url: str, base: Path) -> tuple[dict[str, NodeProcess], tuple[str, str]]:
    ca = ClusterCA.ensure(base / "cluster-ca")
    regions: dict[str, NodeProcess] = {}
    states = {}
    creds: tuple[str, str] | None = None
    for name in (RELAY, TARGET):
        url = await ensure_database(pg_url, name.replace("-", "_"))
        regions[name] = NodeProcess(name, url, base / name, free_port(), replication_port=free_port(),
                                    log_level="warning", env=os.environ, cwd=ROOT)  # fmt: skip
        states[name] = prepare_region(base / name, name, ca)
        await migrate(url)
        admin = await bootstrap_admin(url, base / name, account_id=ACCOUNT, access_key=creds)
        creds = (admin.access_key_id, admin.secret_access_key)
    endpoints = {name: r.replication_endpoint for name, r in regions.items()}
    peers = write_peers_file(
        base / "peers.json", peers_document(home_region=RELAY, ca=ca, regions=states, endpoints=endpoints)
    )
    for region in regions.values():
        region.peers_file = peers
    assert creds is not None
    return regions, creds


def _client(endpoint: str, creds: tuple[str, str]) -> Any:
    return boto3.client("kms", endpoint_url=endpoint, region_name=TARGET, aws_access_key_id=creds[0],
                        aws_secret_access_key=creds[1], config=Config(retries={"max_attempts": 1}))  # fmt: skip


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * p))], 3)

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "mean_ms": round(1000 * statistics.fmean(ordered), 3)}  # fmt: skip


def _measure(direct: Any, forwarded: Any, operation: str, key_id: str, samples: int) -> dict[str, list[float]]:
    def call(client: Any) -> None:
        if operation == "Encrypt":
            client.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)
        else:
            client.list_keys(Limit=10)

    times: dict[str, list[float]] = {"direct": [], "forwarded": []}
    for i in range(WARMUP + samples):
        for name, client in (("direct", direct), ("forwarded", forwarded)) if i % 2 else (
                ("forwarded", forwarded), ("direct", direct)):  # fmt: skip
            t0 = time.perf_counter()
            call(client)
            elapsed = time.perf_counter() - t0
            if i >= WARMUP:
                times[name].append(elapsed)
    return times


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="regionkms-forward-bench-"))
    pg = LocalPostgres(base / "postgres", durable=True)
    try:
        regions, creds = await _setup(pg.start(), base)
        for region in regions.values():
            region.start().wait_ready(READY_TIMEOUT_S)
        try:
            direct = _client(regions[TARGET].endpoint, creds)
            forwarded = _client(regions[RELAY].endpoint, creds)
            key_id = direct.create_key(Description="forward latency")["KeyMetadata"]["KeyId"]
            load = round(os.getloadavg()[0], 2)
            times = await asyncio.to_thread(_measure, direct, forwarded, args.operation, key_id, args.samples)
        finally:
            for region in regions.values():
                region.stop(timeout_s=20)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    d, f = _summary(times["direct"]), _summary(times["forwarded"])
    return {
        "benchmark": "forward_latency",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {**_machine(), "load_average_1m_at_measure": load},
        "operation": args.operation + (" 1 KiB" if args.operation == "Encrypt" else ""),
        "samples_per_path": args.samples,
        "direct": d,
        "forwarded": f,
        "extra_ms": {k: round(f[k] - d[k], 3) for k in d},
    }


def _markdown(result: dict[str, Any]) -> str:
    m, d, f, x = result["machine"], result["direct"], result["forwarded"], result["extra_ms"]
    rows = [f"| {name} | {v['p50_ms']} | {v['p90_ms']} | {v['p99_ms']} | {v['mean_ms']} |"
            for name, v in (("direct (eu-west-1's node)", d), ("forwarded (us-east-1's node)", f), ("extra", x))]
    return "\n".join([
        "# Forwarding latency", "",
        f"{result['date']}, {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}; 1-minute load average "
        f"{m['load_average_1m_at_measure']} (other work on the machine). {result['operation']} signed for "
        f"eu-west-1, {result['samples_per_path']} calls per path, alternating, one at a time, boto3 timing. "
        "Command: `python benchmarks/forward_latency.py`.", "",
        "| path | p50 ms | p90 ms | p99 ms | mean ms |", "|---|---|---|---|---|", *rows, "",
    ])  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--operation", choices=("Encrypt", "ListKeys"), default="Encrypt")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forward_latency.json"))
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
