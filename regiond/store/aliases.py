"""Aliases repository: per account and region, one name -> one key.

The primary key ``(account_id, alias_name)`` is what makes CreateAlias race-safe: of two
concurrent calls for the same name exactly one INSERT succeeds, and the other's
``UniqueViolationError`` becomes ``AlreadyExistsException`` here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from regiond.errors import AlreadyExistsException
from regiond.store.pool import Conn

__all__ = ["AliasRecord", "delete", "get", "insert", "list_for_account", "resolve", "update_target"]


@dataclass(frozen=True, slots=True)
class AliasRecord:
    account: str
    alias_name: str
    key_id: str
    creation_date: dt.datetime
    last_updated_date: dt.datetime


def _record(row: Any) -> AliasRecord:
    return AliasRecord(
        row["account_id"], row["alias_name"], row["key_id"], row["creation_date"], row["last_updated_date"]
    )


async def insert(con: Conn, account: str, alias_name: str, key_id: str, now: dt.datetime, *, arn: str) -> None:
    try:
        await con.execute(
            "INSERT INTO aliases (account_id, alias_name, key_id, creation_date, last_updated_date)"
            " VALUES ($1, $2, $3, $4, $4)",
            account, alias_name, key_id, now,
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExistsException(f"An alias with the name {arn} already exists") from exc


async def get(con: Conn, account: str, alias_name: str, *, for_update: bool = False) -> AliasRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await con.fetchrow(
        "SELECT account_id, alias_name, key_id, creation_date, last_updated_date FROM aliases"
        f" WHERE account_id = $1 AND alias_name = $2{lock}",
        account, alias_name,
    )  # fmt: skip
    return _record(row) if row is not None else None


async def resolve(con: Conn, account: str, alias_name: str) -> str | None:
    """The key id an alias points to, or ``None``."""
    value = await con.fetchval(
        "SELECT key_id FROM aliases WHERE account_id = $1 AND alias_name = $2", account, alias_name
    )
    return str(value) if value is not None else None


async def update_target(con: Conn, account: str, alias_name: str, key_id: str, now: dt.datetime) -> None:
    await con.execute(
        "UPDATE aliases SET key_id = $3, last_updated_date = $4 WHERE account_id = $1 AND alias_name = $2",
        account, alias_name, key_id, now,
    )  # fmt: skip


async def delete(con: Conn, account: str, alias_name: str) -> bool:
    status = await con.execute("DELETE FROM aliases WHERE account_id = $1 AND alias_name = $2", account, alias_name)
    return bool(status.endswith(" 1"))


async def list_for_account(
    con: Conn, account: str, *, key_id: str | None, after: str | None, limit: int
) -> list[AliasRecord]:
    """Aliases in name order after ``after``, optionally only those of one key."""
    rows = await con.fetch(
        "SELECT account_id, alias_name, key_id, creation_date, last_updated_date FROM aliases"
        " WHERE account_id = $1 AND ($2::text IS NULL OR key_id = $2) AND ($3::text IS NULL OR alias_name > $3)"
        " ORDER BY alias_name LIMIT $4",
        account, key_id, after, limit,
    )  # fmt: skip
    return [_record(r) for r in rows]
