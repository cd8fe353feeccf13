"""The load generator: pre-signed requests replayed over keep-alive connections.

Why pre-signed: computing SigV4 per request would make the client, not the server, the
bottleneck on a 2-core machine. A SigV4 signature stays valid for 15 minutes (the
server's clock-skew window), so every run signs its request set right before it starts
and replays it; runs are far shorter than the window.

Two engines replay the same request file:

- ``wrk`` (Debian package ``wrk``) with ``wrk_replay.lua`` when ``shutil.which("wrk")``
  finds it: a C event loop, the cheapest client there is;
- otherwise ``python -m benchmarks.loadgen``, a separate process running a raw asyncio
  ``Protocol`` client (uvloop when present): no HTTP library, one ``bytes`` write per
  request and a minimal response parser, so its per-request cost is a few microseconds.

Both run closed-loop at a fixed concurrency (one request in flight per connection) for a
fixed duration and report requests/s, errors (anything but HTTP 200, plus socket errors)
and latency percentiles over *all* requests. The asyncio engine keeps latencies in
``LatencyHistogram`` (HdrHistogram-style log-linear buckets, exact below 1024 us, at most
0.1 % relative error above), wrk in its own exact per-microsecond histogram.

Request file format (read by both engines): for each request, its length in ASCII decimal,
``\\n``, then the raw HTTP/1.1 request bytes (head and body).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from kmsclient.sigv4 import Credentials, sign_headers

CONTENT_TYPE = "application/x-amz-json-1.1"
WRK_SCRIPT = Path(__file__).with_name("wrk_replay.lua")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUB_BUCKET_BITS = 10
_SUB_BUCKETS = 1 << SUB_BUCKET_BITS
CONNECT_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 30.0
SETUP_TIMEOUT_S = 900.0
_PENDING: set[asyncio.Future[None]] = set()  # reconnects in progress (kept from the GC)


# --------------------------------------------------------------------------- statistics


class LatencyHistogram:
    """Counts of latencies in microseconds, in log-linear buckets (the HdrHistogram layout).

    Values below 1024 us have a bucket each; above, each power of two is split into 512
    buckets, so a reported percentile is at most 0.2 % above the true value (percentiles
    report a bucket's highest value, as HdrHistogram does, never an optimistic one). The
    exact minimum, maximum and sum are kept alongside. Buckets live in a dict, so an empty
    range costs nothing and two histograms merge by adding counts.
    """

    __slots__ = ("buckets", "count", "max_us", "min_us", "total_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total_us = 0
        self.min_us = 0
        self.max_us = 0

    @staticmethod
    def bucket_of(value_us: int) -> int:
        if value_us < _SUB_BUCKETS:
            return value_us
        shift = value_us.bit_length() - SUB_BUCKET_BITS
        return (shift << SUB_BUCKET_BITS) + (value_us >> shift)

    @staticmethod
    def bucket_high(index: int) -> int:
        """The highest value that falls into bucket ``index``."""
        if index < _SUB_BUCKETS:
            return index
        shift, mantissa = index >> SUB_BUCKET_BITS, index & (_SUB_BUCKETS - 1)
        return ((mantissa + 1) << shift) - 1

    def record(self, value_us: int) -> None:
        value_us = max(0, int(value_us))
        index = self.bucket_of(value_us)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        if self.count == 0 or value_us < self.min_us:
            self.min_us = value_us
        self.max_us = max(self.max_us, value_us)
        self.count += 1
        self.total_us += value_us

    def merge(self, other: LatencyHistogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        if other.count:
            self.min_us = other.min_us if self.count == 0 else min(self.min_us, other.min_us)
            self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.total_us += other.total_us

    def percentile(self, pct: float) -> int:
        """The smallest recorded value (bucket high end) at or below which ``pct`` % of values lie."""
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(pct / 100.0 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.bucket_high(index), self.max_us)
        return self.max_us

    @property
    def mean_us(self) -> float:
        return self.total_us / self.count if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total_us": self.total_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        h = cls()
        h.buckets = {int(k): int(v) for k, v in data["buckets"].items()}
        h.count, h.total_us = int(data["count"]), int(data["total_us"])
        h.min_us, h.max_us = int(data["min_us"]), int(data["max_us"])
        return h


@dataclass
class LoadResult:
    """One measured run: what the report and plots are made of."""

    engine: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    error_detail: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        """Successful requests per second (errors do not count as throughput)."""
        return (self.requests - self.errors) / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rps"] = round(self.rps, 1)
        return out


def result_from_histogram(
    engine: str, concurrency: int, duration_s: float, hist: LatencyHistogram, errors: int, detail: dict[str, int]
) -> LoadResult:
    """Summarise a histogram; ``hist`` holds every completed request, errors included."""
    return LoadResult(
        engine=engine,
        concurrency=concurrency,
        duration_s=duration_s,
        requests=hist.count,
        errors=errors,
        p50_ms=hist.percentile(50) / 1000,
        p90_ms=hist.percentile(90) / 1000,
        p99_ms=hist.percentile(99) / 1000,
        max_ms=hist.max_us / 1000,
        mean_ms=round(hist.mean_us / 1000, 3),
        error_detail=detail,
    )


# --------------------------------------------------------------------------- request sets


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    region: str
    credentials: Credentials

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


def presign(endpoint: Endpoint, target: str, body: bytes, now: dt.datetime | None = None) -> bytes:
    """One raw HTTP/1.1 request, signed for ``now`` (valid for the server's 15-minute skew window)."""
    headers = sign_headers(
        credentials=endpoint.credentials,
        method="POST",
        url=endpoint.url,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target},
        body=body,
        region=endpoint.region,
        service="kms",
        now=now or dt.datetime.now(dt.UTC),
    )
    lines = ["POST / HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def presign_all(endpoint: Endpoint, calls: Iterable[tuple[str, bytes]]) -> list[bytes]:
    now = dt.datetime.now(dt.UTC)
    return [presign(endpoint, target, body, now) for target, body in calls]


def write_request_file(path: Path, requests: Sequence[bytes]) -> None:
    with path.open("wb") as f:
        for raw in requests:
            f.write(b"%d\n" % len(raw))
            f.write(raw)


def read_request_file(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        length = int(data[pos:nl])
        out.append(data[nl + 1 : nl + 1 + length])
        pos = nl + 1 + length
    return out


# --------------------------------------------------------------------------- asyncio engine

OnResponse = Callable[[int, bytes, int], "bytes | None"]


def _parse_head(head: bytes) -> tuple[int, bool]:
    """(Content-Length, whether the server closes the connection) of a response head ending in CRLF."""
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    length = int(lowered[at + 17 : lowered.index(b"\r\n", at + 2)]) if at >= 0 else 0
    return length, b"\r\nconnection: close\r\n" in lowered


class _Connection(asyncio.Protocol):
    """One connection with one request in flight; the callback picks the next request.

    Keep-alive is the normal case. A server that answers ``Connection: close`` (moto's
    werkzeug does, on every response) gets the next request on a new connection, as wrk
    does; that connect is part of the next request's latency.
    """

    def __init__(self, host: str, port: int, on_response: OnResponse, done: asyncio.Future[None]) -> None:
        self._host, self._port = host, port
        self._on_response = on_response
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._started_ns = 0
        self._need = -1  # total bytes of the current response once its head is parsed
        self._status = 0
        self._body_at = 0
        self._closing = False
        self._handed_over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, raw: bytes, started_ns: int | None = None) -> None:
        assert self._transport is not None
        self._started_ns = started_ns or time.perf_counter_ns()
        self._transport.write(raw)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            if self._need < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                length, self._closing = _parse_head(bytes(buf[: head_end + 2]))
                self._need = head_end + 4 + length
                self._status = int(buf[9:12])
                self._body_at = head_end + 4
            if len(buf) < self._need:
                return
            elapsed_us = (time.perf_counter_ns() - self._started_ns) // 1000
            body = bytes(buf[self._body_at : self._need])
            del buf[: self._need]
            self._need = -1
            nxt = self._on_response(self._status, body, elapsed_us)
            if nxt is None:
                self._finish()
                return
            if self._closing:
                self._handed_over = True
                assert self._transport is not None
                self._transport.close()
                task = asyncio.ensure_future(self._reconnect(nxt, time.perf_counter_ns()))
                _PENDING.add(task)
                task.add_done_callback(_PENDING.discard)
                return
            self.send(nxt)

    async def _reconnect(self, raw: bytes, started_ns: int) -> None:
        try:
            proto = await _connect(self._host, self._port, self._on_response, self._done)
        except OSError as exc:
            if not self._done.done():
                self._done.set_exception(exc)
            return
        proto.send(raw, started_ns)

    def _finish(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if not self._done.done():
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handed_over or self._done.done():
            return
        if exc is None:
            exc = ConnectionResetError("server closed the connection with a request in flight")
        self._done.set_exception(exc)


async def _connect(host: str, port: int, on_response: OnResponse, done: asyncio.Future[None]) -> _Connection:
    loop = asyncio.get_running_loop()
    transport, proto = await asyncio.wait_for(
        loop.create_connection(lambda: _Connection(host, port, on_response, done), host, port), CONNECT_TIMEOUT_S
    )
    proto.connection_made(transport)  # uvloop may not have called it yet; calling it twice is harmless
    return proto


async def _open(host: str, port: int, on_response: OnResponse) -> tuple[_Connection, asyncio.Future[None]]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    return await _connect(host, port, on_response, done), done


async def replay(
    host: str, port: int, requests: Sequence[bytes], *, concurrency: int, duration_s: float, seed: int | None = None
) -> LoadResult:
    """Closed loop for ``duration_s``: each connection sends a random request as soon as the last answers."""
    rng = random.Random(seed)
    hist = LatencyHistogram()
    detail: dict[str, int] = {}
    n = len(requests)
    deadline_ns = 0

    def on_response(status: int, _body: bytes, elapsed_us: int) -> bytes | None:
        hist.record(elapsed_us)
        if status != 200:
            key = f"http_{status}"
            detail[key] = detail.get(key, 0) + 1
        if time.perf_counter_ns() >= deadline_ns:
            return None
        return requests[rng.randrange(n)]

    conns = [await _open(host, port, on_response) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline_ns = time.perf_counter_ns() + int(duration_s * 1e9)
    for proto, _ in conns:
        proto.send(requests[rng.randrange(n)])
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(done for _, done in conns), return_exceptions=True), duration_s + STALL_TIMEOUT_S
        )
    except TimeoutError:
        outcomes = [TimeoutError()]  # a server that stops answering fails the run instead of hanging it
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            key = f"socket_{type(outcome).__name__}"
            detail[key] = detail.get(key, 0) + 1
    return result_from_histogram("asyncio", concurrency, elapsed, hist, sum(detail.values()), detail)


async def send_all(host: str, port: int, requests: Sequence[bytes], *, concurrency: int) -> list[tuple[int, bytes]]:
    """Send every request once (set-up work such as creating keys); answers in request order."""
    results: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    next_index = 0
    in_flight: dict[int, int] = {}

    def make_callback(slot: int) -> OnResponse:
        def on_response(status: int, body: bytes, _elapsed_us: int) -> bytes | None:
            nonlocal next_index
            results[in_flight[slot]] = (status, body)
            if next_index >= len(requests):
                return None
            in_flight[slot] = next_index
            next_index += 1
            return requests[in_flight[slot]]

        return on_response

    opened = [await _open(host, port, make_callback(slot)) for slot in range(min(concurrency, len(requests)))]
    for slot, (proto, _) in enumerate(opened):
        in_flight[slot] = next_index
        next_index += 1
        proto.send(requests[in_flight[slot]])
    await asyncio.wait_for(asyncio.gather(*(done for _, done in opened)), SETUP_TIMEOUT_S)
    return results


# --------------------------------------------------------------------------- wrk engine


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(host: str, port: int, request_file: Path, *, concurrency: int, duration_s: float) -> LoadResult:
    """Replay ``request_file`` with wrk (random request per call, see wrk_replay.lua)."""
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "BENCH_REQUESTS": str(request_file), "BENCH_WRK_OUT": str(out)}
        cmd = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            f"http://{host}:{port}/",
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=duration_s + 60)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        data = json.loads(out.read_text())
    detail = {k: int(v) for k, v in data["errors"].items() if int(v)}
    # wrk's "status" counts responses outside 2xx/3xx; KMS answers 200 on success only.
    return LoadResult(
        engine="wrk",
        concurrency=concurrency,
        duration_s=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        errors=sum(detail.values()),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        mean_ms=round(data["mean_us"] / 1000, 3),
        error_detail=detail,
    )


