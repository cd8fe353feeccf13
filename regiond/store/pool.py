"""The asyncpg pool and the transaction context every repository runs in.

This package is the only asyncpg user: repositories take a ``Conn`` (a pooled connection,
usually inside ``transaction()``) and return domain objects, translating SQLSTATEs into
``KmsError`` classes so asyncpg never leaks upward.

Failover (docs/OPERATIONS.md, High availability). The database URL may name several hosts
(``postgresql://h1:p1,h2:p2/db?target_session_attrs=read-write``): asyncpg tries them in order and
keeps the first that takes writes, for the pool's connections and for the dedicated ones
(``connect``: the LISTEN listener, the leadership lock sessions) alike. When the primary goes away
or becomes read-only, this module is what lets a node carry on without a restart:

- every connection has TCP keepalives and a TCP user timeout (``KEEPALIVE``), so a primary that
  vanished without closing its sockets (power loss, a partition) is noticed within about
  ``KEEPALIVE_NOTICED_S`` and not after the kernel's two hours;
- the hosts of a multi-host URL are tried one at a time, each within its share of
  ``CONNECT_TIMEOUT_S`` (``_connect_each``), so a dead first host cannot keep the second from
  being reached;
- a connection that failed because its server went away, is shutting down, or no longer takes
  writes (SQLSTATE 25006, a demoted primary) is terminated, not returned to the pool, so the next
  acquire connects anew through the URL and reaches whichever host is the primary now;
- ``transaction()`` and ``connection()`` turn that failure into the AWS error a client retries
  (``KMSInternalException``, or ``DependencyTimeoutException`` for a timeout) without retrying the
  call here: a write that failed on a read-only server is never sent again on its own, to a standby
  or anywhere, since it may have been half done; the client's retry is a new call.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeAlias, cast

import asyncpg
import structlog

from regiond.errors import DependencyTimeoutException, KmsError, KMSInternalException

log = structlog.get_logger(__name__)

ACQUIRE_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
"""One connection attempt, every host of a multi-host URL together, each host an equal share of it
(``_connect_each``); no more than ``ACQUIRE_TIMEOUT_S``, which bounds an acquire's connect."""

# Client-side TCP keepalives on every database connection (asyncpg has no libpq ``keepalives_*``
# parameters, and ``server_settings`` only reach the server's side): probes after 10 s idle, every
# 3 s, 3 unanswered ones drop the connection; the user timeout drops one whose sent data stays
# unacknowledged as long (a query in flight when the server vanished). Linux names; elsewhere only
# SO_KEEPALIVE is set.
KEEPALIVE = {"idle_s": 10, "interval_s": 3, "count": 3}
KEEPALIVE_NOTICED_S = KEEPALIVE["idle_s"] + KEEPALIVE["interval_s"] * KEEPALIVE["count"]

# Typed by asyncpg-stubs: a pooled connection is a proxy with the Connection's methods.
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
Isolation: TypeAlias = Literal["read_committed", "read_uncommitted", "serializable", "repeatable_read"]


