"""CPU per request of regiond's hot path, in process: Encrypt / Decrypt / GenerateDataKey.

    python -m benchmarks.hotpath_micro [--requests 5000] [--rounds 7] [--profile 15] [--minimal]
                                       [--out FILE.json] [--baseline FILE.json]

Not part of ``make test`` and not a load test: it measures what one worker spends in
``regiond.protocol.routes.handle`` per request, the part of a request's CPU that regionkms
owns (aiohttp's HTTP parsing and response writing come on top, ~90 us per request on the
benchmark machine, and are the same for the minimal server it is compared with).

How: a local PostgreSQL (loopback only, ``regiond.devtools.postgres``) holds one account, an admin user
and a key, made once through the handler itself. The application is ``create_app`` as the
tests build it, with an in-memory audit sink that runs ``regiond.audit.events.encode`` (the
event building the real audit writer does on the request path) and keeps nothing. Requests
are pre-signed with ``kmsclient.sigv4.sign_headers`` and wrapped in aiohttp mocked requests
(``make_mocked_request``) before timing starts, then ``handle`` is awaited on each of them in
turn, timed with ``time.process_time`` (CPU, so other load on the machine matters less).
After a warm-up round the caches are hot (DESIGN section 6: no database round trip), so the
loop is deterministic CPU work. The scenarios take turns for ``--rounds`` rounds; the result is
the best round (the least disturbed by other load on a shared machine), with the median beside it.

``--minimal`` adds rows for the minimal server's handler (``benchmarks/baselines/minimal_server.py``,
``_Work.handle``: SigV4, JSON, base64, one AES-GCM; the load tests' baseline (b)) on the same kind
of mocked requests, signed with the same credentials (the harness hands the bench user's access
key to that server as BENCH_ACCESS_KEY_ID/SECRET): the floor regionkms's ``handle`` is compared
with, and the gap between the two is what regionkms's own request path costs.

``--profile N`` prints cProfile's top N functions (self time) for Encrypt 1 KiB, and a
component table times the steps of an Encrypt separately (SigV4, validation, the service
call, rendering, event building). ``--out`` writes the figures as JSON, ``--baseline`` prints
them next to an earlier ``--out`` file (before/after).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import datetime as dt
import gc
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.baselines.minimal_server import _Work as MinimalWork  # noqa: E402
from benchmarks.identity import create_bench_user  # noqa: E402
from kmsclient.sigv4 import Credentials, sign_headers  # noqa: E402
from regiond import logging as regiond_logging  # noqa: E402
from regiond.app import create_app  # noqa: E402
from regiond.audit import events  # noqa: E402
from regiond.audit.calls import CallRecord  # noqa: E402
from regiond.auth import sigv4  # noqa: E402
from regiond.config import Settings  # noqa: E402
from regiond.crypto.keyring import RootKeyring, load_file_keyring  # noqa: E402
from regiond.devtools.postgres import LocalPostgres  # noqa: E402
from regiond.protocol import routes, shapes  # noqa: E402
from regiond.protocol.context import OpContext  # noqa: E402
from regiond.protocol.ops import KMS_OPERATIONS  # noqa: E402
from regiond.randomids import uuid4_str  # noqa: E402
from regiond.statedir import init_state_dir  # noqa: E402
from regiond.store.pool import create_pool  # noqa: E402

REGION = "us-east-1"
HOST = "127.0.0.1:8080"
CONTENT_TYPE = "application/x-amz-json-1.1"
QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600", "rotation_interval_s": "3600"}


class MemoryAuditSink:
    """Builds each event as the audit writer does (``events.encode``) and keeps only a count."""

    def __init__(self) -> None:
        self.events = 0
        self.last: bytes = b""

    async def submit(self, record: CallRecord) -> None:
        self.last = events.encode(record)
        self.events += 1


class _Transport:
    """Just enough of an asyncio transport for ``request.remote``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


