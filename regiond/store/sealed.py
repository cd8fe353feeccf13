"""Every database column that holds a value sealed under the region's root key, for the re-wrap.

``regiond rotate-root-key`` (regiond/service/root_key.py) reads these in batches, re-seals each
value under the active root key version and writes it back only if the row still holds the value
it read (a compare-and-set: a row changed meanwhile is picked up by the next pass). A sealed value
starts with the root key version it was sealed under (regiond/crypto/keyring.py), so the rows
still to do are those whose value does not start with the active version's prefix.

The write-back sets ``regionkms.rewrap`` for its transaction, which the change-notification
triggers skip (migration 0013): a re-sealed value opens to the same secret, so the nodes' caches
need not reload every key while the re-wrap runs under load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from regiond.store.pool import Conn, Pool, transaction

__all__ = ["SEALED_COLUMNS", "SealedColumn", "SealedRow", "count_not_under", "rows_not_under", "write_back"]


@dataclass(frozen=True)
class SealedColumn:
    table: str
    column: str
    key_columns: tuple[str, ...]  # the primary key, also the order of the batches


SEALED_COLUMNS = (
    SealedColumn("key_versions", "material_wrapped", ("key_id", "version")),
    SealedColumn("access_keys", "secret_wrapped", ("access_key_id",)),
    SealedColumn("import_parameters", "private_key_sealed", ("token_id",)),
)


@dataclass(frozen=True)
class SealedRow:
    column: SealedColumn
    key: tuple[Any, ...]  # the primary key's values
    extra: dict[str, Any]  # what the AAD needs beyond the primary key (import_parameters: key_id)
    sealed: bytes


def _extra_columns(col: SealedColumn) -> tuple[str, ...]:
    return ("key_id",) if col.table == "import_parameters" else ()


async def count_not_under(pool: Pool, prefix: bytes) -> dict[str, int]:
    """Per table, how many values are not sealed under the version whose prefix is ``prefix``."""
    out: dict[str, int] = {}
    async with transaction(pool) as con:
        for col in SEALED_COLUMNS:
            query = f"SELECT count(*) FROM {col.table} WHERE substring({col.column} from 1 for $2) <> $1"
            out[col.table] = int(await con.fetchval(query, prefix, len(prefix)))
    return out


async def rows_not_under(
    pool: Pool, col: SealedColumn, prefix: bytes, after: tuple[Any, ...] | None, limit: int
) -> list[SealedRow]:
    """The next ``limit`` rows after ``after`` (primary key order) not sealed under ``prefix``."""
    keys = ", ".join(col.key_columns)
    extra = _extra_columns(col)
    select = ", ".join((*col.key_columns, *extra, col.column))
    args: list[Any] = [prefix, len(prefix), limit]
    where = f"substring({col.column} from 1 for $2) <> $1"
    if after is not None:
        marks = ", ".join(f"${i}" for i in range(4, 4 + len(after)))
        where += f" AND ({keys}) > ({marks})"
        args += list(after)
    async with transaction(pool) as con:
        found = await con.fetch(f"SELECT {select} FROM {col.table} WHERE {where} ORDER BY {keys} LIMIT $3", *args)
    return [
        SealedRow(col, tuple(r[k] for k in col.key_columns), {e: r[e] for e in extra}, bytes(r[col.column]))
        for r in found
    ]


async def write_back(pool: Pool, updates: Sequence[tuple[SealedRow, bytes]]) -> int:
    """Store each row's re-sealed value if the row still holds the value read; how many were stored."""
    stored = 0
    async with transaction(pool) as con:
        await _quiet(con)
        for row, resealed in updates:
            col = row.column
            keys = " AND ".join(f"{k} = ${i}" for i, k in enumerate(col.key_columns, start=3))
            status = await con.execute(
                f"UPDATE {col.table} SET {col.column} = $1 WHERE {col.column} = $2 AND {keys}",
                resealed, row.sealed, *row.key,
            )  # fmt: skip
            stored += int(status.rsplit(" ", 1)[1])
    return stored


async def _quiet(con: Conn) -> None:
    await con.execute("SELECT set_config('regionkms.rewrap', 'on', true)")
