"""Rotation repository: key materials (history), the automatic schedule, and adding a version.

Tables of migration 0006: ``key_materials`` (one row per material ever associated with a key)
and ``key_rotation`` (schedule and on-demand marker); the wrapped bytes stay in
``key_versions`` (0002) and the current version in ``keys.current_version``.

``add_backing_version`` is *the* way a key gains a version that becomes current: material
row, wrapped bytes, then the ``current_version`` flip, all on the caller's connection, so in
the caller's transaction. Rotation (service.rotation), the automatic scheduler and
replication of a multi-Region key's new material all go through it; a failure at any step
rolls the whole thing back and the key keeps its old current version, which still has its
material. Writers hold the key row ``FOR UPDATE`` (taken here), so two rotations of one key
serialise and never pick the same version number.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regiond.errors import NotFoundException
from regiond.store.pool import Conn

__all__ = [
    "AWS_MANAGED_ROTATION_PERIOD_DAYS",
    "MaterialRecord",
    "RotationSchedule",
    "RotationType",
    "add_backing_version",
    "clear_on_demand",
    "due_for_rotation",
    "get_schedule",
    "insert_material",
    "mark_on_demand",
    "mark_rotated",
    "material",
    "materials",
    "next_version",
    "on_demand_count",
    "pending_on_demand",
    "put_schedule",
    "schedule_aws_managed",
    "set_current_version",
]


class RotationType(enum.StrEnum):
    """``RotationType`` of the KMS model."""

    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


@dataclass(frozen=True, slots=True)
class MaterialRecord:
    """One ``key_materials`` row: what ListKeyRotations shows of one backing version."""

    version: int
    key_material_id: str
    rotation_type: RotationType | None
    rotation_date: dt.datetime | None
    imported: bool | None  # EXTERNAL only: wrapped bytes present (IMPORTED) or not (PENDING_IMPORT)
    expiration_model: str | None
    valid_to: dt.datetime | None
    description: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RotationSchedule:
    """A key's ``key_rotation`` row; keys without one have automatic rotation disabled."""

    enabled: bool = False
    period_days: int = 365
    anchor_date: dt.datetime | None = None
    next_rotation_date: dt.datetime | None = None
    on_demand_started_at: dt.datetime | None = None


_MATERIAL_COLUMNS = (
    "version, key_material_id, rotation_type, rotation_date, imported, expiration_model, valid_to,"
    " description, created_at"
)


def _material(row: Any) -> MaterialRecord:
    return MaterialRecord(
        version=row["version"],
        key_material_id=row["key_material_id"],
        rotation_type=RotationType(row["rotation_type"]) if row["rotation_type"] else None,
        rotation_date=row["rotation_date"],
        imported=row["imported"],
        expiration_model=row["expiration_model"],
        valid_to=row["valid_to"],
        description=row["description"],
        created_at=row["created_at"],
    )


async def materials(
    con: Conn, key_id: str, *, after_version: int = 0, limit: int | None = None, rotations_only: bool = False
) -> list[MaterialRecord]:
    """Materials of ``key_id`` in version order, after ``after_version``; ``rotations_only`` keeps
    those that became current by a rotation (the ROTATIONS_ONLY listing)."""
    rows = await con.fetch(
        f"SELECT {_MATERIAL_COLUMNS} FROM key_materials WHERE key_id = $1 AND version > $2"
        " AND (NOT $3 OR rotation_date IS NOT NULL) ORDER BY version LIMIT $4",
        key_id, after_version, rotations_only, limit,
    )  # fmt: skip
    return [_material(r) for r in rows]


async def material(con: Conn, key_id: str, version: int) -> MaterialRecord | None:
    row = await con.fetchrow(
        f"SELECT {_MATERIAL_COLUMNS} FROM key_materials WHERE key_id = $1 AND version = $2", key_id, version
    )
    return _material(row) if row is not None else None


