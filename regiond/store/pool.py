"""The asyncpg pool and the transaction context every repository runs in.

This package is the only asyncpg user: repositories take a ``Conn`` (a pooled connection,
usually inside ``transaction()``) and return domain objects, translating SQLSTATEs into
``KmsError`` classes so asyncpg never leaks upward.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeAlias

import asyncpg

ACQUIRE_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0

# Typed by asyncpg-stubs: a pooled connection is a proxy with the Connection's methods.
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
Isolation: TypeAlias = Literal["read_committed", "read_uncommitted", "serializable", "repeatable_read"]


async def _init_connection(con: Any) -> None:
    await con.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 10) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=COMMAND_TIMEOUT_S,
    )
    return pool


@asynccontextmanager
async def transaction(pool: Pool, *, isolation: Isolation = "read_committed") -> AsyncIterator[Conn]:
    """A pooled connection inside one transaction, committed on normal exit."""
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con, con.transaction(isolation=isolation):
        yield con


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[Conn]:
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
        yield con


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
# asyncpg: a refused or dropped connection, a server error, a timeout.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
)  # fmt: skip


def connection_usable(con: Conn) -> bool:
    """Whether a connection kept outside the pool is open and still the holder's: the pool takes back
    a connection whose server session ended (then every call on it raises ``InterfaceError``)."""
    try:
        return not con.is_closed()
    except asyncpg.InterfaceError:
        return False
