"""Migrations: idempotent, safe under concurrent starts, and gap-filling."""

from __future__ import annotations

import asyncio

import asyncpg

from regiond.store import migrate as migrations
from regiond.store.pool import create_pool
from tests.support.cluster import PgServer


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
