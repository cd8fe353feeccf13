"""``kmsclient``: encrypt and decrypt files with regionkms keys, from the nearest region that may serve them.

    kmsclient --cluster .state/cluster.json encrypt --key alias/orders -c app=demo -i big.tar -o big.tar.enc
    kmsclient --cluster .state/cluster.json decrypt -c app=demo -i big.tar.enc -o big.tar
    kmsclient --cluster .state/cluster.json regions --key alias/orders --key mrk-...

``-`` is standard input or output. ``--key`` is repeatable: the first key generates the data key,
every other one wraps it too (a multi-keyring), so the file opens wherever any of them is reachable.
Decrypt without ``--key`` opens any key of the cluster's account (a discovery keyring with an
account filter); with ``--key`` only those keys. Messages are the AWS Encryption SDK format;
kmsclient 1 (RKE1) files still decrypt. The output file appears only once the whole message is
authenticated; to standard output, plaintext is released only after verification too, unless
``--streaming-release`` asks for it frame by frame. Errors are one line on stderr, exit status 1
(2 for bad usage).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from kmsclient.client import KmsClient
from kmsclient.cmm import RequiredEncryptionContextCmm
from kmsclient.config import ClientConfig, load_config
from kmsclient.encryption import decrypt_stream, encrypt_stream
from kmsclient.errors import ConfigurationError, KmsClientError
from kmsclient.keyrings import AwsKmsDiscoveryKeyring, AwsKmsMrkKeyring, DiscoveryFilter, Keyring, MultiKeyring
from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384, DEFAULT_FRAME_LENGTH
from kmsclient.transport import AiohttpTransport

PROGRESS_THRESHOLD_BYTES = 8 * 1024 * 1024
SUITES = {"signed": COMMIT_KEY_ECDSA_P384, "unsigned": COMMIT_KEY}


class UsageError(Exception):
    pass


def _context(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        k, eq, v = pair.partition("=")
        if not eq or not k:
            raise UsageError(f"an encryption context pair is key=value, not {pair[:80]!r}")
        if k in out and out[k] != v:
            raise UsageError(f"the encryption context key {k!r} is given twice")
        out[k] = v
    return out


def _config(args: argparse.Namespace) -> ClientConfig:
    return load_config(cluster_file=args.cluster, endpoints=args.endpoint or (), home_region=args.region)


def _client(config: ClientConfig) -> KmsClient:
    return KmsClient(
        list(config.endpoints), config.credentials, home_region=config.home_region,
        transport=AiohttpTransport(ca_bundle=config.ca_bundle),
    )  # fmt: skip


def _keyring(client: KmsClient, keys: Sequence[str]) -> Keyring:
    rings: list[Keyring] = [AwsKmsMrkKeyring(client, k) for k in keys]
    if len(rings) == 1:
        return rings[0]
    return MultiKeyring(rings[0], rings[1:], client=client)


class _Progress:
    """A progress bar on stderr for inputs of 8 MiB and more, when stderr is a terminal.

    It measures how much of the input was read (``src.tell()``), so encrypt and decrypt both end at 100%.
    """

    def __init__(self, src: BinaryIO, total: int | None, quiet: bool) -> None:
        self.src = src
        self.total = total
        self.enabled = not quiet and sys.stderr.isatty() and total is not None and total >= PROGRESS_THRESHOLD_BYTES
        self.shown = -1

    def __call__(self, _plaintext_bytes: int) -> None:
        if not self.enabled or self.total is None:
            return
        done = self.src.tell()
        pct = done * 100 // max(self.total, 1)
        if pct != self.shown:
            self.shown = pct
            bar = "#" * (pct // 4)
            print(f"\r[{bar:<25}] {pct:3d}% {done / 2**20:,.1f} MiB", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.shown >= 0:
            print(file=sys.stderr)


@contextlib.contextmanager
def _input(path: str) -> Iterator[tuple[BinaryIO, int | None]]:
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        yield f, os.fstat(f.fileno()).st_size


@contextlib.contextmanager
def _output(path: str, force: bool) -> Iterator[IO[bytes]]:
    """Standard output, or a temporary file beside ``path`` renamed over it only on success."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.exists() and not force:
        raise UsageError(f"{path} exists (use --force to overwrite)")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def _encrypt(args: argparse.Namespace) -> dict[str, Any]:
    context = _context(args.context)
    if not args.key:
        raise UsageError("encrypt needs at least one --key")
    async with _client(_config(args)) as client:
        keyring = _keyring(client, args.key)
        source: Any = keyring
        if args.require_context:
            source = RequiredEncryptionContextCmm(keyring, args.require_context)
        with _input(args.input) as (src, size), _output(args.output, args.force) as dst:
            progress = _Progress(src, size, args.quiet)
            info = await encrypt_stream(
                source, src, dst, encryption_context=context, suite=SUITES[args.suite],
                frame_length=args.frame_length, plaintext_length=size, progress=progress,
            )  # fmt: skip
            progress.done()
    return {"bytes": info.plaintext_bytes, "suite": f"0x{info.suite.id:04x}" if info.suite else None,
            "keys": list(info.key_arns), "output": args.output}  # fmt: skip


