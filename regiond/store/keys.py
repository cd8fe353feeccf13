"""Keys and backing key versions repository.

Rows become ``regiond.domain.key.Key`` objects here; the wrapped material stays bytes (only
``regiond.crypto.wrap`` opens it). Writers lock the key row (``FOR UPDATE``) before moving its
state so two concurrent Enable/Disable/ScheduleKeyDeletion calls serialise, and every write
fires the ``regionkms_keys`` NOTIFY trigger of migration 0002 so other processes drop their
cached copy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from regiond.domain.decision import GrantView
from regiond.domain.grants import constraints_from_json
from regiond.domain.ids import MRK_PREFIX, key_arn
from regiond.domain.key import (
    ExpirationModel,
    Key,
    KeyManager,
    KeySpec,
    KeyState,
    KeyUsage,
    MultiRegionConfiguration,
    MultiRegionKey,
    MultiRegionKeyType,
    Origin,
)
from regiond.errors import AlreadyExistsException
from regiond.store.pool import Conn

__all__ = [
    "KeyRecord",
    "LastUsage",
    "LoadedKey",
    "WrappedVersion",
    "delete_key",
    "due_for_deletion",
    "get_key",
    "insert_key",
    "insert_version",
    "last_usage",
    "list_keys",
    "load_key",
    "load_keys",
    "record_usage",
    "update_description",
    "update_state",
    "versions",
]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key's metadata plus what the service needs beside ``KeyMetadata``."""

    key: Key
    policy: str
    current_version: int | None
    aws_service: str | None


@dataclass(frozen=True, slots=True)
class LastUsage:
    operation: str
    used_at: dt.datetime
    request_id: str


@dataclass(frozen=True, slots=True)
class WrappedVersion:
    version: int
    material_wrapped: bytes
    created_at: dt.datetime
    key_material_id: str | None = None  # the version's KeyMaterialId (migration 0006), when read with it


@dataclass(frozen=True, slots=True)
class LoadedKey:
    """A key row with its wrapped versions (in version order) and, when asked for, its grants
    (in creation order, as ``grants.for_key`` returns them; ``None`` when not asked for)."""

    record: KeyRecord
    versions: list[WrappedVersion]
    grants: tuple[GrantView, ...] | None


_COLUMNS = (
    "key_id, account_id, region, description, key_usage, key_spec, origin, key_manager, key_state,"
    " creation_date, deletion_date, pending_window_days, valid_to, expiration_model, policy,"
    " aws_service, current_version, mr_primary_region, mr_replica_regions"
)

# One statement for a key, its versions and (if $1) its grants: what a cold cache needs, in one
# round trip. Versions come as three parallel arrays (bytea stays binary); grants as one jsonb
# array of [grant_id, grantee, operations, constraints], which is all the authorizer reads.
_LOAD = (
    "SELECT " + ", ".join(f"k.{c.strip()}" for c in _COLUMNS.split(",")) + ","
    " v.numbers, v.materials, v.created, v.material_ids,"
    " CASE WHEN $1::boolean THEN (SELECT COALESCE(jsonb_agg(jsonb_build_array(g.grant_id, g.grantee_principal,"
    " g.operations, g.constraints) ORDER BY g.seq), '[]'::jsonb) FROM grants g WHERE g.key_id = k.key_id)"
    " END AS grants"
    " FROM keys k CROSS JOIN LATERAL (SELECT array_agg(kv.version ORDER BY kv.version) AS numbers,"
    " array_agg(kv.material_wrapped ORDER BY kv.version) AS materials,"
    " array_agg(kv.created_at ORDER BY kv.version) AS created,"
    " array_agg(km.key_material_id ORDER BY kv.version) AS material_ids"
    " FROM key_versions kv LEFT JOIN key_materials km ON km.key_id = kv.key_id AND km.version = kv.version"
    " WHERE kv.key_id = k.key_id) v"
)


