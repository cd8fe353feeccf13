"""Migrations: idempotent, safe under concurrent starts, gap-filling, and refused by a release too old for them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from regiond.store import migrate as migrations
from regiond.store.pool import create_pool
from tests.support.cluster import NodeFactory, PgServer


async def test_concurrent_migrations_apply_each_file_once(pg_server: PgServer) -> None:
    con = await asyncpg.connect(pg_server.admin_url)
    await con.execute('CREATE DATABASE "migrate_race"')
    await con.close()
    target = pg_server.url_for("migrate_race")
    pools = [await create_pool(target, min_size=1, max_size=2) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrations.migrate(p) for p in pools))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in migrations.available()]
        assert await migrations.pending(pools[0]) == []
        assert await migrations.migrate(pools[0]) == []
        # A lower-numbered file recorded as missing (merged late) is applied, not skipped.
        first = migrations.available()[-1]
        async with pools[0].acquire() as c:
            await c.execute("DELETE FROM schema_version WHERE version = $1", first.version)
        assert await migrations.pending(pools[0]) == [first.version]
    finally:
        for p in pools:
            await p.close()
        await pg_server.drop_database(target)


async def test_a_node_refuses_a_schema_marked_for_newer_releases_only(
    database_url: str, nodes: NodeFactory, tmp_path: Path
) -> None:
    """A migration a later release marks ``BREAKS_OLDER`` is recorded so; a node of this release, not
    knowing it, turns unready naming it, refuses to migrate or start on it, and its CLI says so in a line."""
    node = await nodes.start(database_url=database_url)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        assert await migrations.unservable(pool) == []
        async with pool.acquire() as con:
            await con.execute("INSERT INTO schema_version (version, name) VALUES (9998, 'additive')")
        assert await migrations.unservable(pool) == []  # an additive migration of a later release: served
        async with aiohttp.ClientSession() as session, session.get(node.endpoint + "/readyz") as resp:
            assert resp.status == 200, await resp.text()
        async with pool.acquire() as con:
            await con.execute("INSERT INTO schema_version (version, name, breaks_older) VALUES (9999, 'future', true)")
        assert await migrations.unservable(pool) == ["9999_future"]
        async with aiohttp.ClientSession() as session, session.get(node.endpoint + "/readyz") as resp:
            body = await resp.json()
        assert resp.status == 503 and body["checks"]["migrations"].startswith(
            "the database has migration 9999_future, which this release cannot serve: upgrade this node"
        ), body
        with pytest.raises(migrations.UnservableSchema, match="9999_future"):
            await migrations.migrate(pool)
    finally:
        await pool.close()
    command = [sys.executable, "-m", "regiond", "migrate", "--database-url", database_url]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=False, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.count("\n") == 1 and "9999_future, which this release cannot serve" in done.stderr
    serve = [sys.executable, "-m", "regiond", "serve", "--database-url", database_url, "--plain-http"]
    serve += ["--state-dir", str(node.state_dir), "--listen", "127.0.0.1:0", "--region", "us-east-1"]
    done = await asyncio.to_thread(
        subprocess.run, serve, capture_output=True, text=True, check=False, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 2, done
    assert done.stderr == (f"regiond serve: {migrations.unservable_message(['9999_future'])}\n"), done.stderr


def test_the_marker_is_a_line_of_its_own() -> None:
    marked = migrations.Migration(1, "x", f"CREATE TABLE t ();\n{migrations.BREAKS_OLDER}\n")
    assert marked.breaks_older
    assert not migrations.Migration(1, "x", f"-- says {migrations.BREAKS_OLDER} in passing\n").breaks_older
    assert not any(m.breaks_older for m in migrations.available())  # every migration so far is additive
