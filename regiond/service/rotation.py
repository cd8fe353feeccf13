"""Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
ListKeyRotations, and the one rotation routine the scheduler shares.

A rotation adds a backing version that becomes current for encryption; every older version
stays for decryption (its blob header names it), so ciphertexts of every era decrypt. The key
id, ARN, aliases, policy and grants are untouched: only ``key_versions``, ``key_materials`` and
``keys.current_version`` change, in one transaction (``store.rotation.add_backing_version``).
A crash before commit leaves the old version current, and it has its material.

RotateKeyOnDemand is two steps, as AWS's is asynchronous ("KMS uses a background process"):

1. accept: one transaction checks the state, the 25-rotation limit and conflicts, and records
   ``on_demand_started_at`` (GetKeyRotationStatus's OnDemandRotationStartDate; a second call
   now gets ConflictException);
2. perform: a second transaction, in the same request, rotates and clears the marker.

Both states between and after the steps are usable: after step 1 the old version is still
current and complete; after step 2 the new one is. If the node dies between them, the
scheduler (``regiond.background.rotation_scheduler``) finds the marker and performs step 2;
whoever locks the key row first does it, the other finds the marker gone.

Origins (docs/ROTATION_AND_IMPORT.md has the table):

- ``AWS_KMS``: automatic rotation every RotationPeriodInDays (90-2560, default 365) and
  on-demand rotation, each with fresh random material.
- ``EXTERNAL``: automatic rotation is refused (UnsupportedOperationException, as the model
  says). On-demand rotation makes current the material imported with ImportType
  NEW_KEY_MATERIAL (state PENDING_ROTATION); without one, KMSInvalidStateException.
- AWS managed keys rotate automatically every 365 days from creation; customers cannot change
  that or rotate them on demand (their key policy does not allow it: AccessDeniedException).
- Multi-Region keys rotate in the primary Region only; replicas refuse with
  UnsupportedOperationException. A ``MaterialListener`` (replication's outbox) is told about
  each new version of a multi-Region key inside the rotation's transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from regiond.crypto import import_wrap, wrap
from regiond.crypto.keyring import RootKeyring
from regiond.domain.key import Key, KeyManager, KeySpec, KeyState, KeyUsage, MultiRegionKeyType, Origin, require_state
from regiond.errors import (
    ConflictException,
    InvalidMarkerException,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
    UnsupportedOperationException,
)
from regiond.service.authz import Authorizer, Requester, access_denied
from regiond.service.keycache import CachedKey, KeyCache
from regiond.service.keys import KeyService, Page
from regiond.store import imports as import_store
from regiond.store import keys as key_store
from regiond.store import rotation as rotation_store
from regiond.store.pool import Conn, Pool, connection, transaction
from regiond.store.rotation import AWS_MANAGED_ROTATION_PERIOD_DAYS, MaterialRecord, RotationType

log = structlog.get_logger(__name__)

__all__ = [
    "AWS_MANAGED_ROTATION_PERIOD_DAYS",
    "CONFLICT_WINDOW",
    "DEFAULT_ROTATION_PERIOD_DAYS",
    "ON_DEMAND_ROTATION_LIMIT",
    "KeyMaterialState",
    "MaterialListener",
    "RotationEntry",
    "RotationService",
    "RotationStatus",
    "RotationType",
]

ON_DEMAND_ROTATION_LIMIT = 25
"""RotateKeyOnDemand: "You can perform on-demand key rotation a maximum of 25 times per KMS key"."""
DEFAULT_ROTATION_PERIOD_DAYS = 365
CONFLICT_WINDOW = dt.timedelta(minutes=20)
"""ConflictException: "an automatic rotation of this key is currently in progress or scheduled to
begin within the next 20 minutes"."""
DEFAULT_LIST_LIMIT = 100


class KeyMaterialState(enum.StrEnum):
    """``KeyMaterialState`` (PENDING_MULTI_REGION_IMPORT_AND_ROTATION is not produced: see docs)."""

    CURRENT = "CURRENT"
    NON_CURRENT = "NON_CURRENT"
    PENDING_ROTATION = "PENDING_ROTATION"