def set_keepalive(sock: Any) -> None:
    """TCP keepalives and the user timeout (``KEEPALIVE``) on a connected TCP socket."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: the server's end is on this machine, its death closes it
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE["idle_s"]), ("TCP_KEEPINTVL", KEEPALIVE["interval_s"]),
        ("TCP_KEEPCNT", KEEPALIVE["count"]), ("TCP_USER_TIMEOUT", KEEPALIVE_NOTICED_S * 1000),
    ):  # fmt: skip
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class KeepaliveConnection(asyncpg.Connection):
    """Every connection this package opens (``connection_class``, asyncpg's documented seam): its
    socket gets ``set_keepalive`` as soon as it is connected (TLS included: the transport hands out
    the TCP socket underneath)."""

    def __init__(self, protocol: Any, transport: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, transport, *args, **kwargs)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            set_keepalive(sock)


class _DriverTraceback(logging.Filter):
    """asyncpg's pool logs each failed attempt to reopen its minimum of connections as a WARNING with the
    driver's traceback: during a failover, a traceback a second in an operator's log for what is the
    expected state. Kept as one line naming the error class, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            record.msg, record.args = "%s (%s)", (record.getMessage(), type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
        return True


_DRIVER_FILTER = _DriverTraceback()


async def _init_connection(con: Any) -> None:
    await con.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    database_url: str, *, min_size: int = 2, max_size: int = 10, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> Pool:
    logging.getLogger("asyncpg.pool").addFilter(_DRIVER_FILTER)  # idempotent: a filter is added once
    pool: Pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=COMMAND_TIMEOUT_S,
        timeout=connect_timeout_s,
        connection_class=KeepaliveConnection,
        connect=cast(Any, _connect_each),  # the stubs' Protocol spells out every keyword; ours passes them on
    )
    return pool


async def connect(
    database_url: str, *, timeout_s: float = CONNECT_TIMEOUT_S, server_settings: dict[str, str] | None = None
) -> asyncpg.Connection[asyncpg.Record]:
    """A dedicated connection outside the pool (LISTEN, session locks), opened as the pool's are."""
    con: asyncpg.Connection[asyncpg.Record] = await _connect_each(
        database_url, timeout=timeout_s, server_settings=server_settings, connection_class=KeepaliveConnection
    )
    return con


def single_host_urls(database_url: str) -> list[str]:
    """A multi-host URL (``postgresql://u:p@h1:p1,h2:p2/db?...``) as one URL per host, in order, each
    with the same credentials, database and parameters; ``[database_url]`` for any other URL (one
    host, hosts given in the query, a Unix socket): asyncpg then reads it as it is."""
    parts = urllib.parse.urlsplit(database_url)
    auth, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return [database_url]
    return [urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}{at}{host}")) for host in hosts.split(",")]


async def _connect_each(dsn: str, *, timeout: float = CONNECT_TIMEOUT_S, **kwargs: Any) -> Any:  # noqa: ASYNC109
    """asyncpg's ``connect`` (the pool's ``connect`` seam), trying the hosts of a multi-host URL one by
    one, each within its share of ``timeout``.

    asyncpg's own multi-host connect has one timeout for every host together, so a first host that
    drops packets (a powered-off primary: no refusal, no reset) would use it all up on every attempt
    and the second host, the promoted standby, would never be tried; libpq's ``connect_timeout`` is
    per host too. Each single-host attempt checks ``target_session_attrs`` as asyncpg does (a standby
    is refused with ``TargetServerAttributeNotMatched`` under ``read-write``); the last failure is
    raised when no host would do."""
    urls = single_host_urls(dsn)
    share_s = timeout / len(urls)
    last: BaseException | None = None
    for url in urls:
        try:
            return await asyncpg.connect(url, timeout=share_s, **kwargs)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            last = exc  # the next host, as libpq does; an error of the last host is raised below
    assert last is not None
    raise last


# The server went away, is shutting down or starting, refuses connections now, or takes no writes:
# the connection that saw it is useless, and the call may succeed on a new one (another host).
_GONE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; asyncpg's own connection errors are OSError too
    asyncpg.ConnectionDoesNotExistError,  # closed in the middle of an operation
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01: the server is shutting down (or pg_terminate_backend)
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a standby, or a demoted primary
    asyncpg.TargetServerAttributeNotMatched,  # no host of the URL takes writes (before a promotion)
    # A connection whose server sent its last FATAL ("unexpected postmaster exit") between two calls:
    # still open for a moment, its protocol stuck consuming that error, the next call is refused
    # ("cannot switch to state ...; another operation is in progress"). It is done for.
    asyncpg.InternalClientError,
    asyncpg.TooManyConnectionsError,  # 53300: a new primary flooded by every node reconnecting
)  # fmt: skip
_GONE_OR_TIMEOUT: tuple[type[BaseException], ...] = (*_GONE, TimeoutError)


