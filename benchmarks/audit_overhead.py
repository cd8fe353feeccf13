"""What the audit trail costs: Encrypt throughput with the real group-committed audit sink versus
the same run with the audit writer replaced by ``regiond.audit.calls.NullAuditSink`` (``--no-audit``).

    python benchmarks/audit_overhead.py [--seconds 5] [--rounds 3] [--concurrency 32] [--workers 1]
                                        [--no-fsync] [--out benchmarks/results/audit_overhead.json]

Standalone on purpose (the rest of benchmarks/ has its own harness): it starts a local
PostgreSQL (durable by default: fsync and synchronous_commit on, so every audit batch really
waits for the WAL flush), creates one database, a region state dir, an admin identity and a key,
then alternates ``regiond serve`` with and without audit, ``--rounds`` times each, so drift on
the machine hits both sides alike. Each run gets a warm-up, then ``--seconds`` of closed-loop
load at ``--concurrency`` connections from a separate client process replaying pre-signed
Encrypt requests over keep-alive (raw asyncio, no HTTP library, so the client stays cheap).
A SigV4 signature is valid for the 15-minute skew window, which is far longer than a run.

The result is the median over rounds of the paired ratio audit/null-sink (each round runs both
sides back to back, so slow drift on the machine cancels; best-of and medians are reported too),
and, as a measure that other load skews far less, the server's CPU time per request on each side
(from /proc, with one worker) and PostgreSQL's. The audit run also reports how many events each batch carried on average
(events per segment in ``audit_segments``: one segment per batch). Target: audit costs under 15 % of throughput
(ratio >= 0.85).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kmsclient.sigv4 import Credentials, sign_headers  # noqa: E402

REGION = "us-east-1"
WARMUP_S = 2.0


# --------------------------------------------------------------------------- client process


async def _client(host: str, port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict[str, Any]:
    """Closed loop: each connection sends a request, reads the whole response, sends the next."""
    ok = errors = 0
    deadline = time.perf_counter() + seconds

    async def one_connection(i: int) -> None:
        nonlocal ok, errors
        reader, writer = await asyncio.open_connection(host, port)
        n = i
        try:
            while time.perf_counter() < deadline:
                writer.write(requests[n % len(requests)])
                n += concurrency
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status == 200:
                    ok += 1
                else:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"ok": ok, "errors": errors, "seconds": elapsed, "rps": ok / elapsed}


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--requests")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--seconds", type=float)
    a = p.parse_args(argv)
    raw = json.loads(Path(a.requests).read_text())
    requests = [base64.b64decode(r) for r in raw]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client(a.host, a.port, requests, a.concurrency, a.seconds))
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- setup


def _signed_encrypts(endpoint: str, creds: Credentials, key_id: str, count: int) -> list[bytes]:
    host = endpoint.removeprefix("http://")
    out = []
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        body = json.dumps({"KeyId": key_id, "Plaintext": base64.b64encode(f"benchmark {i:08d}".encode()).decode(),
                           "EncryptionContext": {"run": "audit-overhead"}}).encode()  # fmt: skip
        headers = sign_headers(
            credentials=creds, method="POST", url=endpoint + "/", body=body, region=REGION, service="kms", now=now,
            headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Encrypt"},
        )  # fmt: skip
        headers["Host"] = host
        headers["Content-Length"] = str(len(body))
        headers["Connection"] = "keep-alive"
        head = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        out.append(head.encode() + body)
    return out


async def _bootstrap(url: str, state_dir: Path) -> tuple[Credentials, str]:
    from benchmarks.identity import create_bench_user
    from regiond.crypto.keyring import load_file_keyring
    from regiond.store import migrate
    from regiond.store.pool import create_pool

    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        await migrate.migrate(pool)
        return await create_bench_user(pool, load_file_keyring(state_dir / "root.key"))
    finally:
        await pool.close()


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError("regiond serve exited during start-up")
        try:
            with urllib.request.urlopen(endpoint + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("regiond serve did not become ready")


def _create_key(endpoint: str, creds: Credentials) -> str:
    body = b'{"Description": "audit overhead benchmark"}'
    headers = sign_headers(
        credentials=creds, method="POST", url=endpoint + "/", body=body, region=REGION, service="kms",
        now=dt.datetime.now(dt.UTC),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.CreateKey"},
    )  # fmt: skip
    headers.pop("Host", None)
    req = urllib.request.Request(endpoint + "/", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["KeyMetadata"]["KeyId"])


def _serve(
    url: str, state_dir: Path, port: int, workers: int, audit: bool, log: Path, settings: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``regiond serve`` with ``settings`` (``benchmarks.harness.server_settings``) as its REGIOND_* variables."""
    from benchmarks.harness import server_environment
    from regiond.devtools.launcher import NodeProcess

    env = server_environment(settings)
    env["PYTHONPATH"] = str(ROOT)
    node = NodeProcess(
        REGION, url, state_dir, port, workers=workers, audit=audit, log_level="warning", log_path=log, env=env,
        cwd=ROOT,
    ).start()  # fmt: skip
    assert node.proc is not None
    return node.proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (Linux /proc; 0 where unreadable)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def _postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of ``data_dir`` and its children (backends, WAL writer, checkpointer ...)."""
    try:
        master = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _run_load(port: int, requests_file: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client", "--host", "127.0.0.1", "--port", str(port), "--requests",
           str(requests_file), "--concurrency", str(concurrency), "--seconds", str(seconds)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout))


async def _audit_stats(url: str) -> tuple[int, int]:
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        row = await con.fetchrow("SELECT coalesce(sum(record_count), 0), count(*) FROM audit_segments")
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await con.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--client":
        return client_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync (not what production runs)")
    p.add_argument(
        "--setting", action="append", default=[], metavar="KEY=VALUE",
        help="a regiond setting for both sides (repeatable); REGIOND_* variables are passed too",
    )  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audit_overhead.json"))
    args = p.parse_args(argv)

    from benchmarks.harness import recorded_settings, server_settings, setting_pairs
    from regiond.devtools.postgres import LocalPostgres, free_port

    try:
        settings = server_settings(setting_pairs(args.setting), os.environ)
    except ValueError as exc:
        raise SystemExit(f"audit_overhead: {exc}") from None
    from regiond.statedir import init_state_dir

    work = Path(tempfile.mkdtemp(prefix="regionkms-audit-bench-"))
    pg = LocalPostgres(work / "pg", durable=not args.no_fsync)
    admin_url = pg.start()
    try:
        import asyncpg

        async def create_db() -> str:
            con = await asyncpg.connect(admin_url)
            try:
                await con.execute('CREATE DATABASE "bench"')
                version = await con.fetchval("SHOW server_version")
            finally:
                await con.close()
            return str(version)

        pg_version = asyncio.run(create_db())
        url = admin_url.rsplit("/", 1)[0] + "/bench"
        state_dir = work / "state"
        init_state_dir(state_dir, region=REGION)
        creds, _arn = asyncio.run(_bootstrap(url, state_dir))
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = work / "regiond.log"
        proc = _serve(url, state_dir, port, args.workers, True, log, settings)
        try:
            _wait_ready(endpoint, proc)
            key_id = _create_key(endpoint, creds)
        finally:
            _stop(proc)
        requests_file = work / "requests.json"
        requests = _signed_encrypts(endpoint, creds, key_id, 256)
        requests_file.write_text(json.dumps([base64.b64encode(r).decode() for r in requests]))

        runs: dict[str, list[float]] = {"audit": [], "null": []}
        server_cpu_us: dict[str, list[float]] = {"audit": [], "null": []}
        pg_cpu_us: dict[str, list[float]] = {"audit": [], "null": []}
        batches: list[float] = []
        load_before = os.getloadavg()[0]
        for round_no in range(args.rounds):
            for mode in ("audit", "null") if round_no % 2 == 0 else ("null", "audit"):
                events_before, tx_before = asyncio.run(_audit_stats(url))
                proc = _serve(url, state_dir, port, args.workers, mode == "audit", log, settings)
                try:
                    _wait_ready(endpoint, proc)
                    _run_load(port, requests_file, args.concurrency, WARMUP_S)
                    pg_pids = _postgres_pids(pg.data_dir)
                    cpu0, pg0 = _cpu_s([proc.pid]), _cpu_s(pg_pids)
                    result = _run_load(port, requests_file, args.concurrency, args.seconds)
                    cpu1, pg1 = _cpu_s([proc.pid]), _cpu_s(pg_pids)
                finally:
                    _stop(proc)
                if result["errors"]:
                    raise RuntimeError(f"{result['errors']} failed requests in the {mode} run")
                runs[mode].append(result["rps"])
                served = max(1, result["ok"])
                if args.workers == 1:  # one process serves (no forked workers to add up)
                    server_cpu_us[mode].append((cpu1 - cpu0) / served * 1e6)
                pg_cpu_us[mode].append((pg1 - pg0) / served * 1e6)
                events_after, tx_after = asyncio.run(_audit_stats(url))
                if mode == "audit" and tx_after > tx_before:
                    batches.append((events_after - events_before) / (tx_after - tx_before))
                cpu_note = f", server {server_cpu_us[mode][-1]:5.0f} us CPU/request" if server_cpu_us[mode] else ""
                print(f"round {round_no + 1} {mode:5s}: {result['rps']:8.0f} Encrypt/s{cpu_note}", flush=True)
        load_after = os.getloadavg()[0]
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    audit_best, null_best = max(runs["audit"]), max(runs["null"])
    audit_median, null_median = statistics.median(runs["audit"]), statistics.median(runs["null"])
    paired = [a / n for a, n in zip(runs["audit"], runs["null"], strict=True)]
    ratio = statistics.median(paired)

    def median_or_none(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    cpu_audit, cpu_null = median_or_none(server_cpu_us["audit"]), median_or_none(server_cpu_us["null"])
    report = {
        "benchmark": "audit_overhead",
        "operation": "Encrypt",
        "date": dt.date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgresql": pg_version,
            "platform": platform.machine(),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(load_after, 2),
        },
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "fsync": not args.no_fsync,
            "regiond_settings": recorded_settings(settings),
        },
        "audit_rps": [round(v, 1) for v in runs["audit"]],
        "null_sink_rps": [round(v, 1) for v in runs["null"]],
        "audit_rps_best": round(audit_best, 1),
        "null_sink_rps_best": round(null_best, 1),
        "audit_rps_median": round(audit_median, 1),
        "null_sink_rps_median": round(null_median, 1),
        "paired_ratios": [round(r, 4) for r in paired],
        "ratio": round(ratio, 4),
        "ratio_of_best": round(audit_best / null_best, 4),
        "ratio_of_medians": round(audit_median / null_median, 4),
        "overhead_percent": round((1 - ratio) * 100, 2),
        "server_cpu_us_per_request_audit": cpu_audit,
        "server_cpu_us_per_request_null_sink": cpu_null,
        "server_cpu_overhead_percent": round((cpu_audit / cpu_null - 1) * 100, 2) if cpu_audit and cpu_null else None,
        "postgres_cpu_us_per_request_audit": median_or_none(pg_cpu_us["audit"]),
        "postgres_cpu_us_per_request_null_sink": median_or_none(pg_cpu_us["null"]),
        "mean_events_per_batch": round(statistics.mean(batches), 1) if batches else None,
        "target": "overhead_percent < 15",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"median of {args.rounds} paired rounds: audit/null-sink throughput ratio {ratio:.3f} (audit costs "
          f"{(1 - ratio) * 100:.1f} %); best {audit_best:.0f}/s vs {null_best:.0f}/s; server CPU per request "
          f"{cpu_audit} vs {cpu_null} us; {report['mean_events_per_batch']} events per batch")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