class MaterialListener(Protocol):
    """Told, inside the rotation's transaction, that a multi-Region key has a new current version
    or new automatic-rotation settings (replication's outbox: both are shared properties)."""

    async def key_material_added(self, con: Conn, key_id: str, version: int) -> object: ...

    async def key_rotation_changed(self, con: Conn, key_id: str) -> object: ...


@dataclass(frozen=True, slots=True)
class RotationStatus:
    key: Key
    enabled: bool
    period_days: int | None
    next_rotation_date: dt.datetime | None
    on_demand_started_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class RotationEntry:
    """One ``RotationsListEntry``; the import fields are set for EXTERNAL keys only."""

    key_material_id: str
    state: KeyMaterialState
    rotation_type: RotationType | None
    rotation_date: dt.datetime | None
    import_state: str | None = None
    expiration_model: str | None = None
    valid_to: dt.datetime | None = None
    description: str | None = None


def material_state(record: MaterialRecord, current_version: int | None) -> KeyMaterialState:
    if record.version == current_version:
        return KeyMaterialState.CURRENT
    if current_version is None or record.version > current_version:
        return KeyMaterialState.PENDING_ROTATION
    return KeyMaterialState.NON_CURRENT


def _no_fault(_step: str) -> None:
    return None


class RotationService:
    def __init__(
        self, pool: Pool, keyring: RootKeyring, keys: KeyService, *, authz: Authorizer, cache: KeyCache,
        material_listener: MaterialListener | None = None,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._keyring = keyring
        self._keys = keys
        self._authz = authz
        self._cache = cache
        self._listener = material_listener
        # Fault-injection seam: called with a step name between the steps of a rotation
        # ("on_demand_accepted", "version_inserted", "current_flipped"); tests make it raise.
        self.checkpoint: Callable[[str], None] = _no_fault

    def invalidate(self, key_id: str) -> None:
        """Drop this process's cached copy of a key rotated outside a request (the scheduler)."""
        self._cache.invalidate(key_id)

    # --- checks shared by the operations ------------------------------------------------------

    async def _resolve(self, who: Requester, value: str, action: str, *, cross_account: bool = False) -> CachedKey:
        entry = await self._keys.resolve(who, value, allow_alias=False)
        await self._authz.authorize(who.principal, action, entry.key, request_values=who.values)
        if not cross_account and entry.key.account != who.account:
            raise access_denied(who.principal, action, entry.key.arn)
        return entry

    @staticmethod
    def _require_rotatable(key: Key, *, read_only: bool = False) -> None:
        """Symmetric encryption keys only; multi-Region replicas rotate from their primary (their
        status and history, shared properties replicated from it, can still be read)."""
        if key.key_spec is not KeySpec.SYMMETRIC_DEFAULT or key.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
            raise UnsupportedOperationException(
                f"{key.arn} key spec {key.key_spec} does not support rotation: only symmetric encryption keys rotate."
            )
        config = key.multi_region_configuration
        if not read_only and config is not None and config.key_type is MultiRegionKeyType.REPLICA:
            raise UnsupportedOperationException(
                f"{key.arn} is a multi-Region replica key: rotate its primary key in {config.primary_key.region}."
            )

    def _require_customer_managed(self, who: Requester, key: Key, action: str) -> None:
        # The AWS managed key policy allows no rotation management; this is the second line.
        if key.key_manager is KeyManager.AWS:
            raise access_denied(who.principal, action, key.arn)

    # --- EnableKeyRotation / DisableKeyRotation / GetKeyRotationStatus -------------------------

    async def enable_key_rotation(self, who: Requester, value: str, period_days: int | None, now: dt.datetime) -> Key:
        """Turn on automatic rotation; ``period_days`` (default 365, or the period already set).

        From disabled: the first rotation is ``period_days`` after ``now``. Already enabled: only
        the period changes, counted from the same anchor (the enable date or the last automatic
        rotation), so a shorter period may make the key due at once; the scheduler rotates it.
        """
        entry = await self._keys.resolve(who, value, allow_alias=False)
        values = dict(who.values)
        if period_days is not None:
            values["kms:RotationPeriodInDays"] = (str(period_days),)
        await self._authz.authorize(who.principal, "kms:EnableKeyRotation", entry.key, request_values=values)
        key = entry.key
        if key.account != who.account:
            raise access_denied(who.principal, "kms:EnableKeyRotation", key.arn)
        self._require_customer_managed(who, key, "kms:EnableKeyRotation")
        self._require_rotatable(key)
        if key.origin is not Origin.AWS_KMS:
            raise UnsupportedOperationException(
                f"{key.arn} origin is {key.origin}: automatic rotation is supported only for keys with "
                "AWS_KMS origin. Rotate imported key material on demand (RotateKeyOnDemand)."
            )
        async with transaction(self._pool) as con:
            record = await self._lock(con, key)
            require_state("EnableKeyRotation", record.key)
            current = await rotation_store.get_schedule(con, key.key_id, for_update=True)
            period = period_days or (current.period_days if current.enabled else DEFAULT_ROTATION_PERIOD_DAYS)
            anchor = current.anchor_date if current.enabled and current.anchor_date else now
            schedule = dataclasses.replace(
                current, enabled=True, period_days=period, anchor_date=anchor,
                next_rotation_date=anchor + dt.timedelta(days=period),
            )  # fmt: skip
            await rotation_store.put_schedule(con, key.key_id, schedule, now)
            if key.multi_region and self._listener is not None:
                await self._listener.key_rotation_changed(con, key.key_id)
        log.info("key.rotation_enabled", key_id=key.key_id, period_days=period)
        return record.key

    async def disable_key_rotation(self, who: Requester, value: str, now: dt.datetime) -> Key:
        entry = await self._resolve(who, value, "kms:DisableKeyRotation")
        key = entry.key
        self._require_customer_managed(who, key, "kms:DisableKeyRotation")
        self._require_rotatable(key)
        if key.origin is not Origin.AWS_KMS:
            raise UnsupportedOperationException(
                f"{key.arn} origin is {key.origin}: automatic rotation is supported only for keys with AWS_KMS origin."
            )
        async with transaction(self._pool) as con:
            record = await self._lock(con, key)
            require_state("DisableKeyRotation", record.key)
            current = await rotation_store.get_schedule(con, key.key_id, for_update=True)
            schedule = dataclasses.replace(current, enabled=False, anchor_date=None, next_rotation_date=None)
            await rotation_store.put_schedule(con, key.key_id, schedule, now)
            if key.multi_region and self._listener is not None:
                await self._listener.key_rotation_changed(con, key.key_id)
        log.info("key.rotation_disabled", key_id=key.key_id)
        return record.key

    async def get_key_rotation_status(self, who: Requester, value: str) -> RotationStatus:
        """Pending deletion reads as disabled (AWS: "its key rotation status is false") and comes
        back when the deletion is cancelled; Disabled keys keep their status.

        Asymmetric and HMAC keys never rotate and read as disabled, not as an error: AWS answers
        them (earlier editions of its API reference: "The key rotation status of these KMS keys is
        always false"), and
        clients read every key's status (Terraform's aws_kms_key does, for every AWS_KMS key).
        """
        entry = await self._resolve(who, value, "kms:GetKeyRotationStatus", cross_account=True)
        key = entry.key
        if key.key_spec is not KeySpec.SYMMETRIC_DEFAULT or key.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
            return RotationStatus(key=key, enabled=False, period_days=None, next_rotation_date=None,
                                  on_demand_started_at=None)  # fmt: skip
        self._require_rotatable(key, read_only=True)
        async with connection(self._pool) as con:
            schedule = await rotation_store.get_schedule(con, key.key_id)
        enabled = schedule.enabled and key.key_state not in (
            KeyState.PENDING_DELETION,
            KeyState.PENDING_REPLICA_DELETION,
        )
        return RotationStatus(
            key=key,
            enabled=enabled,
            period_days=schedule.period_days if enabled else None,
            next_rotation_date=schedule.next_rotation_date if enabled else None,
            on_demand_started_at=schedule.on_demand_started_at,
        )

    # --- RotateKeyOnDemand --------------------------------------------------------------------

    async def rotate_key_on_demand(self, who: Requester, value: str, now: dt.datetime) -> Key:
        entry = await self._resolve(who, value, "kms:RotateKeyOnDemand")
        key = entry.key
        self._require_customer_managed(who, key, "kms:RotateKeyOnDemand")
        self._require_rotatable(key)
        if key.origin not in (Origin.AWS_KMS, Origin.EXTERNAL):
            raise UnsupportedOperationException(
                f"{key.arn} origin is {key.origin}: on-demand rotation is not supported."
            )
        if key.origin is Origin.EXTERNAL and key.multi_region:
            raise UnsupportedOperationException(
                f"{key.arn}: on-demand rotation of multi-Region keys with imported key material is not supported."
            )
        async with transaction(self._pool) as con:
            record = await self._lock(con, key)
            require_state("RotateKeyOnDemand", record.key)
            schedule = await rotation_store.get_schedule(con, key.key_id, for_update=True)
            if schedule.on_demand_started_at is not None:
                raise ConflictException(f"An on-demand rotation of {key.arn} is already in progress.")
            due = schedule.next_rotation_date
            if schedule.enabled and due is not None and due <= now + CONFLICT_WINDOW:
                raise ConflictException(
                    f"An automatic rotation of {key.arn} is in progress or scheduled to begin within 20 minutes."
                )
            if await rotation_store.on_demand_count(con, key.key_id) >= ON_DEMAND_ROTATION_LIMIT:
                raise LimitExceededException(
                    f"{key.arn} has reached the limit of {ON_DEMAND_ROTATION_LIMIT} on-demand rotations."
                )
            if key.origin is Origin.EXTERNAL:
                await self._pending_import(con, record)
            await rotation_store.mark_on_demand(con, key.key_id, now)
        log.info("key.on_demand_rotation_accepted", key_id=key.key_id)
        self.checkpoint("on_demand_accepted")
        await self.finish_on_demand(key.key_id, now)
        return record.key

    async def finish_on_demand(self, key_id: str, now: dt.datetime) -> int | None:
        """Step 2: perform the accepted on-demand rotation of ``key_id`` unless someone already did.

        Returns the new version, or ``None`` if there was nothing to do (no marker, or the key
        is not Enabled now: the marker stays and the scheduler finishes it once it is).
        """
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key_id, for_update=True)
            if record is None or record.key.key_state is not KeyState.ENABLED:
                return None
            if await rotation_store.pending_on_demand(con, key_id) is None:
                return None
            version = await self.rotate_locked(con, record, now, RotationType.ON_DEMAND)
        self._cache.invalidate(key_id)
        return version

    # --- the rotation itself ------------------------------------------------------------------

    async def rotate_locked(
        self, con: Conn, record: key_store.KeyRecord, now: dt.datetime, rotation_type: RotationType
    ) -> int:
        """Rotate ``record``'s key on ``con`` (a transaction holding the key row); the new version.

        AWS_KMS origin: fresh random material. EXTERNAL: the imported material pending rotation.
        AUTOMATIC moves the schedule to ``now + period``; ON_DEMAND clears the on-demand marker and
        leaves the schedule alone ("On-demand rotations do not change existing automatic rotation
        schedules"). The caller commits, then drops its cached copy of the key.
        """
        key = record.key
        if key.origin is Origin.EXTERNAL:
            pending = await self._pending_import(con, record)
            await rotation_store.mark_rotated(con, key.key_id, pending.version, rotation_type, now)
            await rotation_store.set_current_version(con, key.key_id, pending.version, now)
            await import_store.set_key_expiration(con, key.key_id, pending.expiration_model, pending.valid_to, now)
            version = pending.version
        else:
            material = wrap.new_backing_key()

            def seal(number: int) -> bytes:
                return wrap.wrap(self._keyring, key.key_id, number, material)

            version = await rotation_store.add_backing_version(
                con, key.key_id, seal=seal, key_material_id=import_wrap.key_material_id(key.key_id, material),
                now=now, rotation_type=rotation_type, checkpoint=self.checkpoint,
            )  # fmt: skip
        schedule = await rotation_store.get_schedule(con, key.key_id, for_update=True)
        if rotation_type is RotationType.AUTOMATIC and schedule.enabled:
            schedule = dataclasses.replace(
                schedule, anchor_date=now, next_rotation_date=now + dt.timedelta(days=schedule.period_days)
            )
        if rotation_type is RotationType.ON_DEMAND:
            schedule = dataclasses.replace(schedule, on_demand_started_at=None)
        await rotation_store.put_schedule(con, key.key_id, schedule, now)
        if key.multi_region and self._listener is not None:  # after the schedule moved: both travel
            await self._listener.key_material_added(con, key.key_id, version)
        log.info("key.rotated", key_id=key.key_id, version=version, rotation_type=rotation_type.value)
        return version

    async def _lock(self, con: Conn, key: Key) -> key_store.KeyRecord:
        record = await key_store.get_key(con, key.key_id, for_update=True)
        if record is None:
            raise NotFoundException(f"Key '{key.arn}' does not exist")
        return record

    async def _pending_import(self, con: Conn, record: key_store.KeyRecord) -> MaterialRecord:
        """The imported material waiting to become current, or KMSInvalidStateException."""
        after = record.current_version or 0
        for candidate in await rotation_store.materials(con, record.key.key_id, after_version=after):
            if candidate.imported:
                return candidate
        raise KMSInvalidStateException(
            f"{record.key.arn} has no imported key material pending rotation: import new key material "
            "(ImportKeyMaterial with ImportType NEW_KEY_MATERIAL) before RotateKeyOnDemand."
        )

    # --- ListKeyRotations ---------------------------------------------------------------------

    async def list_key_rotations(
        self, who: Requester, value: str, *, include_key_material: str | None, limit: int | None, marker: str | None
    ) -> tuple[Key, Page[RotationEntry]]:
        """ROTATIONS_ONLY (default): completed rotations; ALL_KEY_MATERIAL adds the first material
        and imported material pending rotation. Oldest first; the marker is a version number."""
        entry = await self._resolve(who, value, "kms:ListKeyRotations")
        key = entry.key
        self._require_rotatable(key, read_only=True)
        if key.origin not in (Origin.AWS_KMS, Origin.EXTERNAL):
            raise UnsupportedOperationException(f"{key.arn} origin is {key.origin}: rotation is not supported.")
        after = 0
        if marker is not None:
            if not marker.isdigit() or len(marker) > 10:
                raise InvalidMarkerException("Invalid marker")
            after = int(marker)
        size = limit or DEFAULT_LIST_LIMIT
        async with connection(self._pool) as con:
            record = await key_store.get_key(con, key.key_id)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            rows = await rotation_store.materials(
                con, key.key_id, after_version=after, limit=size + 1,
                rotations_only=include_key_material != "ALL_KEY_MATERIAL",
            )  # fmt: skip
        external = key.origin is Origin.EXTERNAL
        items = [
            RotationEntry(
                key_material_id=r.key_material_id,
                state=material_state(r, record.current_version),
                rotation_type=r.rotation_type,
                rotation_date=r.rotation_date,
                import_state=("IMPORTED" if r.imported else "PENDING_IMPORT") if external else None,
                expiration_model=r.expiration_model if external else None,
                valid_to=r.valid_to if external else None,
                description=r.description if external else None,
            )
            for r in rows[:size]
        ]
        next_marker = str(rows[size - 1].version) if len(rows) > size else None
        return key, Page(items, next_marker)