def _gone_cause(exc: BaseException) -> BaseException | None:
    """The failure in ``exc``'s chain that shows the server unusable (``_GONE`` or a timeout), or None.

    The chain counts: a connection lost inside a transaction surfaces as the ``InterfaceError`` of the
    transaction's exit ("the underlying connection is closed"), raised while handling the loss."""
    if isinstance(exc, KmsError):  # already the answer (a repository's translation): never replaced
        return None
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, _GONE_OR_TIMEOUT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def unavailable(exc: BaseException) -> KmsError | None:
    """The AWS error for a database failure a retry may not meet (see the module docstring), or None.

    ``TimeoutError``: no connection within ``ACQUIRE_TIMEOUT_S`` or no answer within a statement's
    timeout (a hung or unreachable server): ``DependencyTimeoutException``, as AWS names a
    dependency that did not answer. The rest of ``_GONE``: ``KMSInternalException``, AWS's
    retryable server fault. Messages name no host and quote no driver text."""
    cause = _gone_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, TimeoutError):
        return DependencyTimeoutException("The key store did not answer in time; retry the request")
    return KMSInternalException("The key store is unavailable (failing over or unreachable); retry the request")


def drop_if_gone(con: Conn | asyncpg.Connection[asyncpg.Record], exc: BaseException) -> bool:
    """Terminate ``con`` if ``exc`` shows its server unusable (``_GONE``, or a timeout: its state is
    unknown), so that the pool never hands it out again; true if it was. Safe on a connection that
    is already closed; a terminated pooled connection returns its slot to the pool by itself."""
    if _gone_cause(exc) is None:
        return False
    try:
        con.terminate()
    except asyncpg.InterfaceError:  # already released back to the pool
        return False
    return True


def _translated(exc: BaseException) -> BaseException:
    failure = unavailable(exc)
    if failure is None:
        return exc
    cause = _gone_cause(exc)
    log.warning("database.unavailable", error=type(cause).__name__, sqlstate=getattr(cause, "sqlstate", None))
    return failure


@asynccontextmanager
async def transaction(pool: Pool, *, isolation: Isolation = "read_committed") -> AsyncIterator[Conn]:
    """A pooled connection inside one transaction, committed on normal exit.

    A failure that shows the server gone or read-only drops the connection and is raised as the
    AWS error of ``unavailable`` (the call is not retried here); any other exception passes."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
            try:
                async with con.transaction(isolation=isolation):
                    yield con
            except BaseException as exc:
                drop_if_gone(con, exc)
                raise
    except Exception as exc:
        failure = _translated(exc)
        if failure is exc:
            raise
        raise failure from exc


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[Conn]:
    """A pooled connection outside a transaction; failures as ``transaction``'s."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
            try:
                yield con
            except BaseException as exc:
                drop_if_gone(con, exc)
                raise
    except Exception as exc:
        failure = _translated(exc)
        if failure is exc:
            raise
        raise failure from exc


async def ping(pool: Pool) -> None:
    """One round trip on a pooled connection (readiness); raises what the pool or server raises."""
    async with connection(pool) as con:
        await con.fetchval("SELECT 1")


async def read_only_reason(pool: Pool) -> str | None:
    """Why the database cannot take this node's writes, or None: a standby, or read-only sessions.

    A node whose pool reaches a hot standby (a multi-host URL without ``target_session_attrs``, a
    failover that demoted the old primary) answers reads but fails every write, audit included.
    """
    async with connection(pool) as con:
        row = await con.fetchrow(
            "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS ro"
        )
    assert row is not None
    if row["standby"]:
        return "the database is a standby (in recovery)"
    if row["ro"] == "on":
        return "the database's sessions are read-only"
    return None


# What a command-line tool catches to say "the database failed" in one line without importing
# asyncpg: a refused or dropped connection, a server error, a timeout, or what ``transaction()`` and
# ``connection()`` raise for them (the AWS errors of ``unavailable``).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, KMSInternalException,
    DependencyTimeoutException,
)  # fmt: skip


def connection_usable(con: Conn) -> bool:
    """Whether a connection kept outside the pool is open and still the holder's: the pool takes back
    a connection whose server session ended (then every call on it raises ``InterfaceError``)."""
    try:
        return not con.is_closed()
    except asyncpg.InterfaceError:
        return False
