"""Replication bookkeeping: sender cursors, per-source applied sequence numbers, key epochs,
and the idempotent writes that apply replicated IAM rows.

The sender persists ``acked_seq`` per destination so a restart resumes where the peer said it
was; the receiver keeps ``applied_seq`` per source and moves it in the same transaction as
the change it applies (``lock_inbound`` + ``advance_inbound``), which is what makes apply
exactly-once: a duplicate frame finds its seq already applied, a gap finds it not yet due.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from regiond.store.pool import Conn

__all__ = [
    "Cursor",
    "Inbound",
    "advance_inbound",
    "cursor",
    "cursors",
    "delete_access_key",
    "delete_identity_policy",
    "ensure_account",
    "epoch",
    "inbound",
    "inbounds",
    "insert_replicated_material",
    "insert_version_if_absent",
    "lock_inbound",
    "record_ack",
    "record_refusal",
    "record_send_error",
    "record_sent",
    "replica_keys_with_primary",
    "set_access_key_status",
    "set_current_version",
    "set_epoch",
    "set_mr_config",
    "upsert_access_key",
    "upsert_account",
    "upsert_identity_policy",
    "upsert_principal",
]

ERROR_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class Cursor:
    dest: str
    acked_seq: int
    sent_seq: int
    last_ack_at: dt.datetime | None
    last_error: str | None
    last_error_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Inbound:
    source: str
    applied_seq: int
    applied_at: dt.datetime | None
    refused_count: int
    last_refusal: str | None
    last_refusal_at: dt.datetime | None


# --- sender cursors -------------------------------------------------------------------------------


def _cursor(r: Any) -> Cursor:
    return Cursor(r["dest"], int(r["acked_seq"]), int(r["sent_seq"]), r["last_ack_at"], r["last_error"],
                  r["last_error_at"])  # fmt: skip


async def cursor(con: Conn, dest: str) -> Cursor:
    row = await con.fetchrow(
        "INSERT INTO replication_cursors (dest) VALUES ($1) ON CONFLICT (dest) DO UPDATE SET dest = EXCLUDED.dest"
        " RETURNING *",
        dest,
    )
    return _cursor(row)


async def cursors(con: Conn) -> list[Cursor]:
    return [_cursor(r) for r in await con.fetch("SELECT * FROM replication_cursors ORDER BY dest")]


async def record_sent(con: Conn, dest: str, sent_seq: int, now: dt.datetime) -> None:
    await con.execute(
        "UPDATE replication_cursors SET sent_seq = GREATEST(sent_seq, $2), updated_at = $3 WHERE dest = $1",
        dest, sent_seq, now,
    )  # fmt: skip


async def record_ack(con: Conn, dest: str, acked_seq: int, now: dt.datetime, error: str | None = None) -> None:
    """The peer has durably applied everything up to ``acked_seq``; never moves backwards."""
    await con.execute(
        "UPDATE replication_cursors SET acked_seq = GREATEST(acked_seq, $2), last_ack_at = $3, updated_at = $3,"
        " last_error = $4, last_error_at = CASE WHEN $4::text IS NULL THEN last_error_at ELSE $3 END"
        " WHERE dest = $1",
        dest, acked_seq, now, error[:ERROR_MAX_CHARS] if error else None,
    )  # fmt: skip


async def record_send_error(con: Conn, dest: str, error: str, now: dt.datetime) -> None:
    await con.execute(
        "UPDATE replication_cursors SET last_error = $2, last_error_at = $3, updated_at = $3 WHERE dest = $1",
        dest, error[:ERROR_MAX_CHARS], now,
    )  # fmt: skip


# --- receiver: per-source applied sequence numbers ------------------------------------------------


def _inbound(r: Any) -> Inbound:
    return Inbound(r["source"], int(r["applied_seq"]), r["applied_at"], int(r["refused_count"]), r["last_refusal"],
                   r["last_refusal_at"])  # fmt: skip


async def lock_inbound(con: Conn, source: str) -> int:
    """The applied seq of ``source``, with its row locked until the transaction ends."""
    await con.execute("INSERT INTO replication_inbound (source) VALUES ($1) ON CONFLICT DO NOTHING", source)
    return int(await con.fetchval("SELECT applied_seq FROM replication_inbound WHERE source = $1 FOR UPDATE", source))


async def advance_inbound(con: Conn, source: str, from_seq: int, to_seq: int, now: dt.datetime) -> None:
    """Move ``source``'s applied seq from ``from_seq`` to ``to_seq`` (the row is locked by ``lock_inbound``)."""
    done: str = await con.execute(
        "UPDATE replication_inbound SET applied_seq = $3, applied_at = $4 WHERE source = $1 AND applied_seq = $2",
        source, from_seq, to_seq, now,
    )  # fmt: skip
    if not done.endswith(" 1"):
        raise RuntimeError(f"applied seq of {source} moved under a held lock")