def _mr_configuration(row: Any) -> MultiRegionConfiguration | None:
    """``MultiRegionConfiguration`` as this region shows it (replication: mr_* columns)."""
    key_id, account, here = row["key_id"], row["account_id"], row["region"]
    if not key_id.startswith(MRK_PREFIX):
        return None
    primary = row["mr_primary_region"] or here
    replicas = sorted(r for r in (row["mr_replica_regions"] or []) if r != primary)
    return MultiRegionConfiguration(
        key_type=MultiRegionKeyType.PRIMARY if primary == here else MultiRegionKeyType.REPLICA,
        primary_key=MultiRegionKey(key_arn(primary, account, key_id), primary),
        replica_keys=tuple(MultiRegionKey(key_arn(r, account, key_id), r) for r in replicas),
    )


def _record(row: Any) -> KeyRecord:
    key = Key(
        key_id=row["key_id"],
        account=row["account_id"],
        region=row["region"],
        creation_date=row["creation_date"],
        key_state=KeyState(row["key_state"]),
        description=row["description"],
        key_usage=KeyUsage(row["key_usage"]),
        key_spec=KeySpec(row["key_spec"]),
        origin=Origin(row["origin"]),
        key_manager=KeyManager(row["key_manager"]),
        deletion_date=row["deletion_date"],
        pending_deletion_window_in_days=row["pending_window_days"],
        valid_to=row["valid_to"],
        expiration_model=ExpirationModel(row["expiration_model"]) if row["expiration_model"] else None,
        multi_region_configuration=_mr_configuration(row),
    )
    return KeyRecord(key, row["policy"], row["current_version"], row["aws_service"])