async def next_version(con: Conn, key_id: str) -> int:
    """One more than any version the key has had (material rows outlive deleted imported bytes)."""
    return int(
        await con.fetchval(
            "SELECT greatest((SELECT coalesce(max(version), 0) FROM key_materials WHERE key_id = $1),"
            " (SELECT coalesce(max(version), 0) FROM key_versions WHERE key_id = $1)) + 1",
            key_id,
        )
    )


async def insert_material(
    con: Conn, key_id: str, version: int, key_material_id: str, now: dt.datetime, *,
    rotation_type: RotationType | None = None, imported: bool | None = None,
    expiration_model: str | None = None, valid_to: dt.datetime | None = None, description: str | None = None,
) -> None:  # fmt: skip
    await con.execute(
        f"INSERT INTO key_materials (key_id, {_MATERIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        key_id, version, key_material_id, rotation_type.value if rotation_type else None,
        now if rotation_type else None, imported, expiration_model, valid_to, description, now,
    )  # fmt: skip


async def mark_rotated(con: Conn, key_id: str, version: int, rotation_type: RotationType, when: dt.datetime) -> None:
    """Record that ``version`` became current by a rotation (imported material pending rotation)."""
    await con.execute(
        "UPDATE key_materials SET rotation_type = $3, rotation_date = $4 WHERE key_id = $1 AND version = $2",
        key_id, version, rotation_type.value, when,
    )  # fmt: skip


async def set_current_version(con: Conn, key_id: str, version: int, now: dt.datetime) -> None:
    """Flip the version that encrypts (fires the key NOTIFY: every node reloads the key)."""
    await con.execute("UPDATE keys SET current_version = $2, updated_at = $3 WHERE key_id = $1", key_id, version, now)


