"""Grants repository (migrations 0005, 0010): one row per grant, per key and region.

Rows are immutable; CreateGrant inserts, RetireGrant/RevokeGrant delete. Writers of one key's
grants serialise on that key's row lock (``keys.get_key(..., for_update=True)``, taken by the
service), which makes the per-key limits and the named-grant retry check exact under
concurrency; the partial unique index ``grants_named_retry`` backs the latter up. Every write
fires the ``regionkms_grants`` NOTIFY trigger, whose payload is the key id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from regiond.domain.grants import GrantRecord, constraints_from_json, constraints_to_json
from regiond.store.pool import Conn

__all__ = [
    "CHANNEL",
    "by_ids",
    "count",
    "delete",
    "find_named",
    "for_key",
    "get",
    "insert",
    "list_for_key",
    "list_retirable",
]

CHANNEL = "regionkms_grants"

_COLUMNS = (
    "grant_id, key_id, account_id, name, grantee_principal, retiring_principal, issuing_principal,"
    " operations, constraints, creation_date, seq, grantee_service_principal, retiring_service_principal"
)


def _record(row: Any) -> GrantRecord:
    return GrantRecord(
        grant_id=row["grant_id"],
        key_id=row["key_id"],
        account=row["account_id"],
        name=row["name"],
        grantee_principal=row["grantee_principal"],
        retiring_principal=row["retiring_principal"],
        issuing_principal=row["issuing_principal"],
        operations=tuple(row["operations"]),
        constraints=constraints_from_json(row["constraints"]),
        creation_date=row["creation_date"],
        seq=int(row["seq"]),
        grantee_service_principal=row["grantee_service_principal"],
        retiring_service_principal=row["retiring_service_principal"],
    )


async def insert(con: Conn, grant: GrantRecord, *, request_digest: str | None) -> GrantRecord:
    """Insert ``grant``; returns it with its listing sequence number."""
    row = await con.fetchrow(
        "INSERT INTO grants (grant_id, key_id, account_id, name, grantee_principal, retiring_principal,"
        " issuing_principal, operations, constraints, request_digest, creation_date, grantee_service_principal,"
        " retiring_service_principal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        f" RETURNING {_COLUMNS}",
        grant.grant_id, grant.key_id, grant.account, grant.name, grant.grantee_principal,
        grant.retiring_principal, grant.issuing_principal, list(grant.operations),
        constraints_to_json(grant.constraints), request_digest, grant.creation_date,
        grant.grantee_service_principal, grant.retiring_service_principal,
    )  # fmt: skip
    return _record(row)


async def find_named(con: Conn, key_id: str, request_digest: str) -> GrantRecord | None:
    """The grant a retried named CreateGrant made before, if any."""
    row = await con.fetchrow(
        f"SELECT {_COLUMNS} FROM grants WHERE key_id = $1 AND request_digest = $2", key_id, request_digest
    )
    return _record(row) if row is not None else None


async def count(
    con: Conn, key_id: str, grantee_principal: str | None = None, *, grantee_service_principal: str | None = None
) -> int:
    """Grants on ``key_id`` (for one grantee when given): AWS's per-key limits count these."""
    value = await con.fetchval(
        "SELECT count(*) FROM grants WHERE key_id = $1 AND ($2::text IS NULL OR grantee_principal = $2)"
        " AND ($3::text IS NULL OR grantee_service_principal = $3)",
        key_id, grantee_principal, grantee_service_principal,
    )  # fmt: skip
    return int(value)


async def for_key(con: Conn, key_id: str) -> list[GrantRecord]:
    rows = await con.fetch(f"SELECT {_COLUMNS} FROM grants WHERE key_id = $1 ORDER BY seq", key_id)
    return [_record(r) for r in rows]


async def get(con: Conn, grant_id: str, *, for_update: bool = False) -> GrantRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await con.fetchrow(f"SELECT {_COLUMNS} FROM grants WHERE grant_id = $1{lock}", grant_id)
    return _record(row) if row is not None else None


async def by_ids(con: Conn, key_id: str, grant_ids: Sequence[str]) -> list[GrantRecord]:
    """The grants of ``key_id`` among ``grant_ids`` (grant tokens name grants by id)."""
    rows = await con.fetch(
        f"SELECT {_COLUMNS} FROM grants WHERE key_id = $1 AND grant_id = ANY($2::text[]) ORDER BY seq",
        key_id, list(grant_ids),
    )  # fmt: skip
    return [_record(r) for r in rows]


async def list_for_key(
    con: Conn, key_id: str, *, grant_id: str | None, grantee_principal: str | None, after_seq: int, limit: int
) -> list[GrantRecord]:
    """ListGrants: ``key_id``'s grants in creation order after ``after_seq``, optionally filtered."""
    rows = await con.fetch(
        f"SELECT {_COLUMNS} FROM grants WHERE key_id = $1 AND seq > $2"
        " AND ($3::text IS NULL OR grant_id = $3) AND ($4::text IS NULL OR grantee_principal = $4)"
        " ORDER BY seq LIMIT $5",
        key_id, after_seq, grant_id, grantee_principal, limit,
    )  # fmt: skip
    return [_record(r) for r in rows]


async def list_retirable(con: Conn, retiring_principal: str, *, after_seq: int, limit: int) -> list[GrantRecord]:
    """ListRetirableGrants: grants (on keys of any account) that ``retiring_principal`` may retire."""
    rows = await con.fetch(
        f"SELECT {_COLUMNS} FROM grants WHERE retiring_principal = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        retiring_principal, after_seq, limit,
    )  # fmt: skip
    return [_record(r) for r in rows]


async def delete(con: Conn, grant_id: str, key_id: str) -> bool:
    """Remove a grant of ``key_id`` (retire or revoke); false if it was already gone."""
    done: str = await con.execute("DELETE FROM grants WHERE grant_id = $1 AND key_id = $2", grant_id, key_id)
    return not done.endswith(" 0")
