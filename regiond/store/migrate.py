"""Forward-only schema migrations: numbered ``migrations/NNNN_name.sql`` files.

Applied by ``regiond migrate`` and at ``serve`` start. Two nodes starting at once are
serialised by a transaction-level advisory lock, and each file is applied in its own
transaction together with its row in ``schema_version``, so a crash never leaves a file
half-applied and recorded.

Migrations are additive, so that `regiond migrate` of a new release may run while nodes of the
previous one serve (docs/OPERATIONS.md "Upgrading"): tests/unit/test_migrations_additive.py refuses
a drop, a rename, a type change or a new NOT NULL without a default in a file that does not say
otherwise. A file that older releases cannot run against says so on a line of its own
(``BREAKS_OLDER``); ``schema_version.breaks_older`` records it, and a node of a release that does
not know that migration refuses to start on such a database and reports itself unready if it is
applied under it (``unservable``), naming the migration, rather than fail on it call by call.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from regiond.store import locks
from regiond.store.locks import LockId
from regiond.store.pool import Pool, transaction

BREAKS_OLDER = "-- regiond: older releases cannot serve this schema"
"""The line a migration file carries when nodes of releases without it must not run on its schema."""


class UnservableSchema(Exception):
    """The database holds a migration that this release does not know and cannot serve."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def breaks_older(self) -> bool:
        return any(line.strip() == BREAKS_OLDER for line in self.sql.splitlines())


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


async def unservable(pool: Pool) -> list[str]:
    """Migrations applied to the database, unknown to this build and marked ``BREAKS_OLDER``, each as
    "NNNN_name" (none on a database older than this release: its rows have no such column)."""
    async with transaction(pool) as con:
        if not await con.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            return []
        rows = await con.fetch(
            "SELECT version, name FROM schema_version s"
            " WHERE coalesce((to_jsonb(s) ->> 'breaks_older')::boolean, false) ORDER BY version"
        )
    known = {m.version for m in available()}
    return [f"{int(r['version']):04d}_{r['name']}" for r in rows if int(r["version"]) not in known]


def unservable_message(found: list[str]) -> str:
    return (
        f"the database has migration {', '.join(found)}, which this release cannot serve: "
        "upgrade this node (docs/OPERATIONS.md, Upgrading)"
    )


def latest_version() -> int:
    return max((m.version for m in available()), default=0)


async def migrate(pool: Pool, *, up_to: int | None = None) -> list[int]:
    """Apply every pending migration (numbered ``up_to`` at most, if given: a test building a database
    of an older release to upgrade); return the versions applied by this call. ``UnservableSchema``
    if the database holds a migration this release cannot serve (nothing is applied then)."""
    done: list[int] = []
    async with transaction(pool) as con:
        await locks.lock_xact(con, LockId.MIGRATIONS)
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        if not await con.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = 'schema_version' AND column_name = 'breaks_older')"
        ):  # rows recorded by releases before the column read as additive
            await con.execute("ALTER TABLE schema_version ADD COLUMN breaks_older boolean NOT NULL DEFAULT false")
        known = {m.version for m in available()}
        found = [
            f"{int(r['version']):04d}_{r['name']}"
            for r in await con.fetch("SELECT version, name FROM schema_version WHERE breaks_older ORDER BY version")
            if int(r["version"]) not in known
        ]
        if found:
            raise UnservableSchema(unservable_message(found))
        # A set, not a high-water mark: a lower-numbered file merged after a higher one applied
        # (two branches adding migrations) is still applied.
        applied = {int(r["version"]) for r in await con.fetch("SELECT version FROM schema_version")}
        for m in available():
            if m.version in applied or (up_to is not None and m.version > up_to):
                continue
            async with con.transaction():
                await con.execute(m.sql)
                await con.execute(
                    "INSERT INTO schema_version (version, name, breaks_older) VALUES ($1, $2, $3)",
                    m.version, m.name, m.breaks_older,
                )  # fmt: skip
            done.append(m.version)
    return done
