"""Forward-only schema migrations: numbered ``migrations/NNNN_name.sql`` files.

Applied by ``regiond migrate`` and at ``serve`` start. Two nodes starting at once are
serialised by a transaction-level advisory lock, and each file is applied in its own
transaction together with its row in ``schema_version``, so a crash never leaves a file
half-applied and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from regiond.store import locks
from regiond.store.locks import LockId
from regiond.store.pool import Pool, transaction


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    files = resources.files("regiond.store").joinpath("migrations")
    found = []
    for entry in files.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def pending(pool: Pool) -> list[int]:
    """Versions available in this build but not applied to the database."""
    async with transaction(pool) as con:
        if not await con.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            return [m.version for m in available()]
        applied = {int(r["version"]) for r in await con.fetch("SELECT version FROM schema_version")}
    return [m.version for m in available() if m.version not in applied]


def latest_version() -> int:
    return max((m.version for m in available()), default=0)


async def migrate(pool: Pool, *, up_to: int | None = None) -> list[int]:
    """Apply every pending migration (numbered ``up_to`` at most, if given: a test building a database
    of an older release to upgrade); return the versions applied by this call."""
    done: list[int] = []
    async with transaction(pool) as con:
        await locks.lock_xact(con, LockId.MIGRATIONS)
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # A set, not a high-water mark: a lower-numbered file merged after a higher one applied
        # (two branches adding migrations) is still applied.
        applied = {int(r["version"]) for r in await con.fetch("SELECT version FROM schema_version")}
        for m in available():
            if m.version in applied or (up_to is not None and m.version > up_to):
                continue
            async with con.transaction():
                await con.execute(m.sql)
                await con.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version, m.name)
            done.append(m.version)
    return done