async def inbound(con: Conn, source: str) -> int:
    return int(await con.fetchval("SELECT applied_seq FROM replication_inbound WHERE source = $1", source) or 0)


async def inbounds(con: Conn) -> list[Inbound]:
    return [_inbound(r) for r in await con.fetch("SELECT * FROM replication_inbound ORDER BY source")]


async def record_refusal(con: Conn, source: str, reason: str, now: dt.datetime) -> None:
    await con.execute(
        "INSERT INTO replication_inbound AS i (source, refused_count, last_refusal, last_refusal_at)"
        " VALUES ($1, 1, $2, $3) ON CONFLICT (source) DO UPDATE"
        " SET refused_count = i.refused_count + 1, last_refusal = $2, last_refusal_at = $3",
        source, reason[:ERROR_MAX_CHARS], now,
    )  # fmt: skip


# --- multi-region key epochs ----------------------------------------------------------------------


async def epoch(con: Conn, key_id: str) -> int:
    """The primary epoch this region holds for ``key_id``; a key created here without a row is at 1."""
    return int(await con.fetchval("SELECT epoch FROM mrk_epochs WHERE key_id = $1", key_id) or 1)


async def set_epoch(con: Conn, key_id: str, value: int) -> None:
    await con.execute(
        "INSERT INTO mrk_epochs (key_id, epoch) VALUES ($1, $2)"
        " ON CONFLICT (key_id) DO UPDATE SET epoch = GREATEST(mrk_epochs.epoch, EXCLUDED.epoch)",
        key_id, value,
    )  # fmt: skip


async def replica_keys_with_primary(con: Conn, primary_region: str) -> list[str]:
    """The multi-region keys held here whose primary is ``primary_region`` (``regiond replication promote``)."""
    rows = await con.fetch(
        "SELECT key_id FROM keys WHERE mr_primary_region = $1 AND key_id LIKE 'mrk-%' ORDER BY key_id", primary_region
    )
    return [str(r["key_id"]) for r in rows]


async def set_mr_config(
    con: Conn, key_id: str, primary_region: str, replica_regions: list[str], now: dt.datetime
) -> None:
    """Record a multi-region key's primary and replica regions (shown by DescribeKey)."""
    replicas = sorted({r for r in replica_regions if r != primary_region})
    await con.execute(
        "UPDATE keys SET mr_primary_region = $2, mr_replica_regions = $3, updated_at = $4 WHERE key_id = $1",
        key_id, primary_region, replicas, now,
    )  # fmt: skip


async def insert_version_if_absent(
    con: Conn, key_id: str, version: int, wrapped: bytes, created_at: dt.datetime
) -> bool:
    """Add a replicated backing version; versions are immutable, so an existing one is kept."""
    done: str = await con.execute(
        "INSERT INTO key_versions (key_id, version, material_wrapped, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (key_id, version) DO NOTHING",
        key_id, version, wrapped, created_at,
    )  # fmt: skip
    return done.endswith(" 1")


