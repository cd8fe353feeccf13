"""``kmsclient``: envelope-encrypt files with regionkms, from the nearest healthy region.

    kmsclient --cluster .state/cluster.json regions
    kmsclient --cluster .state/cluster.json encrypt --key-id alias/app --in FILE --out FILE.rke -c app=demo
    kmsclient --cluster .state/cluster.json decrypt --in FILE.rke --out FILE -c app=demo

Without --cluster, give ``--endpoint REGION=URL`` (repeatable) and the usual AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY. Progress goes to stderr for inputs over 1 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from kmsclient import envelope
from kmsclient.client import KmsClient
from kmsclient.errors import KmsClientError
from kmsclient.routing import Endpoint
from kmsclient.sigv4 import Credentials

PROGRESS_THRESHOLD_BYTES = 1024 * 1024


def _client(args: argparse.Namespace) -> KmsClient:
    endpoints: list[Endpoint] = []
    creds: Credentials | None = None
    if args.cluster:
        cluster = json.loads(Path(args.cluster).read_text())
        endpoints = [Endpoint(r, info["endpoint"]) for r, info in cluster["regions"].items()]
        c = cluster["credentials"]
        creds = Credentials(c["access_key_id"], c["secret_access_key"])
    for spec in args.endpoint or []:
        region, _, url = spec.partition("=")
        if not url:
            raise SystemExit(f"kmsclient: --endpoint must be REGION=URL, got {spec!r}")
        endpoints.append(Endpoint(region, url.rstrip("/")))
    if "AWS_ACCESS_KEY_ID" in os.environ and "AWS_SECRET_ACCESS_KEY" in os.environ:
        creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    if not endpoints or creds is None:
        raise SystemExit("kmsclient: give --cluster, or --endpoint and AWS credentials in the environment")
    return KmsClient(endpoints, creds)


def _context(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        k, eq, v = pair.partition("=")
        if not eq:
            raise SystemExit(f"kmsclient: context must be key=value, got {pair!r}")
        out[k] = v
    return out


def _progress(size: int) -> envelope.Progress | None:
    if size < PROGRESS_THRESHOLD_BYTES:
        return None

    def report(done: int) -> None:
        print(f"\r{done * 100 // max(size, 1):3d}% ({done:,} of {size:,} bytes)", end="", file=sys.stderr, flush=True)

    return report


async def _transform(args: argparse.Namespace, encrypting: bool) -> int:
    src_path, dst_path = Path(args.input), Path(args.output)
    size = src_path.stat().st_size
    fd, tmp = tempfile.mkstemp(dir=dst_path.parent, prefix=f".{dst_path.name}.")
    try:
        async with _client(args) as client:
            with src_path.open("rb") as src, os.fdopen(fd, "wb") as dst:
                if encrypting:
                    n = await envelope.encrypt_stream(
                        client, args.key_id, src, dst, context=_context(args.context), progress=_progress(size)
                    )
                else:
                    n = await envelope.decrypt_stream(
                        client, src, dst, context=_context(args.context), progress=_progress(size)
                    )
        os.replace(tmp, dst_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if size >= PROGRESS_THRESHOLD_BYTES:
        print(file=sys.stderr)
    print(json.dumps({"bytes": n, "output": str(dst_path)}))
    return 0


async def _regions(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        await client.router.refresh(force=True)
        status: list[dict[str, Any]] = client.router.status()
        for row in status:
            if row["rtt_ms"] == float("inf"):
                row["rtt_ms"] = None
        print(json.dumps({"regions": status}))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kmsclient", description="envelope encryption with regionkms")
    p.add_argument("--cluster", help="cluster.json written by `regiond dev`")
    p.add_argument("--endpoint", action="append", help="REGION=URL (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encrypt")
    e.add_argument("--key-id", required=True)
    d = sub.add_parser("decrypt")
    for c in (e, d):
        c.add_argument("--in", dest="input", required=True)
        c.add_argument("--out", dest="output", required=True)
        c.add_argument("-c", "--context", action="append", help="encryption context key=value (repeatable)")
    sub.add_parser("regions")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "regions":
            return asyncio.run(_regions(args))
        return asyncio.run(_transform(args, encrypting=args.command == "encrypt"))
    except KmsClientError as exc:
        print(f"kmsclient: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
