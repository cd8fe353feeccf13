"""Baselines (b) and (c): the least an AWS-KMS-compatible server on this stack can do.

``--mode work`` (b, the ceiling) does only the unavoidable work of a KMS Encrypt: read the
body, verify SigV4 (the same ``regiond.auth.sigv4`` code regionkms runs, with the
signing key cached as regionkms caches it), parse JSON with orjson, base64, one AES-256-GCM
operation (two for ReEncrypt), render JSON. No database, no policy, no audit, one key.

``--mode floor`` (c) answers every POST with a constant body after reading the request:
the cost of aiohttp + uvloop + HTTP/1.1 keep-alive alone.

``--mode audit`` (b+audit, a diagnosis, not a target's baseline) is ``work`` plus the durable audit
trail DESIGN section 7 requires of every call, written by regionkms's own audit writer
(``regiond.audit.writer``: one CloudTrail event per call, one segment per group-commit batch in
the worker's own hash chain, the response released only once its event is durable, with the
node's ``REGIOND_AUDIT_DURABILITY``) to a PostgreSQL at ``BENCH_DATABASE_URL``.
It answers "what does the durable audit alone cost on this machine?": the throughput of
``work`` times this ratio is the most any server that audits as regionkms must can reach.

Both run ``--workers`` processes on one port with SO_REUSEPORT, as ``regiond serve`` does,
so the comparison uses the same number of processes. Credentials come from the environment
(``BENCH_ACCESS_KEY_ID``, ``BENCH_SECRET_ACCESS_KEY``); they exist only for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import multiprocessing
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsclient import sigv4 as core
from regiond.audit.calls import CallRecord
from regiond.auth import sigv4
from regiond.domain.principal import Principal, PrincipalKind

if TYPE_CHECKING:
    from regiond.audit.writer import WriterOptions
from regiond.errors import KmsError

CONTENT_TYPE = "application/x-amz-json-1.1"
ACCOUNT_ID = "111122223333"
NONCE_BYTES = 12
MAX_SKEW_S = 900


class _Work:
    """State of one worker of the (b) server: the credentials, a cached signing key, one AES key."""

    def __init__(self, region: str, access_key_id: str, secret: str) -> None:
        self.audit: Any = None  # --mode audit: the worker's SegmentWriter
        self.principal = Principal(
            arn=f"arn:aws:iam::{ACCOUNT_ID}:user/bench", account_id=ACCOUNT_ID, kind=PrincipalKind.USER,
            name="bench", principal_id="AIDABENCHMINIMAL0000",
        )  # fmt: skip
        self.region = region
        self.access_key_id = access_key_id
        self.secret = secret
        self.signing_keys: dict[str, bytes] = {}
        # Every worker must hold the same key (a blob made by one is decrypted by another); the
        # run's secret is random, so a key derived from it is too.
        self.aead = AESGCM(hashlib.sha256(b"minimal-server-aes-key\x00" + secret.encode()).digest())
        self.key_id = str(uuid.uuid4())
        self.arn = f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{self.key_id}"

    def signing_key(self, date: str) -> bytes:
        key = self.signing_keys.get(date)
        if key is None:
            key = self.signing_keys[date] = core.signing_key(self.secret, date, self.region, sigv4.SERVICE)
        return key

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(nonce + self.aead.encrypt(nonce, plaintext, None)).decode()

    def unseal(self, blob_b64: str) -> bytes:
        blob = base64.b64decode(blob_b64)
        return self.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None)

    def dispatch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation == "Encrypt":
            blob = self.seal(base64.b64decode(params["Plaintext"]))
            return {"CiphertextBlob": blob, "KeyId": self.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
        if operation == "Decrypt":
            plaintext = self.unseal(params["CiphertextBlob"])
            return {
                "Plaintext": base64.b64encode(plaintext).decode(),
                "KeyId": self.arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }
        if operation == "GenerateDataKey":
            data_key = os.urandom(32)
            return {
                "CiphertextBlob": self.seal(data_key),
                "Plaintext": base64.b64encode(data_key).decode(),
                "KeyId": self.arn,
            }
        if operation == "ReEncrypt":
            blob = self.seal(self.unseal(params["CiphertextBlob"]))
            return {
                "CiphertextBlob": blob,
                "KeyId": self.arn,
                "SourceKeyId": self.arn,
                "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }
        if operation == "GetCallerIdentity":
            return {"Account": ACCOUNT_ID, "Arn": f"arn:aws:iam::{ACCOUNT_ID}:user/bench", "UserId": self.access_key_id}
        if operation == "CreateKey":
            return {"KeyMetadata": {"KeyId": self.key_id, "Arn": self.arn, "KeyState": "Enabled"}}
        raise LookupError(operation)

    async def handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-RequestId": request_id, "Content-Type": CONTENT_TYPE}
        body = await request.read()
        try:
            view = sigv4.HeaderView(request.headers)
            auth = sigv4.parse(view)
            sigv4.check_scope(auth, region=self.region, now=dt.datetime.now(dt.UTC), max_skew_s=MAX_SKEW_S)
            if auth.access_key_id != self.access_key_id:
                raise LookupError("UnrecognizedClientException")
            path, _, query = request.raw_path.partition("?")
            signed = sigv4.verify(
                auth,
                method=request.method,
                path=path,
                query=query,
                headers=view,
                body=body,
                signing_key=self.signing_key(auth.date),
            )
            operation = signed.get("x-amz-target", "").partition(".")[2]
            params = orjson.loads(body)
            result = self.dispatch(operation, params)
            payload = orjson.dumps(result)
            if self.audit is not None:
                await self.audit.submit(self._record(request, request_id, operation, params, result))
        except KmsError as exc:
            error = orjson.dumps({"__type": exc.code, "message": exc.message})
            return web.Response(status=400, body=error, headers=headers)
        except (LookupError, ValueError, orjson.JSONDecodeError) as exc:
            error = orjson.dumps({"__type": "ValidationException", "message": type(exc).__name__})
            return web.Response(status=400, body=error, headers=headers)
        return web.Response(body=payload, headers=headers)

    def _record(
        self, request: web.Request, request_id: str, operation: str, params: dict[str, Any], result: dict[str, Any]
    ) -> CallRecord:
        """What regionkms's edge hands its audit sink for the same call (secrets are dropped by the event builder)."""
        return CallRecord(
            operation=operation, event_source="kms.amazonaws.com", request_id=request_id,
            event_time=dt.datetime.now(dt.UTC), region=self.region, source_ip=request.remote or "",
            user_agent=request.headers.get("User-Agent", "")[:1024], principal=self.principal,
            access_key_id=self.access_key_id, params=params, result=result, resources=[self.arn],
        )  # fmt: skip