async def insert_replicated_material(
    con: Conn, key_id: str, version: int, key_material_id: str, rotation_type: str | None,
    rotation_date: dt.datetime | None, created_at: dt.datetime,
) -> None:  # fmt: skip
    """The ``key_materials`` row of a replicated version, as the primary recorded it (before the
    wrapped bytes, so migration 0006's trigger does not invent a KeyMaterialId)."""
    await con.execute(
        "INSERT INTO key_materials (key_id, version, key_material_id, rotation_type, rotation_date, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        key_id, version, key_material_id, rotation_type, rotation_date, created_at,
    )  # fmt: skip


async def set_current_version(con: Conn, key_id: str, version: int | None, now: dt.datetime) -> None:
    await con.execute(
        "UPDATE keys SET current_version = $2, updated_at = $3 WHERE key_id = $1"
        " AND current_version IS DISTINCT FROM $2",
        key_id, version, now,
    )  # fmt: skip


async def ensure_account(con: Conn, account_id: str) -> None:
    """A replicated key's account row (its IAM arrives separately, from the IAM home region)."""
    await con.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)


# --- replicated IAM: idempotent upserts keyed by the home region's identifiers ---------------------


async def upsert_account(con: Conn, account_id: str, root_principal_id: str) -> None:
    await con.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)
    await upsert_principal(con, f"arn:aws:iam::{account_id}:root", account_id, "root", "", root_principal_id)


async def upsert_principal(con: Conn, arn: str, account_id: str, kind: str, name: str, principal_id: str) -> None:
    """Insert or align a principal with the home region's row (its principal id wins)."""
    await con.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)
    # A principal id is unique; a stale local row holding the home's id under another ARN yields.
    await con.execute("DELETE FROM principals WHERE principal_id = $1 AND arn <> $2", principal_id, arn)
    await con.execute(
        "INSERT INTO principals (arn, account_id, kind, name, principal_id) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (arn) DO UPDATE SET principal_id = EXCLUDED.principal_id"
        " WHERE principals.principal_id IS DISTINCT FROM EXCLUDED.principal_id",
        arn, account_id, kind, name, principal_id,
    )  # fmt: skip


async def upsert_access_key(
    con: Conn, access_key_id: str, principal_arn: str, secret_wrapped: bytes, status: str
) -> bool:
    """Insert or update an access key; ``False`` if its principal does not exist here (yet)."""
    if not await con.fetchval("SELECT EXISTS (SELECT 1 FROM principals WHERE arn = $1)", principal_arn):
        return False
    await con.execute(
        "INSERT INTO access_keys (access_key_id, principal_arn, secret_wrapped, status) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (access_key_id) DO UPDATE SET principal_arn = EXCLUDED.principal_arn,"
        " secret_wrapped = EXCLUDED.secret_wrapped, status = EXCLUDED.status",
        access_key_id, principal_arn, secret_wrapped, status,
    )  # fmt: skip
    return True


async def set_access_key_status(con: Conn, access_key_id: str, status: str) -> None:
    await con.execute(
        "UPDATE access_keys SET status = $2 WHERE access_key_id = $1 AND status <> $2", access_key_id, status
    )


async def delete_access_key(con: Conn, access_key_id: str) -> None:
    await con.execute("DELETE FROM access_keys WHERE access_key_id = $1", access_key_id)


async def upsert_identity_policy(con: Conn, principal_arn: str, name: str, document: str) -> bool:
    if not await con.fetchval("SELECT EXISTS (SELECT 1 FROM principals WHERE arn = $1)", principal_arn):
        return False
    await con.execute(
        "INSERT INTO identity_policies (principal_arn, policy_name, document) VALUES ($1, $2, $3)"
        " ON CONFLICT (principal_arn, policy_name) DO UPDATE SET document = EXCLUDED.document, updated_at = now()"
        " WHERE identity_policies.document IS DISTINCT FROM EXCLUDED.document",
        principal_arn, name, document,
    )  # fmt: skip
    return True


async def delete_identity_policy(con: Conn, principal_arn: str, name: str) -> None:
    await con.execute(
        "DELETE FROM identity_policies WHERE principal_arn = $1 AND policy_name = $2", principal_arn, name
    )
