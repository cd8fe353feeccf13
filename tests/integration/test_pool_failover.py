"""The pool against a real PostgreSQL when a server stops taking writes or cannot be reached
(regiond.store.pool; the whole failover with a standby promoted is tests/cluster/test_ha_failover.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from regiond.devtools.postgres import free_port
from regiond.errors import AlreadyExistsException, KMSInternalException
from regiond.store.pool import KEEPALIVE, Conn, connect, connection, create_pool, transaction

pytestmark = pytest.mark.timeout(60)


def _keepalive_idle(con: object) -> int:
    import socket

    raw: Any = getattr(con, "_con", con)  # a pool proxy wraps the connection (white box: asyncpg's transport)
    sock = raw._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))


async def test_pool_and_dedicated_connections_have_tcp_keepalives(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with connection(pool) as con:
            assert _keepalive_idle(con) == KEEPALIVE["idle_s"]
    finally:
        await pool.close()
    dedicated = await connect(database_url)
    try:
        assert _keepalive_idle(dedicated) == KEEPALIVE["idle_s"]
    finally:
        await dedicated.close()


async def _backend(con: Conn) -> int:
    return int(await con.fetchval("SELECT pg_backend_pid()"))


async def test_a_connection_that_met_a_read_only_server_is_dropped_and_the_call_fails_retryably(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(KMSInternalException, match="retry"):
            async with transaction(pool) as con:
                first = await _backend(con)
                # What a demoted primary answers every write with (SQLSTATE 25006).
                await con.execute("SET TRANSACTION READ ONLY")
                await con.execute("CREATE TABLE refused_on_a_standby (n int)")
        async with transaction(pool) as con:  # the one slot was given back, with a new connection
            assert await _backend(con) != first
            assert await con.fetchval("SELECT current_setting('transaction_read_only')") == "off"
    finally:
        await pool.close()


async def test_an_ordinary_failure_keeps_its_connection_and_its_error(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with connection(pool) as con:
            first = await _backend(con)
            await con.execute("CREATE TABLE once (n int PRIMARY KEY)")
        with pytest.raises(AlreadyExistsException):
            async with transaction(pool) as con:
                try:
                    await con.execute("INSERT INTO once VALUES (1), (1)")
                except Exception as exc:  # a repository translates its SQLSTATEs (store/keys.py and others)
                    raise AlreadyExistsException("exists") from exc
        async with connection(pool) as con:
            assert await _backend(con) == first
    finally:
        await pool.close()


async def test_an_unreachable_database_is_a_retryable_error_not_a_driver_exception() -> None:
    url = f"postgresql://postgres:x@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/db?target_session_attrs=read-write"
    pool = await create_pool(url, min_size=0, max_size=1)
    try:
        with pytest.raises(KMSInternalException, match="retry"):
            async with transaction(pool):
                pass
    finally:
        await pool.close()


async def test_a_first_host_that_never_answers_does_not_keep_the_second_from_being_tried(database_url: str) -> None:
    """A powered-off primary drops packets: asyncpg's multi-host connect would spend its one timeout on
    it every time. Stand-in: a listener that accepts and never speaks."""
    held: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hang, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    at = database_url.index("@") + 1
    url = f"{database_url[:at]}127.0.0.1:{silent_port},{database_url[at:]}"
    try:
        con = await connect(url, timeout_s=2.0)
        await con.close()
        multi = await create_pool(url, min_size=1, max_size=1, connect_timeout_s=2.0)
        try:
            async with connection(multi) as pooled:
                assert await pooled.fetchval("SELECT 1") == 1
        finally:
            await multi.close()
        assert held  # the silent host was tried first, each time
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