async def insert_key(
    con: Conn, key: Key, *, policy: str, current_version: int | None, aws_service: str | None = None
) -> None:
    mr = key.multi_region_configuration
    try:
        await con.execute(
            f"INSERT INTO keys ({_COLUMNS}, multi_region)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
            key.key_id, key.account, key.region, key.description, key.key_usage.value, key.key_spec.value,
            key.origin.value, key.key_manager.value, key.key_state.value, key.creation_date,
            key.deletion_date, key.pending_deletion_window_in_days, key.valid_to,
            key.expiration_model.value if key.expiration_model else None, policy, aws_service,
            current_version, mr.primary_key.region if mr else None,
            [r.region for r in mr.replica_keys] if mr else [], key.multi_region,
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExistsException(f"Key '{key.arn}' already exists") from exc


async def insert_version(con: Conn, key_id: str, version: int, wrapped: bytes, created_at: dt.datetime) -> None:
    await con.execute(
        "INSERT INTO key_versions (key_id, version, material_wrapped, created_at) VALUES ($1, $2, $3, $4)",
        key_id, version, wrapped, created_at,
    )  # fmt: skip


async def get_key(con: Conn, key_id: str, *, for_update: bool = False) -> KeyRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await con.fetchrow(f"SELECT {_COLUMNS} FROM keys WHERE key_id = $1{lock}", key_id)
    return _record(row) if row is not None else None


async def versions(con: Conn, key_id: str) -> list[WrappedVersion]:
    rows = await con.fetch(
        "SELECT kv.version, kv.material_wrapped, kv.created_at, km.key_material_id FROM key_versions kv"
        " LEFT JOIN key_materials km ON km.key_id = kv.key_id AND km.version = kv.version"
        " WHERE kv.key_id = $1 ORDER BY kv.version",
        key_id,
    )
    return [
        WrappedVersion(r["version"], bytes(r["material_wrapped"]), r["created_at"], r["key_material_id"]) for r in rows
    ]


def _loaded(row: Any) -> LoadedKey:
    numbers, materials, created = row["numbers"] or [], row["materials"] or [], row["created"] or []
    ids = row["material_ids"] or [None] * len(numbers)
    wrapped = [WrappedVersion(n, bytes(m), c, i) for n, m, c, i in zip(numbers, materials, created, ids, strict=True)]
    grants = row["grants"]
    views = (
        tuple(GrantView(g[0], g[1], frozenset(g[2]), constraints_from_json(g[3])) for g in grants)
        if grants is not None
        else None
    )
    return LoadedKey(_record(row), wrapped, views)


async def load_key(con: Conn, key_id: str, *, with_grants: bool = False) -> LoadedKey | None:
    """``get_key`` + ``versions`` (+ the grants' views) in one round trip; ``None`` if no such key."""
    row = await con.fetchrow(f"{_LOAD} WHERE k.key_id = $2", with_grants, key_id)
    return _loaded(row) if row is not None else None


async def load_keys(con: Conn, *, after: str, limit: int, with_grants: bool = False) -> list[LoadedKey]:
    """Up to ``limit`` keys of the store with ids greater than ``after`` (``""``: from the first),
    in key-id order, each as ``load_key`` returns it: keyset pages for a bulk cache load."""
    rows = await con.fetch(f"{_LOAD} WHERE k.key_id > $2 ORDER BY k.key_id LIMIT $3", with_grants, after, limit)
    return [_loaded(r) for r in rows]


async def list_keys(con: Conn, account: str, *, after: str | None, limit: int) -> list[tuple[str, str]]:
    """(key id, region) of ``account``'s keys in key-id order, after ``after``; ``limit + 1`` rows
    are asked for by callers that want to know whether the page is truncated."""
    rows = await con.fetch(
        "SELECT key_id, region FROM keys WHERE account_id = $1 AND ($2::text IS NULL OR key_id > $2)"
        " ORDER BY key_id LIMIT $3",
        account, after, limit,
    )  # fmt: skip
    return [(r["key_id"], r["region"]) for r in rows]


async def update_state(con: Conn, key: Key, now: dt.datetime) -> None:
    """Persist the state fields that ``domain.key.apply`` moves."""
    await con.execute(
        "UPDATE keys SET key_state = $2, deletion_date = $3, pending_window_days = $4, updated_at = $5"
        " WHERE key_id = $1",
        key.key_id, key.key_state.value, key.deletion_date, key.pending_deletion_window_in_days, now,
    )  # fmt: skip


async def update_description(con: Conn, key_id: str, description: str, now: dt.datetime) -> None:
    await con.execute("UPDATE keys SET description = $2, updated_at = $3 WHERE key_id = $1", key_id, description, now)


async def due_for_deletion(con: Conn, now: dt.datetime, *, limit: int = 100) -> list[KeyRecord]:
    """Keys in PendingDeletion whose date has passed, locked; rows another sweeper holds are skipped."""
    rows = await con.fetch(
        f"SELECT {_COLUMNS} FROM keys WHERE key_state = 'PendingDeletion' AND deletion_date <= $1"
        " ORDER BY deletion_date LIMIT $2 FOR UPDATE SKIP LOCKED",
        now, limit,
    )  # fmt: skip
    return [_record(r) for r in rows]


async def delete_key(con: Conn, key_id: str) -> None:
    """Remove the key and, by cascade, its wrapped material, aliases and tags: irreversible."""
    await con.execute("DELETE FROM keys WHERE key_id = $1", key_id)


async def record_usage(con: Conn, uses: dict[str, LastUsage]) -> None:
    """Upsert last uses in one statement; keys deleted meanwhile are skipped, older uses never win."""
    await con.execute(
        "INSERT INTO key_last_usage (key_id, operation, used_at, request_id)"
        " SELECT u.key_id, u.operation, u.used_at, u.request_id"
        " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])"
        " AS u(key_id, operation, used_at, request_id)"
        " JOIN keys k ON k.key_id = u.key_id"
        " ON CONFLICT (key_id) DO UPDATE SET operation = EXCLUDED.operation, used_at = EXCLUDED.used_at,"
        " request_id = EXCLUDED.request_id WHERE key_last_usage.used_at <= EXCLUDED.used_at",
        list(uses), [u.operation for u in uses.values()], [u.used_at for u in uses.values()],
        [u.request_id for u in uses.values()],
    )  # fmt: skip


async def last_usage(con: Conn, key_id: str) -> LastUsage | None:
    row = await con.fetchrow("SELECT operation, used_at, request_id FROM key_last_usage WHERE key_id = $1", key_id)
    return LastUsage(row["operation"], row["used_at"], row["request_id"]) if row is not None else None