def audit_options(environ: Mapping[str, str], region: str, database_url: str) -> WriterOptions:
    """The audit writer's options as ``regiond serve`` reads them: its defaults, or the REGIOND_AUDIT_*
    variables the harness passes (``MinimalServer.environment``), so minimal_audit runs regiond's writer."""
    from regiond import config
    from regiond.audit.writer import WriterOptions

    variables = {k: v for k, v in environ.items() if k.startswith("REGIOND_AUDIT_")}
    effective = config.load(environ={"REGIOND_REGION": region, "REGIOND_DATABASE_URL": database_url, **variables})
    return WriterOptions.from_settings(effective.settings)


async def _with_audit(work: _Work, database_url: str) -> AsyncIterator[None]:
    """cleanup_ctx of ``--mode audit``: the worker's pool and audit writer, started and drained."""
    from regiond.audit.writer import SegmentWriter
    from regiond.store.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=4)
    work.audit = SegmentWriter(pool, work.region, options=audit_options(os.environ, work.region, database_url))
    await work.audit.start()
    try:
        yield
    finally:
        await work.audit.close()
        await pool.close()


_FLOOR_BODY = b'{"KeyId":"floor","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'
_FLOOR_HEADERS = {"x-amzn-RequestId": "00000000-0000-0000-0000-000000000000", "Content-Type": CONTENT_TYPE}


async def _floor(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_FLOOR_BODY, headers=_FLOOR_HEADERS)


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(mode: str, region: str, access_key_id: str, secret: str) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    if mode == "floor":
        app.router.add_post("/", _floor)
    else:
        work = _Work(region, access_key_id, secret)
        app.router.add_post("/", work.handle)
        if mode == "audit":
            database_url = os.environ["BENCH_DATABASE_URL"]

            async def audit_ctx(_app: web.Application) -> AsyncIterator[None]:
                async for _ in _with_audit(work, database_url):
                    yield

            app.cleanup_ctx.append(audit_ctx)
    app.router.add_get("/healthz", _healthz)
    return app


async def _serve(mode: str, host: str, port: int, reuse_port: bool, region: str, key_id: str, secret: str) -> None:
    runner = web.AppRunner(make_app(mode, region, key_id, secret), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def run_worker(mode: str, host: str, port: int, reuse_port: bool, region: str, key_id: str, secret: str) -> None:
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(mode, host, port, reuse_port, region, key_id, secret))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.minimal_server")
    p.add_argument("--mode", choices=["work", "floor", "audit"], default="work")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--region", default="us-east-1")
    args = p.parse_args(argv)
    key_id = os.environ.get("BENCH_ACCESS_KEY_ID", "")
    secret = os.environ.get("BENCH_SECRET_ACCESS_KEY", "")
    if args.mode != "floor" and not (key_id and secret):
        print("set BENCH_ACCESS_KEY_ID and BENCH_SECRET_ACCESS_KEY", file=sys.stderr)
        return 2
    if args.mode == "audit" and not os.environ.get("BENCH_DATABASE_URL"):
        print("--mode audit: set BENCH_DATABASE_URL (a migrated regionkms database)", file=sys.stderr)
        return 2
    worker_args = (args.mode, args.host, args.port, args.workers > 1, args.region, key_id, secret)
    if args.workers <= 1:
        run_worker(*worker_args)
        return 0
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run_worker, args=worker_args) for _ in range(args.workers)]
    for w in workers:
        w.start()

    def forward(_signum: int, _frame: object) -> None:
        for w in workers:
            if w.is_alive():
                w.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for w in workers:
        w.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
