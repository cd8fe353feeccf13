"""The node's HTTP listener: aiohttp's server with the bounds a public endpoint needs and aiohttp lacks.

A client that is slow on purpose must not hold a connection, a handler or a worker for long
(slowloris, issue 13 finding 9). What each bound covers:

====================  =====================================================================
header timeout        a request's header block, from its first byte (on a fresh connection:
                      from the accept) to its blank line; past it the connection is closed
                      without an answer (nothing of the request is known yet)
body timeout          the whole body, from the end of the headers (``regiond.protocol.routes``):
                      past it the answer is ``RequestTimeoutException`` (HTTP 408, which the
                      AWS SDKs retry) and the connection is closed. A bound on the whole body,
                      not between reads, so dribbling a byte at a time does not extend it
idle timeout          a kept-alive connection between requests (aiohttp's ``keepalive_timeout``);
                      it also bounds whatever the header timeout does not see (the rest of a
                      header block that arrived while the previous request was being handled)
max connections       open connections per worker process; one more is answered
                      ``ThrottlingException`` (HTTP 400, as AWS KMS throttles) and closed at once,
                      before anything of it is read. The node's bound is workers times this
====================  =====================================================================

Header line and field sizes are aiohttp's (8190 bytes each, 128 fields), the body cap is the
application's ``client_max_size`` (1 MiB).

How: ``listen`` serves the application's aiohttp ``Server`` through ``loop.create_server`` with a
protocol factory making ``_BoundedHandler``s, aiohttp's ``web.RequestHandler`` with the header
timer and the connection count added. The header timer reads two attributes aiohttp keeps
private, ``_waiter`` (pending while the connection waits for a complete request: aiohttp's own
keep-alive timer uses it the same way) and ``_request_count`` (header blocks parsed so far); a
handler checks that they exist when made, so an aiohttp that renamed them fails at the first
connection instead of silently losing the bound (tests/integration/test_http_limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from regiond.config import Settings
from regiond.randomids import uuid4_str
from regiond.runtime.metrics import HTTP_CONNECTIONS, HTTP_CONNECTIONS_REFUSED, HTTP_TIMEOUTS

log = structlog.get_logger(__name__)

REFUSAL_LOG_INTERVAL_S = 10.0
# After answering a request whose body was not read (413: too large; 408: too slow), aiohttp reads and
# drops what the client still sends for this long before closing, so that a client still sending reads
# the answer rather than a reset. aiohttp's 10 s would keep every timed-out connection 10 s longer.
LINGER_S = 2.0
_PRIVATE_ATTRIBUTES = ("_waiter", "_request_count")


@dataclass(frozen=True)
class HttpLimits:
    """The listener's bounds (module docstring); every one > 0."""

    header_timeout_s: float
    idle_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(settings.http_header_timeout_s, settings.http_idle_timeout_s, settings.http_max_connections)

    def __post_init__(self) -> None:
        if not (self.header_timeout_s > 0 and self.idle_timeout_s > 0 and self.max_connections > 0):
            raise ValueError(f"HTTP limits must be positive: {self}")


class _Admission:
    """This worker's open connections against its limit, and the rate-limited warning when it refuses."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._refused_since_log = 0
        self._last_log = -REFUSAL_LOG_INTERVAL_S

    def admit(self) -> bool:
        if self.open >= self.limit:
            HTTP_CONNECTIONS_REFUSED.inc()
            self._refused_since_log += 1
            now = time.monotonic()
            if now - self._last_log >= REFUSAL_LOG_INTERVAL_S:
                log.warning("http.connections_at_limit", limit=self.limit, refused=self._refused_since_log)
                self._last_log, self._refused_since_log = now, 0
            return False
        self.open += 1
        HTTP_CONNECTIONS.inc()
        return True

    def release(self) -> None:
        self.open -= 1
        HTTP_CONNECTIONS.dec()


def _throttled_response() -> bytes:
    body = orjson.dumps(
        {"__type": "ThrottlingException", "message": "Too many open connections to this node; retry with backoff"}
    )
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        f"x-amzn-RequestId: {uuid4_str()}\r\n"
        "Content-Type: application/x-amz-json-1.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _BoundedHandler(web.RequestHandler):
    """aiohttp's connection handler, admitted against the worker's limit and with a header timer."""

    def __init__(self, manager: web.Server, admission: _Admission, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        missing = [name for name in _PRIVATE_ATTRIBUTES if not hasattr(self, name)]
        if missing:
            raise RuntimeError(f"this aiohttp has no RequestHandler.{missing[0]}: the header timeout cannot work")
        self._admission = admission
        self._header_timeout_s = header_timeout_s
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admission.admit():
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_throttled_response())
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._admission.release()
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a header block is complete: the body bound takes over
            self._cancel_header_timer()
        elif self._header_timer is None and self._awaiting_request():  # first bytes of the next request
            self._arm_header_timer()

    def _awaiting_request(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm_header_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._header_timeout_s, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_request():
            HTTP_TIMEOUTS.labels("header").inc()
            log.debug("http.header_timeout", peer=str(self.peername))
            self.force_close()


class Listener:
    """A started listener: ``port`` is the bound port; ``close`` stops accepting, then drains the application."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self._runner = runner
        self._server = server
        self.port: int = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()
        await self._runner.cleanup()  # closes idle connections, waits for handlers (shutdown_timeout)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()


async def listen(
    app: web.Application,
    host: str,
    port: int,
    limits: HttpLimits,
    *,
    reuse_port: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout_s: float = 10.0,
    backlog: int = 1024,
) -> Listener:
    """Set ``app`` up and serve it on ``host:port`` within ``limits``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s, handle_signals=False)
    await runner.setup()
    manager = runner.server
    assert manager is not None
    admission = _Admission(limits.max_connections)
    loop = asyncio.get_running_loop()

    def make_handler() -> _BoundedHandler:
        return _BoundedHandler(
            manager, admission, limits.header_timeout_s, loop=loop, access_log=None,
            keepalive_timeout=limits.idle_timeout_s, lingering_time=LINGER_S,
            # The body as sent, never inflated: SigV4 signs the bytes on the wire, KMS takes no
            # compressed requests (routes refuses Content-Encoding), and an inflate error would
            # surface outside any handler.
            auto_decompress=False,
        )  # fmt: skip

    try:
        server = await loop.create_server(
            make_handler, host, port, ssl=ssl_context, backlog=backlog, reuse_port=reuse_port or None
        )
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(runner, server)