def run_load(
    host: str, port: int, requests: Sequence[bytes], *, concurrency: int, duration_s: float, engine: str = "auto"
) -> LoadResult:
    """Run one measurement from a separate process (wrk, or this module as ``python -m``)."""
    use_wrk = engine == "wrk" or (engine == "auto" and wrk_available())
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        request_file = Path(tmp) / "requests.bin"
        write_request_file(request_file, requests)
        if use_wrk:
            return run_wrk(host, port, request_file, concurrency=concurrency, duration_s=duration_s)
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            "--host",
            host,
            "--port",
            str(port),
            "--requests",
            str(request_file),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
            "--out",
            str(out),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=duration_s + 120, cwd=PROJECT_ROOT
        )
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {proc.stderr.strip()[-800:]}")
        data = json.loads(out.read_text())
        data.pop("rps", None)
        return LoadResult(**data)


def _install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description="replay pre-signed requests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", type=Path, required=True, help="request file (see module docstring)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--out", type=Path, help="write the result JSON here (default: stdout)")
    args = p.parse_args(argv)
    _install_uvloop()
    requests = read_request_file(args.requests)
    result = asyncio.run(replay(args.host, args.port, requests, concurrency=args.concurrency, duration_s=args.duration))
    text = json.dumps(result.to_json())
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
