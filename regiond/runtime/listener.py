"""The node's HTTP listener: aiohttp's server with the bounds a public endpoint needs and aiohttp lacks.

A client that is slow on purpose must not hold a connection, a handler or a worker for long
(slowloris, issue 13 finding 9). What each bound covers:

====================  =====================================================================
header timeout        a request's header block, from its first byte (on a fresh connection:
                      from the accept) to its blank line; past it the connection is closed
                      without an answer (nothing of the request is known yet)
body timeout          the whole body, from the end of the headers (``read_body_within``, called by
                      the handlers: ``regiond.protocol.routes`` answers ``RequestTimeoutException``,
                      HTTP 408, which the AWS SDKs retry; the replication receiver answers 408 too)
                      and the connection is closed. A bound on the whole body, not between
                      reads, so dribbling a byte at a time does not extend it
idle timeout          a kept-alive connection between requests (aiohttp's ``keepalive_timeout``);
                      it also bounds whatever the header timeout does not see (the rest of a
                      header block that arrived while the previous request was being handled)
max connections       open connections per worker process; one more is answered
                      ``ThrottlingException`` (HTTP 400, as AWS KMS throttles) and closed at once,
                      before anything of it is read (over TLS it is closed unanswered: a TLS client could not
                      read a plain answer). The node's bound is workers times this. A TLS
                      connection counts from its accept, so handshakes in progress count too
TLS handshake timeout from the accept to the end of the TLS handshake; past it the connection
                      is reset (``regionkms_tls_handshakes_total{outcome="timeout"}``). The header
                      timeout starts when the handshake is done
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

TLS: a listener given ``tls_context`` (a function returning the context for the next handshake, so
a reloaded certificate applies to new connections only: regiond.runtime.client_tls) accepts connections
itself (``loop.sock_accept``), admits each one against the limit before any TLS work, and hands the
socket to ``loop.connect_accepted_socket`` with that context, under the handshake bound, and the
same ``_BoundedHandler`` as protocol. Upgrading an accepted plain transport with ``start_tls`` does
not work under uvloop: it starts reading before its protocol can pause it, so the client's hello
could be consumed by the wrong protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from aiohttp import web

from regiond.config import Settings
from regiond.randomids import uuid4_str
from regiond.runtime.metrics import HTTP_CONNECTIONS, HTTP_CONNECTIONS_REFUSED, HTTP_TIMEOUTS, TLS_HANDSHAKES

log = structlog.get_logger(__name__)

REFUSAL_LOG_INTERVAL_S = 10.0
# After answering a request whose body was not read (413: too large; 408: too slow), aiohttp reads and
# drops what the client still sends for this long before closing, so that a client still sending reads
# the answer rather than a reset. aiohttp's 10 s would keep every timed-out connection 10 s longer.
LINGER_S = 2.0
_PRIVATE_ATTRIBUTES = ("_waiter", "_request_count")


class BodyTimeout(Exception):
    """A request's body did not arrive whole within the body timeout (the module docstring's table)."""


async def read_body_within(request: web.Request, timeout_s: float) -> bytes:
    """The whole body of ``request``, within ``timeout_s`` of the end of its headers, else ``BodyTimeout``.

    A body that stalls (headers, 2 of 100 bytes, then silence) would hold its handler and connection
    for good; one that dribbles in a byte at a time is bounded too, since the bound is on the whole
    body. aiohttp's own errors (too large, malformed chunking, connection lost) pass through.
    """
    if request.content.is_eof():  # the body came with the headers (nearly every call): no timer
        return await request.read()
    bound = asyncio.timeout(timeout_s)
    try:
        async with bound:
            return await request.read()
    except TimeoutError:
        if not bound.expired():
            raise  # the connection's own ETIMEDOUT (TCP keep-alive): the client is gone
        HTTP_TIMEOUTS.labels("body").inc()
        raise BodyTimeout from None


@dataclass(frozen=True)
class HttpLimits:
    """The listener's bounds (module docstring); every one > 0."""

    header_timeout_s: float
    idle_timeout_s: float
    max_connections: int
    tls_handshake_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.http_header_timeout_s, settings.http_idle_timeout_s, settings.http_max_connections,
            settings.tls_handshake_timeout_s,
        )  # fmt: skip

    def __post_init__(self) -> None:
        if not (
            self.header_timeout_s > 0 and self.idle_timeout_s > 0 and self.max_connections > 0
            and self.tls_handshake_timeout_s > 0
        ):  # fmt: skip
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
        self._on_lost: Callable[[], None] | None = None

    def adopt(self) -> None:
        """Serve a connection admitted before its TLS handshake (``_TlsServer``): released when it is lost."""
        self._admitted = True

    def adopted(self, on_lost: Callable[[], None]) -> None:
        """``on_lost`` is called when the adopted connection is lost (or now, if it already was)."""
        if not self._admitted:
            on_lost()
            return
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admitted:  # a plain connection: admitted here, at its accept
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
        if self._on_lost is not None:
            self._on_lost()
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


