"""Accounts, principals, access keys and identity policies."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import EntityAlreadyExists, NoSuchEntity
from regiond.store.pool import Conn


@dataclass(frozen=True, slots=True)
class AccessKeyRow:
    access_key_id: str
    principal: Principal
    secret_wrapped: bytes
    status: str


def _principal(row: asyncpg.Record) -> Principal:
    return Principal(
        arn=row["arn"],
        account_id=row["account_id"],
        kind=PrincipalKind(row["kind"]),
        name=row["name"],
        principal_id=row["principal_id"],
    )


async def insert_account(con: Conn, account_id: str) -> None:
    try:
        await con.execute("INSERT INTO accounts (account_id) VALUES ($1)", account_id)
    except asyncpg.UniqueViolationError as exc:
        raise EntityAlreadyExists(f"account {account_id} already exists") from exc


async def account_exists(con: Conn, account_id: str) -> bool:
    return bool(await con.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = $1)", account_id))


async def insert_principal(con: Conn, p: Principal) -> None:
    try:
        await con.execute(
            "INSERT INTO principals (arn, account_id, kind, name, principal_id) VALUES ($1, $2, $3, $4, $5)",
            p.arn,
            p.account_id,
            p.kind.value,
            p.name,
            p.principal_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise EntityAlreadyExists(f"{p.kind.value} {p.name} already exists in account {p.account_id}") from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise NoSuchEntity(f"account {p.account_id} does not exist") from exc


async def get_principal(con: Conn, arn: str) -> Principal:
    row = await con.fetchrow("SELECT * FROM principals WHERE arn = $1", arn)
    if row is None:
        raise NoSuchEntity(f"principal {arn} does not exist")
    return _principal(row)


async def list_principals(con: Conn, account_id: str, kind: PrincipalKind) -> list[Principal]:
    rows = await con.fetch(
        "SELECT * FROM principals WHERE account_id = $1 AND kind = $2 ORDER BY name", account_id, kind.value
    )
    return [_principal(r) for r in rows]


async def insert_access_key(con: Conn, access_key_id: str, principal_arn: str, secret_wrapped: bytes) -> None:
    await con.execute(
        "INSERT INTO access_keys (access_key_id, principal_arn, secret_wrapped) VALUES ($1, $2, $3)",
        access_key_id,
        principal_arn,
        secret_wrapped,
    )


async def get_access_key(con: Conn, access_key_id: str) -> AccessKeyRow | None:
    row = await con.fetchrow(
        "SELECT k.access_key_id, k.secret_wrapped, k.status, p.* FROM access_keys k"
        " JOIN principals p ON p.arn = k.principal_arn WHERE k.access_key_id = $1",
        access_key_id,
    )
    if row is None:
        return None
    return AccessKeyRow(row["access_key_id"], _principal(row), bytes(row["secret_wrapped"]), row["status"])


async def wrapped_secret(con: Conn, access_key_id: str) -> bytes | None:
    """An access key's secret as stored (sealed under the root key), or None if the key is gone."""
    wrapped = await con.fetchval("SELECT secret_wrapped FROM access_keys WHERE access_key_id = $1", access_key_id)
    return None if wrapped is None else bytes(wrapped)


async def list_access_keys(con: Conn, principal_arn: str) -> list[tuple[str, str]]:
    rows = await con.fetch(
        "SELECT access_key_id, status FROM access_keys WHERE principal_arn = $1 ORDER BY created_at", principal_arn
    )
    return [(r["access_key_id"], r["status"]) for r in rows]


async def set_access_key_status(con: Conn, principal_arn: str, access_key_id: str, status: str) -> None:
    done = await con.execute(
        "UPDATE access_keys SET status = $3 WHERE principal_arn = $1 AND access_key_id = $2",
        principal_arn,
        access_key_id,
        status,
    )
    if done.endswith(" 0"):
        raise NoSuchEntity(f"access key {access_key_id} does not exist for {principal_arn}")


async def delete_access_key(con: Conn, principal_arn: str, access_key_id: str) -> None:
    done = await con.execute(
        "DELETE FROM access_keys WHERE principal_arn = $1 AND access_key_id = $2", principal_arn, access_key_id
    )
    if done.endswith(" 0"):
        raise NoSuchEntity(f"access key {access_key_id} does not exist for {principal_arn}")


async def put_identity_policy(con: Conn, principal_arn: str, name: str, document: str) -> None:
    await con.execute(
        "INSERT INTO identity_policies (principal_arn, policy_name, document) VALUES ($1, $2, $3)"
        " ON CONFLICT (principal_arn, policy_name) DO UPDATE SET document = EXCLUDED.document, updated_at = now()",
        principal_arn,
        name,
        document,
    )


async def delete_identity_policy(con: Conn, principal_arn: str, name: str) -> None:
    done = await con.execute(
        "DELETE FROM identity_policies WHERE principal_arn = $1 AND policy_name = $2", principal_arn, name
    )
    if done.endswith(" 0"):
        raise NoSuchEntity(f"policy {name} does not exist for {principal_arn}")


async def identity_policies(con: Conn, principal_arn: str) -> dict[str, str]:
    rows = await con.fetch(
        "SELECT policy_name, document FROM identity_policies WHERE principal_arn = $1 ORDER BY policy_name",
        principal_arn,
    )
    return {r["policy_name"]: r["document"] for r in rows}


async def iam_version(con: Conn) -> int:
    return int(await con.fetchval("SELECT last_value FROM iam_version"))


@dataclass(frozen=True, slots=True)
class IamSnapshot:
    """Every IAM row of the region, without secrets (``regiond replication resync-iam``)."""

    principals: list[Principal]  # account roots first, then users and roles, by ARN
    access_keys: list[tuple[str, str, str]]  # (access_key_id, principal_arn, status)
    policies: list[tuple[str, str, str]]  # (principal_arn, policy_name, document)


async def iam_snapshot(con: Conn) -> IamSnapshot:
    """The whole of IAM as ``con``'s transaction sees it (run it in one transaction for one snapshot)."""
    principals = [
        _principal(r) for r in await con.fetch("SELECT * FROM principals ORDER BY kind <> 'root', account_id, arn")
    ]
    keys = await con.fetch("SELECT access_key_id, principal_arn, status FROM access_keys ORDER BY access_key_id")
    policies = await con.fetch(
        "SELECT principal_arn, policy_name, document FROM identity_policies ORDER BY principal_arn, policy_name"
    )
    return IamSnapshot(
        principals,
        [(r["access_key_id"], r["principal_arn"], r["status"]) for r in keys],
        [(r["principal_arn"], r["policy_name"], r["document"]) for r in policies],
    )