class _Protocol:
    """Just enough of aiohttp's protocol for a body that is already in the ``StreamReader``.

    (A ``mock.Mock`` would be called on every read, and its bookkeeping would be timed too.)
    """

    _reading_paused = False
    ssl_context = None
    peername = ("127.0.0.1", 40000)
    sockname = ("127.0.0.1", 8080)
    transport: Any = None
    writer: Any = None

    def pause_reading(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def resume_reading(self, *_args: Any, **_kwargs: Any) -> None:
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Bench:
    def __init__(self, app: web.Application, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials
        self.loop = asyncio.get_running_loop()
        self.transport = _Transport()
        self.protocol = _Protocol()

    def signed(self, operation: str, params: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        body = orjson.dumps(params)
        headers = sign_headers(
            credentials=self.credentials,
            method="POST",
            url=f"http://{HOST}/",
            headers={
                "Content-Type": CONTENT_TYPE,
                "X-Amz-Target": f"TrentService.{operation}",
                "User-Agent": "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux lang/python#3.11.7",
            },
            body=body,
            region=REGION,
            service="kms",
            now=dt.datetime.now(dt.UTC),
        )
        headers["Content-Length"] = str(len(body))
        return headers, body

    def request(self, headers: dict[str, str], body: bytes) -> web.Request:
        payload = StreamReader(self.protocol, 2**16, loop=self.loop)
        payload.feed_data(body)
        payload.feed_eof()
        return make_mocked_request(
            "POST", "/", headers=headers, app=self.app, transport=self.transport, protocol=self.protocol,
            payload=payload,
        )  # fmt: skip

    async def call(self, operation: str, params: dict[str, Any], handle: Handler = routes.handle) -> dict[str, Any]:
        response = await handle(self.request(*self.signed(operation, params)))
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        out: dict[str, Any] = orjson.loads(response.body) if response.body else {}
        if response.status != 200:
            raise RuntimeError(f"{operation} failed: {out}")
        return out

    async def per_request_us(
        self, operation: str, params: dict[str, Any], n: int, handle: Handler = routes.handle
    ) -> float:
        """CPU us per ``handle`` call over ``n`` requests built in advance (building is not timed).

        Building a mocked request costs more than handling one and evicts the application from
        the CPU caches, so all ``n`` are built first (built in small batches between timed
        stretches, they made every figure 20-40 us higher and far noisier). The requests are
        then colder than the ones aiohttp hands over: each first read of a request attribute
        is a cache miss, so the total slightly overstates what fewer attribute reads save; the
        component table (each step alone, on one warm request) does not have that bias.
        """
        headers, body = self.signed(operation, params)
        requests = [self.request(headers, body) for _ in range(n)]
        gc.collect()
        start = time.process_time()
        for request in requests:
            response = await handle(request)
        elapsed = time.process_time() - start
        assert response.status == 200, response.body
        return elapsed / n * 1e6


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _identity(database_url: str, keyring: Any) -> Credentials:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        credentials, _arn = await create_bench_user(pool, keyring)
    finally:
        await pool.close()
    return credentials


def _scenarios(key_id: str, blob: str) -> dict[str, dict[str, Any]]:
    ctx = {"tenant": "acme", "purpose": "bench"}
    return {
        "Encrypt 1 KiB": {"op": "Encrypt", "params": {"KeyId": key_id, "Plaintext": _b64(os.urandom(1024))}},
        "Encrypt 1 KiB + context": {
            "op": "Encrypt",
            "params": {"KeyId": key_id, "Plaintext": _b64(os.urandom(1024)), "EncryptionContext": ctx},
        },
        "Decrypt 1 KiB": {"op": "Decrypt", "params": {"CiphertextBlob": blob}},
        "GenerateDataKey AES_256": {"op": "GenerateDataKey", "params": {"KeyId": key_id, "KeySpec": "AES_256"}},
    }


async def _minimal_scenarios(bench: Bench) -> dict[str, dict[str, Any]]:
    """The minimal server's handler on the same requests (its own key, so its own Decrypt blob)."""
    work = MinimalWork(REGION, bench.credentials.access_key_id, bench.credentials.secret_access_key)
    blob = (await bench.call("Encrypt", {"KeyId": work.key_id, "Plaintext": _b64(os.urandom(1024))}, work.handle))[
        "CiphertextBlob"
    ]
    return {
        f"minimal: {name}": {**s, "handle": work.handle}
        for name, s in _scenarios(work.key_id, blob).items()
        if name != "Encrypt 1 KiB + context"  # the minimal server ignores the context
    }


async def _components(bench: Bench, key_id: str, n: int) -> dict[str, float]:
    """The steps of an Encrypt 1 KiB, each timed alone over ``n`` calls (us per call)."""
    services = bench.app[routes.SERVICES]
    params = {"KeyId": key_id, "Plaintext": _b64(os.urandom(1024))}
    headers, body = bench.signed("Encrypt", params)
    request = bench.request(headers, body)
    now = services.clock.now()
    raw = orjson.loads(body)
    validated = shapes.validate_request("Encrypt", raw)
    authenticated = await services.authn.authenticate(
        method="POST", path="/", query="", headers=sigv4.HeaderView(request.headers), body=body, now=now,
        source_ip="127.0.0.1",
    )  # fmt: skip
    caller = authenticated.caller

    def record() -> CallRecord:
        return CallRecord(
            operation="Encrypt", event_source=routes.EVENT_SOURCE_KMS, request_id=uuid4_str(),
            event_time=now, region=REGION, source_ip="127.0.0.1", user_agent=headers["User-Agent"],
            principal=caller.principal, access_key_id=caller.access_key_id, params=validated,
        )  # fmt: skip

    handler = KMS_OPERATIONS["Encrypt"]
    rec = record()
    result = await handler(OpContext(services, caller, rec, now), validated)
    rec.result = result

    async def authn() -> Any:
        return await services.authn.authenticate(
            method="POST", path="/", query="", headers=sigv4.HeaderView(request.headers), body=body, now=now,
            source_ip="127.0.0.1",
        )  # fmt: skip

    async def operation() -> Any:
        r = record()
        return await handler(OpContext(services, caller, r, now), validated)

    steps: dict[str, Callable[[], Any]] = {
        "request id": uuid4_str,
        "clock.now": services.clock.now,
        "sigv4 authenticate": authn,
        "orjson.loads body": lambda: orjson.loads(body),
        "shapes.validate_request": lambda: shapes.validate_request("Encrypt", raw),
        "CallRecord()": record,
        "ops.encrypt (authz + seal)": operation,
        "shapes.render_response": lambda: shapes.render_response("Encrypt", result),
        "events.encode": lambda: events.encode(rec),
    }
    out: dict[str, float] = {}
    for name, fn in steps.items():
        gc.collect()
        start = time.process_time()
        for _ in range(n):
            value = fn()
            if isinstance(value, Awaitable):
                await value
        out[name] = (time.process_time() - start) / n * 1e6
    return out


def _profile(bench: Bench, key_id: str, n: int, top: int) -> str:
    params = {"KeyId": key_id, "Plaintext": _b64(os.urandom(1024))}
    headers, body = bench.signed("Encrypt", params)
    return profile_requests([bench.request(headers, body) for _ in range(n)], top)


def profile_requests(requests: list[web.Request], top: int) -> str:
    """cProfile's ``top`` functions by own time over ``routes.handle`` of each request, in order."""

    async def run() -> None:
        for request in requests:
            await routes.handle(request)

    profiler = cProfile.Profile()
    coro = run()
    profiler.enable()
    try:
        coro.send(None)  # the in-memory path never suspends: one send runs the whole loop
    except StopIteration:
        pass
    finally:
        profiler.disable()
    out = _StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


class _StringIO:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


@dataclass
class InProcessRegion:
    """A region served in this process for a micro: its own PostgreSQL (``fsync`` off: the database is
    not what is measured), a state directory and root key, and events kept in memory. ``app()`` makes
    a worker's application over it; the caller sets it up (``web.AppRunner``) and cleans it up, so a
    micro can restart a worker over the same database."""

    admin_url: str
    keyring: RootKeyring
    settings: Settings
    sink: MemoryAuditSink

    def app(self) -> web.Application:
        async def audit_factory(_pool: Any, _settings: Settings) -> MemoryAuditSink:
            return self.sink

        return create_app(self.settings, self.keyring, audit_factory=audit_factory)


@contextlib.asynccontextmanager
async def in_process_region(prefix: str) -> AsyncIterator[InProcessRegion]:
    """An ``InProcessRegion`` in a temporary directory, removed with its PostgreSQL afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    pg = LocalPostgres(tmp / "pg", durable=False)
    try:
        admin_url = pg.start()
        state_dir = tmp / "state"
        init_state_dir(state_dir, region=REGION)
        keyring = load_file_keyring(state_dir / "root.key")
        settings = Settings(region=REGION, database_url=admin_url, state_dir=state_dir, listen_port=0, extra=QUIET)
        yield InProcessRegion(admin_url, keyring, settings, MemoryAuditSink())
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with in_process_region("hotpath-micro-") as region:
        return await _measure(region, args)


async def _measure(region: InProcessRegion, args: argparse.Namespace) -> dict[str, Any]:
    sink = region.sink
    app = region.app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # runs the lifecycle: pool, migrations, caches, listener
    try:
        bench = Bench(app, await _identity(region.admin_url, region.keyring))
        key_id = (await bench.call("CreateKey", {}))["KeyMetadata"]["KeyId"]
        blob = (await bench.call("Encrypt", {"KeyId": key_id, "Plaintext": _b64(os.urandom(1024))}))["CiphertextBlob"]
        scenarios = _scenarios(key_id, blob)
        if args.minimal:
            scenarios.update(await _minimal_scenarios(bench))
        for s in scenarios.values():  # warm every cache (key, policy, decision, signing key)
            await bench.per_request_us(s["op"], s["params"], 200, s.get("handle", routes.handle))
        results: dict[str, Any] = {"requests": args.requests, "rounds": args.rounds, "us_per_request": {}}
        timings: dict[str, list[float]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits every scenario alike
            for name, s in scenarios.items():
                timings[name].append(
                    await bench.per_request_us(s["op"], s["params"], args.requests, s.get("handle", routes.handle))
                )
        for name, rounds in timings.items():
            results["us_per_request"][name] = {"median": statistics.median(rounds), "min": min(rounds)}
        steps = [await _components(bench, key_id, args.requests // 2) for _ in range(args.rounds)]
        results["components_us"] = {name: min(s[name] for s in steps) for name in steps[0]}
        if args.profile:
            results["profile"] = _profile(bench, key_id, args.requests, args.profile)
        results["audit_events"] = sink.events
        return results
    finally:
        await runner.cleanup()


def _gaps(results: dict[str, Any]) -> dict[str, float]:
    """regionkms's best round less the minimal handler's, per scenario both ran."""
    timed = results["us_per_request"]
    return {
        name: timed[name]["min"] - timed[f"minimal: {name}"]["min"] for name in timed if f"minimal: {name}" in timed
    }


def _report(results: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    def row(name: str, now: float, before: float | None, extra: str = "") -> str:
        if before is None:
            return f"  {name:<34} {now:8.1f}{extra}"
        change = f"{now - before:+8.1f} ({(now / before - 1) * 100:+.0f} %)"
        return f"  {name:<34} {before:8.1f} {now:8.1f} {change}{extra}"

    head = f"  {'':<34} {'before':>8} {'after':>8} {'delta':>8}" if baseline else f"  {'':<34} {'us':>8}"
    print(f"handle() CPU per request, best of {results['rounds']} rounds of {results['requests']} requests (us)")
    print(head + "   (medians)")
    for name, v in results["us_per_request"].items():
        before = baseline["us_per_request"].get(name, {}) if baseline else {}
        medians = f"{before['median']:.1f} -> " if "median" in before else ""
        print(row(name, v["min"], before.get("min"), f"   ({medians}{v['median']:.1f})"))
    gaps = _gaps(results)
    if gaps:
        print("\nregionkms - minimal server, handler CPU per request (best rounds, us)")
        for name, gap in gaps.items():
            before_gap = _gaps(baseline).get(name) if baseline else None
            print(row(name, gap, before_gap))
    print("\nEncrypt 1 KiB, steps timed alone (us per call, best of the rounds)")
    print(head)
    for name, v in results["components_us"].items():
        before = baseline.get("components_us", {}).get(name) if baseline else None
        print(row(name, v, before))
    if "profile" in results:
        print("\ncProfile, Encrypt 1 KiB through handle(), by self time")
        print(results["profile"])


def _rounded(value: Any) -> Any:
    """Figures to 0.1 us, as they are printed (the noise of a shared machine is far above that)."""
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print cProfile's top N functions")
    parser.add_argument("--minimal", action="store_true", help="add the minimal server's handler (the floor)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--baseline", type=Path, help="an earlier --out file, printed as 'before'")
    args = parser.parse_args()
    regiond_logging.configure("warning")
    results = asyncio.run(main_async(args))
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    if baseline is not None:
        baseline = baseline.get("after", baseline)  # an --out file written with a baseline holds both
    _report(results, baseline)
    if args.out:
        figures = {k: v for k, v in results.items() if k != "profile"}
        figures["gap_to_minimal_us"] = _gaps(results)
        out = {"before": baseline, "after": figures} if baseline is not None else figures
        args.out.write_text(json.dumps(_rounded(out), indent=2) + "\n")


if __name__ == "__main__":
    main()
