"""What a pooled or dedicated database connection does when its server goes away or turns read-only
(regiond.store.pool): which failures are the AWS errors a client retries, which connections are
dropped, and the TCP keepalives that notice a vanished server."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from regiond.errors import DependencyTimeoutException, KMSInternalException
from regiond.store import pool


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TargetServerAttributeNotMatched("None of the hosts match the target attribute requirement"),
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    ],
)
def test_a_server_gone_or_read_only_is_a_retryable_internal_error_naming_no_driver_text(exc: BaseException) -> None:
    failure = pool.unavailable(exc)
    assert isinstance(failure, KMSInternalException) and failure.status == 500
    assert str(exc) not in failure.message and "retry" in failure.message


def test_a_timeout_is_a_dependency_timeout() -> None:
    failure = pool.unavailable(TimeoutError())
    assert isinstance(failure, DependencyTimeoutException) and failure.status == 503


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),  # misuse
        ValueError("not a database failure"),
    ],
)
def test_other_failures_are_not_taken_for_an_outage(exc: BaseException) -> None:
    assert pool.unavailable(exc) is None


class _Con:
    def __init__(self) -> None:
        self.terminated = False

    def terminate(self) -> None:
        self.terminated = True


def test_only_a_connection_whose_server_is_gone_or_read_only_is_terminated() -> None:
    gone, kept, timed_out = _Con(), _Con(), _Con()
    assert pool.drop_if_gone(gone, asyncpg.ReadOnlySQLTransactionError("read-only"))  # type: ignore[arg-type]
    assert not pool.drop_if_gone(kept, asyncpg.UniqueViolationError("duplicate"))  # type: ignore[arg-type]
    assert pool.drop_if_gone(timed_out, TimeoutError())  # type: ignore[arg-type]
    assert gone.terminated and timed_out.terminated and not kept.terminated


def test_keepalives_are_set_on_a_tcp_socket() -> None:
    with socket.socket() as sock:
        pool.set_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == pool.KEEPALIVE["idle_s"]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == pool.KEEPALIVE["interval_s"]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == pool.KEEPALIVE["count"]
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == pool.KEEPALIVE_NOTICED_S * 1000


def test_a_unix_socket_is_left_alone() -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        pool.set_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_a_loss_seen_as_the_transaction_exit_error_is_still_an_outage() -> None:
    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        except asyncpg.ConnectionDoesNotExistError:
            raise asyncpg.InterfaceError(  # noqa: B904 - as asyncpg raises it: chained as context
                "cannot call Transaction.__aexit__(): the underlying connection is closed"
            )
    except asyncpg.InterfaceError as exc:
        chained: BaseException = exc
    assert isinstance(pool.unavailable(chained), KMSInternalException)
    con = _Con()
    assert pool.drop_if_gone(con, chained) and con.terminated  # type: ignore[arg-type]


def test_an_aws_error_is_never_replaced_even_when_raised_during_an_outage() -> None:
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError:
            raise KMSInternalException("already the answer")  # noqa: B904 - the context is the point
    except KMSInternalException as exc:
        assert pool.unavailable(exc) is None


def test_a_multi_host_url_is_tried_one_host_at_a_time_with_everything_else_kept() -> None:
    url = "postgresql://u:p%40ss@db-a:5432,db-b:6432,[::1]:5433/kms?target_session_attrs=read-write&sslmode=require"
    assert pool.single_host_urls(url) == [
        "postgresql://u:p%40ss@db-a:5432/kms?target_session_attrs=read-write&sslmode=require",
        "postgresql://u:p%40ss@db-b:6432/kms?target_session_attrs=read-write&sslmode=require",
        "postgresql://u:p%40ss@[::1]:5433/kms?target_session_attrs=read-write&sslmode=require",
    ]


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:p@db-a:5432/kms", "postgresql:///kms?host=/run/postgresql", ""],
)
def test_any_other_url_is_left_to_asyncpg_as_it_is(url: str) -> None:
    assert pool.single_host_urls(url) == [url]