async def _decrypt(args: argparse.Namespace) -> dict[str, Any]:
    context = _context(args.context)
    config = _config(args)
    async with _client(config) as client:
        keyring: Keyring
        if args.key:
            keyring = _keyring(client, args.key)
        else:
            accounts = args.account or ([config.account_id] if config.account_id else [])
            if not accounts:
                raise UsageError("decrypt needs --key, or --account for discovery")
            keyring = AwsKmsDiscoveryKeyring(client, discovery_filter=DiscoveryFilter(frozenset(accounts)))
        source: Any = keyring
        if args.require_context:
            source = RequiredEncryptionContextCmm(keyring, args.require_context)
        release = "streaming" if args.output != "-" or args.streaming_release else "verified"
        with _input(args.input) as (src, size), _output(args.output, args.force) as dst:
            progress = _Progress(src, size, args.quiet)
            info = await decrypt_stream(
                source, src, dst, encryption_context=context, release=release,  # type: ignore[arg-type]
                progress=progress, legacy_client=client,
            )  # fmt: skip
            progress.done()
    return {"bytes": info.plaintext_bytes, "format": info.format, "keys": list(info.key_arns),
            "encryption_context": info.encryption_context, "output": args.output}  # fmt: skip


async def _regions(args: argparse.Namespace) -> dict[str, Any]:
    async with _client(_config(args)) as client:
        await client.router.refresh(force=True)
        out: dict[str, Any] = {"home_region": client.router.home_region, "regions": client.router.status()}
        keys = []
        for key in args.key or []:
            placement = await client.placement(key)
            first = placement.regions[0]
            keys.append({"key": key, "regions": list(placement.regions), "uses": first,
                         "key_id_sent": placement.key_id_in(first), "why": placement.reason})  # fmt: skip
        if keys:
            out["keys"] = keys
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kmsclient", description="client-side encryption with regionkms keys")
    p.add_argument("--cluster", help="cluster.json written by `regiond dev`")
    p.add_argument("--endpoint", action="append", metavar="REGION=URL", help="a region's endpoint (repeatable)")
    p.add_argument("--region", help="home region of single-region keys given without an ARN")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encrypt", help="encrypt a file (AWS Encryption SDK message format)")
    d = sub.add_parser("decrypt", help="decrypt a file (AWS Encryption SDK or kmsclient 1 format)")
    for c in (e, d):
        c.add_argument("--key", action="append", help="KMS key id, ARN, alias or alias ARN (repeatable)")
        c.add_argument("-i", "--in", dest="input", required=True, help="input file, - for stdin")
        c.add_argument("-o", "--out", dest="output", required=True, help="output file, - for stdout")
        c.add_argument("-c", "--context", action="append", metavar="K=V", help="encryption context pair (repeatable)")
        c.add_argument("--require-context", action="append", metavar="K", help="a context key that must be given")
        c.add_argument("--force", action="store_true", help="overwrite the output file")
        c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.add_argument("--suite", choices=sorted(SUITES), default="signed", help="0x0578 (signed, default) or 0x0478")
    e.add_argument("--frame-length", type=int, default=DEFAULT_FRAME_LENGTH, help="plaintext bytes per frame")
    d.add_argument("--account", action="append", help="discovery: accept keys of this account (repeatable)")
    d.add_argument("--streaming-release", action="store_true", help="to stdout: release frames before the end")
    r = sub.add_parser("regions", help="measured latency and health; where each --key would go and why")
    r.add_argument("--key", action="append")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    commands = {"encrypt": _encrypt, "decrypt": _decrypt, "regions": _regions}
    try:
        out = asyncio.run(commands[args.command](args))
    except UsageError as exc:
        print(f"kmsclient: {exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"kmsclient: {exc.message}", file=sys.stderr)
        return 2
    except KmsClientError as exc:
        print(f"kmsclient: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kmsclient: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"kmsclient: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return 1
    except Exception as exc:  # a defect of kmsclient: still one line, never a traceback (exit 70, EX_SOFTWARE)
        print(f"kmsclient: internal error ({type(exc).__name__}); please report it", file=sys.stderr)
        return 70
    if args.command == "regions" or args.output != "-":  # never mixed into data on stdout
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