TlsContextSource = Callable[[], ssl.SSLContext]
"""The TLS context for the next handshake (called once per connection, so a reload applies to new ones)."""

TLS_SHUTDOWN_TIMEOUT_S = 2.0
"""How long a closing TLS connection waits for the client's close_notify before its socket is closed
(asyncio's default, 30 s, kept every closed connection's descriptor that long)."""
ACCEPT_RETRY_S = 0.1
"""After accept() fails for want of resources (EMFILE, ENOBUFS), the pause before trying again."""


class _TlsServer:
    """A TLS listener's sockets, accept loops, handshakes under way and open TLS connections, so that
    closing it ends all of them instead of leaving them to their timeouts."""

    def __init__(
        self, sockets: list[socket.socket], make_handler: Callable[[], _BoundedHandler], admission: _Admission,
        context: TlsContextSource, handshake_timeout_s: float, label: str,
    ) -> None:  # fmt: skip
        self.sockets = sockets
        self._make_handler = make_handler
        self._admission = admission
        self._context = context
        self._handshake_timeout_s = handshake_timeout_s
        self._label = label
        self._handshakes: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.BaseTransport] = set()
        loop = asyncio.get_running_loop()
        self._accepting = [loop.create_task(self._accept(sock), name="tls-accept") for sock in sockets]

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _address = await loop.sock_accept(sock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:  # out of descriptors or buffers: the connections already open go on
                log.warning("http.accept_failed", error=exc.strerror)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if not self._admission.admit():
                conn.close()  # closed unanswered: a TLS client could not read a plain ThrottlingException
                continue
            task = loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        handler = self._make_handler()
        handler.adopt()
        outcome = "failed"
        try:
            async with asyncio.timeout(self._handshake_timeout_s):
                transport, _ = await loop.connect_accepted_socket(
                    lambda: handler, conn, ssl=self._context(), ssl_handshake_timeout=self._handshake_timeout_s + 1,
                    ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S,
                )  # fmt: skip
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
        except OSError:  # ssl.SSLError (a refused hello or certificate), a reset, a hang-up: the client's doing
            pass
        finally:
            if outcome != "ok":  # cancelled too (the listener is closing): nothing of a request was read
                conn.close()
                self._admission.release()
        TLS_HANDSHAKES.labels(self._label, outcome).inc()
        if outcome == "ok":
            self._open.add(transport)
            handler.adopted(lambda: self._open.discard(transport))

    async def stop_accepting(self) -> None:
        for task in (*self._accepting, *self._handshakes):
            task.cancel()
        await asyncio.gather(*self._accepting, *self._handshakes, return_exceptions=True)
        for sock in self.sockets:
            sock.close()

    def abort_open(self) -> None:
        """After the application drained: whatever is still open (a TLS shutdown the client never answers)."""
        for transport in list(self._open):
            cast(asyncio.Transport, transport).abort()
        self._open.clear()


def _bind(host: str, port: int, *, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` as ``loop.create_server`` makes them (every address ``host`` names)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys((i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """A started listener: ``port`` is the bound port; ``close`` stops accepting, then drains the application."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server | None, tls: _TlsServer | None) -> None:
        self._runner = runner
        self._server = server
        self._tls = tls
        sockets = tls.sockets if tls is not None else list(server.sockets) if server is not None else []
        self.port: int = sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tls is not None:
            await self._tls.stop_accepting()
        await self._runner.cleanup()  # closes idle connections, waits for handlers (shutdown_timeout)
        if self._tls is not None:
            self._tls.abort_open()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def listen(
    app: web.Application,
    host: str,
    port: int,
    limits: HttpLimits,
    *,
    reuse_port: bool = False,
    tls_context: TlsContextSource | None = None,
    tls_label: str = "client",
    shutdown_timeout_s: float = 10.0,
    backlog: int = 1024,
) -> Listener:
    """Set ``app`` up and serve it on ``host:port`` within ``limits``, over TLS when ``tls_context`` is given
    (``tls_label`` names the listener in ``regionkms_tls_handshakes_total``)."""
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

    if tls_context is not None:
        try:
            sockets = _bind(host, port, reuse_port=reuse_port, backlog=backlog)
        except BaseException:
            await runner.cleanup()
            raise
        tls = _TlsServer(sockets, make_handler, admission, tls_context, limits.tls_handshake_timeout_s, tls_label)
        return Listener(runner, None, tls)
    try:
        server = await loop.create_server(make_handler, host, port, backlog=backlog, reuse_port=reuse_port or None)
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(runner, server, None)
