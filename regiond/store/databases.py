"""Databases on a PostgreSQL server: what a launcher needs before a node's pool can exist.

Production creates its database once, by its own means; ``regiond dev``, the test clusters and
the benchmarks make theirs on a local server (``regiond.devtools``). Their SQL lives here, so
that ``regiond.store`` stays the only part of regiond that talks to PostgreSQL.
"""

from __future__ import annotations

import re

import asyncpg

__all__ = ["database_url", "ensure_database"]

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Names this module creates: lower-case identifiers, so they need no quoting rules of their own."""


def database_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server ``server_url`` reaches (same host, user, password)."""
    return server_url.rsplit("/", 1)[0] + "/" + name


async def ensure_database(server_url: str, name: str) -> str:
    """Database ``name`` on the server ``server_url`` reaches, created if missing; its URL."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a database name this launcher makes: {name!r}")
    con = await asyncpg.connect(server_url)
    try:
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return database_url(server_url, name)