async def add_backing_version(
    con: Conn,
    key_id: str,
    *,
    seal: Callable[[int], bytes],
    key_material_id: str,
    now: dt.datetime,
    rotation_type: RotationType | None,
    version: int | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> int:
    """Add a backing version holding the material ``seal(version)`` wraps, and make it current.

    Run it inside a transaction: it locks the key row, picks ``version`` (default: the next
    number; replication passes the primary's number so blob headers agree across Regions),
    inserts the material row and the wrapped bytes, then flips ``current_version``.
    ``seal`` is called with the chosen number because the root-key AAD binds it (crypto.wrap).
    ``checkpoint`` is the fault-injection seam tests use to fail between the steps.
    With an explicit ``version`` already present (a replicated change applied twice) the stored
    version is kept: versions are immutable. NotFoundException if the key does not exist.
    Returns the new version.
    """
    if not await con.fetchval("SELECT true FROM keys WHERE key_id = $1 FOR UPDATE", key_id):
        raise NotFoundException(f"Key '{key_id}' does not exist")
    number = version if version is not None else await next_version(con, key_id)
    step = checkpoint or (lambda _name: None)
    if version is None or await material(con, key_id, number) is None:
        await insert_material(con, key_id, number, key_material_id, now, rotation_type=rotation_type)
    await con.execute(
        "INSERT INTO key_versions (key_id, version, material_wrapped, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (key_id, version) DO NOTHING",
        key_id, number, seal(number), now,
    )  # fmt: skip
    step("version_inserted")
    await set_current_version(con, key_id, number, now)
    step("current_flipped")
    return number


async def on_demand_count(con: Conn, key_id: str) -> int:
    return int(
        await con.fetchval(
            "SELECT count(*) FROM key_materials WHERE key_id = $1 AND rotation_type = 'ON_DEMAND'", key_id
        )
    )


# --- schedule -------------------------------------------------------------------------------------


def _schedule(row: Any) -> RotationSchedule:
    return RotationSchedule(
        enabled=row["enabled"],
        period_days=row["period_days"],
        anchor_date=row["anchor_date"],
        next_rotation_date=row["next_rotation_date"],
        on_demand_started_at=row["on_demand_started_at"],
    )


async def get_schedule(con: Conn, key_id: str, *, for_update: bool = False) -> RotationSchedule:
    lock = " FOR UPDATE" if for_update else ""
    row = await con.fetchrow(
        "SELECT enabled, period_days, anchor_date, next_rotation_date, on_demand_started_at"
        f" FROM key_rotation WHERE key_id = $1{lock}",
        key_id,
    )
    return _schedule(row) if row is not None else RotationSchedule()


async def put_schedule(con: Conn, key_id: str, schedule: RotationSchedule, now: dt.datetime) -> None:
    await con.execute(
        "INSERT INTO key_rotation (key_id, enabled, period_days, anchor_date, next_rotation_date,"
        " on_demand_started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (key_id) DO UPDATE SET enabled = EXCLUDED.enabled, period_days = EXCLUDED.period_days,"
        " anchor_date = EXCLUDED.anchor_date, next_rotation_date = EXCLUDED.next_rotation_date,"
        " on_demand_started_at = EXCLUDED.on_demand_started_at, updated_at = EXCLUDED.updated_at",
        key_id, schedule.enabled, schedule.period_days, schedule.anchor_date, schedule.next_rotation_date,
        schedule.on_demand_started_at, now,
    )  # fmt: skip


AWS_MANAGED_ROTATION_PERIOD_DAYS = 365


async def schedule_aws_managed(con: Conn, key_id: str, created: dt.datetime) -> None:
    """Put a new AWS managed key on the yearly schedule: "New AWS managed keys are automatically
    rotated one year after they are created, and approximately every year thereafter"."""
    period = AWS_MANAGED_ROTATION_PERIOD_DAYS
    schedule = RotationSchedule(True, period, created, created + dt.timedelta(days=period))
    await put_schedule(con, key_id, schedule, created)


async def mark_on_demand(con: Conn, key_id: str, started_at: dt.datetime) -> None:
    await con.execute(
        "INSERT INTO key_rotation (key_id, enabled, on_demand_started_at, updated_at) VALUES ($1, false, $2, $2)"
        " ON CONFLICT (key_id) DO UPDATE SET on_demand_started_at = $2, updated_at = $2",
        key_id, started_at,
    )  # fmt: skip


async def clear_on_demand(con: Conn, key_id: str, now: dt.datetime) -> None:
    await con.execute(
        "UPDATE key_rotation SET on_demand_started_at = NULL, updated_at = $2 WHERE key_id = $1", key_id, now
    )


async def due_for_rotation(con: Conn, now: dt.datetime, *, limit: int) -> list[tuple[str, RotationType]]:
    """Enabled keys whose rotation is due at ``now``: an accepted on-demand rotation not finished
    (ON_DEMAND) or a passed NextRotationDate (AUTOMATIC). Key rows are locked; rows another
    transaction holds (a RotateKeyOnDemand in flight) are skipped for this round."""
    rows = await con.fetch(
        "SELECT k.key_id, r.on_demand_started_at IS NOT NULL AS on_demand FROM key_rotation r"
        " JOIN keys k ON k.key_id = r.key_id WHERE k.key_state = 'Enabled'"
        " AND coalesce(k.mr_primary_region, k.region) = k.region"  # replicas rotate from their primary
        " AND (r.on_demand_started_at IS NOT NULL OR (r.enabled AND r.next_rotation_date <= $1))"
        " ORDER BY coalesce(r.on_demand_started_at, r.next_rotation_date) LIMIT $2 FOR UPDATE OF k SKIP LOCKED",
        now, limit,
    )  # fmt: skip
    return [(r["key_id"], RotationType.ON_DEMAND if r["on_demand"] else RotationType.AUTOMATIC) for r in rows]


async def pending_on_demand(con: Conn, key_id: str) -> dt.datetime | None:
    return await con.fetchval("SELECT on_demand_started_at FROM key_rotation WHERE key_id = $1", key_id)  # type: ignore[no-any-return]
