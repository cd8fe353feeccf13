"""kmsclient next to the official aws-encryption-sdk: file encrypt/decrypt throughput and peak memory.

    .venv/bin/python -m benchmarks.kmsclient_stream [--size-mib 1024] [--memory-size-mib 2048] [--out FILE]

One regiond node (its own PostgreSQL) serves the data keys. A file of ``--size-mib`` is encrypted
and decrypted file to file by each implementation, with each committing suite, in the same run:

- kmsclient (``encrypt_stream``; ``decrypt_file``: written beside the target, renamed once verified)
  at its default frame length, and ``decrypt_stream`` with the default verified release to a pipe-like
  sink (plaintext staged in a spool until the signature verifies);
- the official SDK's streaming API (``EncryptionSDKClient.stream``) at its default 4 KiB frame and at
  kmsclient's frame length, so the frame length's share of the difference shows.

The configurations run in ``--rounds`` interleaved rounds and the report keeps each one's best and
median: on a shared machine a load spike then hits every implementation rather than one.

Every measurement runs in a fresh subprocess, which reports its wall time and peak RSS
(``ru_maxrss``) and its RSS after imports, before any work. Then a ``--memory-size-mib`` file goes
through kmsclient (encrypt, and decrypt both ways) to show memory stays bounded. The machine's load
average is recorded before and after each measurement: this machine is shared, so figures are
comparable within one run, not across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 16 * 1024 * 1024


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_now_mib() -> float:
    return _status_mib("VmRSS")


def _peak_mib() -> float:
    """This process's own peak RSS (VmHWM: ru_maxrss would carry the forking parent's over exec)."""
    return _status_mib("VmHWM")


def _head(path: Path, n: int = 1 << 20) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    impl, op, suite_id, frame = spec["impl"], spec["op"], int(spec["suite"]), int(spec["frame"])
    src, dst = spec["src"], spec["dst"]
    if impl == "kmsclient":
        import asyncio

        import kmsclient
        from kmsclient.message import SUITES

        baseline = _rss_now_mib()
        started = time.perf_counter()

        async def run() -> None:
            endpoints = [kmsclient.Endpoint(spec["region"], spec["endpoint"])]
            creds = kmsclient.Credentials(spec["access_key_id"], spec["secret_access_key"])
            async with kmsclient.KmsClient(endpoints, creds) as client:
                keyring = kmsclient.AwsKmsKeyring(client, spec["key_arn"])
                if op == "encrypt":
                    with open(src, "rb") as i, open(dst, "wb") as o:
                        await kmsclient.encrypt_stream(
                            keyring, i, o, suite=SUITES[suite_id], frame_length=frame,
                            plaintext_length=os.path.getsize(src),
                        )  # fmt: skip
                elif op == "decrypt":
                    await kmsclient.decrypt_file(keyring, src, dst)
                else:  # decrypt, verified release to a sink that keeps nothing
                    with open(src, "rb") as i, open(os.devnull, "wb") as o:
                        await kmsclient.decrypt_stream(keyring, i, o)

        asyncio.run(run())
    else:
        import aws_encryption_sdk
        import botocore.session
        from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

        session = botocore.session.Session()
        session.set_credentials(spec["access_key_id"], spec["secret_access_key"])
        original = session.create_client

        def create_client(service_name: str, region_name: str | None = None, **kwargs: Any) -> Any:
            kwargs["endpoint_url"] = spec["endpoint"]
            return original(service_name, region_name, **kwargs)

        session.create_client = create_client  # type: ignore[method-assign]
        provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[spec["key_arn"]], botocore_session=session)
        client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        )
        algorithm = {
            0x0478: Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            0x0578: Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
        }[suite_id]
        baseline = _rss_now_mib()
        started = time.perf_counter()
        with open(src, "rb") as i, open(dst, "wb") as o:
            if op == "encrypt":
                kw: dict[str, Any] = {"algorithm": algorithm, "frame_length": frame}
                with client.stream(mode="e", source=i, key_provider=provider, **kw) as stream:
                    for chunk in stream:
                        o.write(chunk)
            else:
                with client.stream(mode="d", source=i, key_provider=provider) as stream:
                    for chunk in stream:
                        o.write(chunk)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "rss_after_imports_mib": round(baseline, 1),
        "peak_rss_mib": round(_peak_mib(), 1),
    }


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.kmsclient_stream", "--worker", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{spec['impl']} {spec['op']} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    size = os.path.getsize(spec["src"] if spec["op"] == "encrypt" else spec["plain"])
    result.update(
        impl=spec["impl"], op=spec["op"], suite=f"0x{int(spec['suite']):04x}", frame_length=spec["frame"],
        mib_per_s=round(size / 2**20 / result["seconds"], 1), load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


def _make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        block = os.urandom(CHUNK)
        while left:
            n = min(left, CHUNK)
            f.write(block[:n])
            left -= n
            block = block[1:] + block[:1] if left else block  # not one repeated block (compressible caches)


def _best(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (implementation, suite, frame length, operation): the best and the median of the rounds."""
    groups: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["impl"], row["suite"], row["frame_length"], row["op"]), []).append(row)
    out = []
    for (impl, suite, frame, op), found in groups.items():
        speeds = sorted(r["mib_per_s"] for r in found)
        peak = max(r["peak_rss_mib"] for r in found)
        out.append({"impl": impl, "suite": suite, "frame_length": frame, "op": op, "best_mib_per_s": speeds[-1],
                    "median_mib_per_s": speeds[len(speeds) // 2], "peak_rss_mib": peak})  # fmt: skip
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--memory-size-mib", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    from benchmarks.harness import REGION, RegionKmsServer
    from kmsclient import Credentials, Endpoint, SyncKmsClient
    from kmsclient.message import DEFAULT_FRAME_LENGTH

    work = Path(tempfile.mkdtemp(prefix="kmsclient-bench-"))
    server = RegionKmsServer(work / "server", workers=1)
    server.start()
    rows: list[dict[str, Any]] = []
    try:
        ep = server.endpoint
        url = f"http://{ep.host}:{ep.port}"
        creds = Credentials(server.credentials.access_key_id, server.credentials.secret_access_key)
        with SyncKmsClient([Endpoint(REGION, url)], creds) as client:
            key_arn = client.call("CreateKey", {"Description": "benchmark"})["KeyMetadata"]["Arn"]
        base = {"endpoint": url, "region": REGION, "key_arn": key_arn, "access_key_id": creds.access_key_id,
                "secret_access_key": creds.secret_access_key}  # fmt: skip
        plain = work / "plain.bin"
        _make_file(plain, args.size_mib * 2**20)
        runs = [
            ("kmsclient", DEFAULT_FRAME_LENGTH),
            ("aws-encryption-sdk", 4096),
            ("aws-encryption-sdk", DEFAULT_FRAME_LENGTH),
        ]
        for round_no in range(args.rounds):  # interleaved rounds: a load spike hits every implementation alike
            for suite in (0x0578, 0x0478):
                for impl, frame in runs:
                    enc, dec = work / "enc.bin", work / "dec.bin"
                    common = {**base, "impl": impl, "suite": suite, "frame": frame, "plain": str(plain)}
                    ops = [("encrypt", plain, enc), ("decrypt", enc, dec)]
                    if impl == "kmsclient":
                        ops.append(("decrypt-verified-to-pipe", enc, Path(os.devnull)))
                    for op, src, dst in ops:
                        row = _measure({**common, "op": op, "src": str(src), "dst": str(dst)})
                        rows.append({**row, "round": round_no})
                    if _head(dec) != _head(plain) or dec.stat().st_size != plain.stat().st_size:
                        raise RuntimeError(f"{impl} did not round-trip")
                    enc.unlink()
                    dec.unlink()
        plain.unlink()
        big = work / "big.bin"
        _make_file(big, args.memory_size_mib * 2**20)
        memory = []
        common = {**base, "impl": "kmsclient", "suite": 0x0578, "frame": DEFAULT_FRAME_LENGTH, "plain": str(big)}
        memory.append(_measure({**common, "op": "encrypt", "src": str(big), "dst": str(work / "big.enc")}))
        memory.append(_measure({**common, "op": "decrypt", "src": str(work / "big.enc"), "dst": str(work / "big.dec")}))
        memory.append(
            _measure({**common, "op": "decrypt-verified-to-pipe", "src": str(work / "big.enc"), "dst": os.devnull})
        )
    finally:
        server.stop()
        for f in work.glob("*.bin"):
            f.unlink()
        for f in work.glob("big.*"):
            f.unlink()
    report = {
        "benchmark": "kmsclient_stream",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "throughput": rows,
        "best": _best(rows),
        "memory_size_mib": args.memory_size_mib,
        "memory": memory,
    }
    out = args.out or RESULTS / f"{dt.date.today().isoformat()}-kmsclient-stream.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
