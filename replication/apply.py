"""Applying one verified frame to this region's store, idempotently and under the epoch rule.

The receiver calls ``apply_frame`` inside the transaction that also moves the source's applied
sequence number, so each frame takes effect exactly once (``replication.receiver``). Every
write here is itself idempotent as well (upserts, insert-if-absent), so a frame re-applied
after an operator rewinds a cursor does no harm.

Outcomes:

- ``APPLIED`` -- the change is made;
- ``SKIPPED`` -- nothing to do (the key is gone here, the change was already made), logged at info;
- ``REFUSED`` -- an authentic, in-order frame this region will not apply: a stale epoch, an IAM
  change from a region that is not the IAM home, a key change from a region that is not a
  member. Logged as a warning and counted; the sequence number is consumed, so the channel
  moves on (the refusal is final, retrying would not change it).

Who may change a key here (``_sender_may_change``): only a member of the key set as this region
knows it (its primary or one of its replicas), and shared state (KEY_CREATED, KEY_UPDATED) only
from the region that calls itself the primary in it, since only a primary sends it. A region that
never held the key has no say over it, whatever epoch it claims: without this, any region of the
cluster could name itself the primary of a key it never had, install backing material it knows
as the current version, or push the epoch so high that the real primary's frames are refused.

A frame that *cannot* be applied now (material that does not open, a database error) raises
``ApplyError``: the transaction rolls back, the sequence number is not consumed, and the
sender retries with backoff -- sealing happens at send time, so a fixed peers file heals it.

The epoch rule (DESIGN section 8, "primary moves carry an epoch"): each multi-region key has
an epoch, 1 at creation and +1 per UpdatePrimaryRegion. A shared-property write from region S
at epoch e is admitted when ``e > local epoch``, or when ``e == local epoch`` and S is the
primary of that epoch. So once a region has heard of a primary move, whatever the old primary
queued earlier is refused; the new primary re-sends the complete shared state (every backing
version) when it takes over, so nothing legitimately made before the move is lost.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

import structlog

from regiond.crypto import hpke, import_wrap, keymaterial, wrap
from regiond.crypto.keyring import RootKeyring
from regiond.crypto.wrap import access_key_aad
from regiond.domain.ids import KeyIdKind, is_valid_key_id, key_arn, key_id_kind
from regiond.domain.key import (
    Key,
    KeyEvent,
    KeySpec,
    KeyState,
    MultiRegionConfiguration,
    MultiRegionKey,
    MultiRegionKeyType,
    Origin,
    apply,
)
from regiond.store import keys as key_store
from regiond.store import replication as repl_store
from regiond.store import rotation as rotation_store
from regiond.store import tags as tag_store
from regiond.store.outbox import Outbox, shared_snapshot
from regiond.store.pool import Conn
from replication import messages
from replication.errors import ReplicationError
from replication.frames import Frame, FrameKind
from replication.messages import (
    IamAccessKey,
    IamAccessKeyDeleted,
    IamAccessKeyStatus,
    IamAccount,
    IamChange,
    IamPolicy,
    IamPolicyDeleted,
    IamPrincipal,
    KeyCreated,
    KeyDeleted,
    KeyMaterial,
    KeyMessage,
    KeyUpdated,
    PrimaryMoved,
    SealedVersion,
    SharedState,
)

log = structlog.get_logger("replication.apply")

__all__ = [
    "ACCESS_KEY_SECRET_VERSION",
    "ApplyContext",
    "ApplyError",
    "Outcome",
    "Result",
    "apply_frame",
    "epoch_admits",
]

ACCESS_KEY_SECRET_VERSION = 0
"""HPKE ``info`` version slot for access-key secrets (key material uses its backing version)."""


class Outcome(enum.Enum):
    APPLIED = "applied"
    SKIPPED = "skipped"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str = ""


APPLIED = Result(Outcome.APPLIED)


class ApplyError(ReplicationError):
    """The frame cannot be applied now; roll back and let the sender retry."""


@dataclass(frozen=True)
class ApplyContext:
    region: str
    iam_home_region: str
    keyring: RootKeyring
    encryption_key: hpke.RegionEncryptionPrivateKey
    outbox: Outbox
    now: dt.datetime


def epoch_admits(frame_epoch: int, source: str, local_epoch: int, local_primary: str) -> bool:
    """The epoch rule of the module docstring."""
    return frame_epoch > local_epoch or (frame_epoch == local_epoch and source == local_primary)


def _skip(reason: str, **fields: Any) -> Result:
    log.info("replication.frame_skipped", reason=reason, **fields)
    return Result(Outcome.SKIPPED, reason)


def _refuse(reason: str, **fields: Any) -> Result:
    log.warning("replication.frame_refused", reason=reason, **fields)
    return Result(Outcome.REFUSED, reason)


async def apply_frame(con: Conn, frame: Frame, ctx: ApplyContext) -> Result:
    """Apply ``frame`` (already verified and in sequence) inside the caller's transaction.

    Its body is decoded into its message first; a body that is not one raises ``ApplyError``
    (a sender newer than this receiver, or a bug: retried, never half applied).
    """
    if frame.kind is FrameKind.IAM_CHANGE and frame.source != ctx.iam_home_region:
        return _refuse("iam_not_from_home", source=frame.source, home=ctx.iam_home_region, seq=frame.seq)
    try:
        message = messages.decode(frame.kind, frame.body)
    except messages.MessageError as exc:
        raise ApplyError(f"{type(exc).__name__}: {exc}"[:300]) from None
    if isinstance(message, IamChange):
        return await _apply_iam(con, frame, message, ctx)
    if not isinstance(message, KeyCreated | KeyMaterial | KeyUpdated | PrimaryMoved | KeyDeleted):
        return _refuse("unexpected_kind", source=frame.source, kind=frame.kind.name, seq=frame.seq)
    key_id = message.key_id
    if key_id_kind(key_id) is not KeyIdKind.MULTI_REGION or not is_valid_key_id(key_id):
        # Only mrk- keys ever replicate; anything else is a bug or an attack.
        return _refuse("not_a_multi_region_key", source=frame.source, seq=frame.seq)
    return await _apply_key(con, frame, message, ctx)


async def _apply_key(con: Conn, frame: Frame, message: KeyMessage, ctx: ApplyContext) -> Result:
    match message:
        case KeyCreated():
            return await _key_created(con, frame, message, ctx)
        case KeyMaterial():
            return await _key_material(con, frame, message, ctx)
        case KeyUpdated():
            return await _key_updated(con, frame, message, ctx)
        case PrimaryMoved():
            return await _primary_moved(con, frame, message, ctx)
        case KeyDeleted():
            return await _key_deleted(con, frame, message, ctx)


# --- key material -----------------------------------------------------------------------------


def _open_versions(
    frame: Frame, key_id: str, spec: KeySpec, sealed: tuple[SealedVersion, ...], ctx: ApplyContext
) -> list[tuple[int, bytes, dt.datetime, str]]:
    """(version, material wrapped under *our* root key, created_at, KeyMaterialId) per sealed version.

    The material must be of the key's spec (``crypto.keymaterial.check_imported``: 32 bytes for a
    symmetric key, an HMAC key of the spec's lengths, a PKCS#8 private key of the spec), whoever sent it."""
    out = []
    for item in sealed:
        version = item.version
        try:
            raw = hpke.open_from_region(
                ctx.encryption_key, item.sealed, key_id=key_id, version=version,
                source_region=frame.source, dest_region=ctx.region,
            )  # fmt: skip
        except hpke.SealedMaterialError:
            raise ApplyError(f"sealed material of {key_id} v{version} did not open") from None
        try:
            material = keymaterial.check_imported(spec, wrap.SecretMaterial(raw))
        except ValueError:
            raise ApplyError(f"material of {key_id} v{version} is not {spec} key material") from None
        wrapped = wrap.wrap(ctx.keyring, key_id, version, material)
        material_id = import_wrap.key_material_id(key_id, material)  # the same id in every region
        out.append((version, wrapped, item.created_at, material_id))
    return out


async def _install_versions(
    con: Conn, frame: Frame, key_id: str, spec: KeySpec, shared: SharedState | None, sealed: tuple[SealedVersion, ...],
    ctx: ApplyContext,
) -> int:
    """Add the frame's backing versions this region lacks, each with its material row first (as
    rotation does), so ListKeyRotations shows the same history in every region."""
    records = {m.version: m for m in (shared.materials if shared is not None else ())}
    held = {v.version for v in await key_store.versions(con, key_id)}
    added = 0
    for version, wrapped, created, material_id in _open_versions(frame, key_id, spec, sealed, ctx):
        if version in held:
            continue  # versions are immutable: the one held is the same material
        record = records.get(version)
        rotation_type = record.rotation_type if record else None
        rotated = record.rotation_date if record else None
        await repl_store.insert_replicated_material(con, key_id, version, material_id, rotation_type, rotated, created)
        added += await repl_store.insert_version_if_absent(con, key_id, version, wrapped, created)
    return added


async def _apply_rotation(con: Conn, key_id: str, shared: SharedState | None, now: dt.datetime) -> None:
    """Take the primary's automatic-rotation schedule (no shared state in the frame: leave ours alone)."""
    if shared is None:
        return
    raw = shared.rotation
    if raw is None:
        schedule = rotation_store.RotationSchedule()
    else:
        schedule = rotation_store.RotationSchedule(
            enabled=raw.enabled,
            period_days=raw.period_days,
            anchor_date=raw.anchor_date,
            next_rotation_date=raw.next_rotation_date,
        )
    await rotation_store.put_schedule(con, key_id, schedule, now)


def _members(primary: str, replica_regions: tuple[str, ...]) -> tuple[str, list[str]]:
    return primary, [r for r in replica_regions if r != primary]


# --- key frames -------------------------------------------------------------------------------


async def _key_created(con: Conn, frame: Frame, m: KeyCreated, ctx: ApplyContext) -> Result:
    key_id = m.key_id
    record = await key_store.get_key(con, key_id, for_update=True)
    if record is not None:  # re-sent, or this region already holds the key: treat as an update
        return await _key_updated(con, frame, m.as_update(), ctx)
    primary, replicas = _members(m.primary_region, m.replica_regions)
    if ctx.region not in replicas:
        return _refuse("not_a_member", source=frame.source, key_id=key_id, seq=frame.seq)
    if frame.source != primary:  # only the primary replicates a key (ReplicateKey runs there)
        return _refuse("not_the_primary", source=frame.source, key_id=key_id, seq=frame.seq, primary=primary)
    try:
        config = MultiRegionConfiguration(
            key_type=MultiRegionKeyType.REPLICA,
            primary_key=MultiRegionKey(key_arn(primary, m.account, key_id), primary),
            replica_keys=tuple(MultiRegionKey(key_arn(r, m.account, key_id), r) for r in sorted(replicas)),
        )
        key = Key(
            key_id=key_id,
            account=m.account,
            region=ctx.region,
            creation_date=m.creation_date,
            key_state=KeyState.CREATING,
            description=m.replica.description,
            key_usage=m.key_usage,
            key_spec=m.key_spec,
            origin=m.origin,
            multi_region_configuration=config,
        )
    except ValueError as exc:
        return _refuse("malformed_key", source=frame.source, key_id=key_id, seq=frame.seq, error=str(exc)[:200])
    # Imported material never crosses regions (AWS: the replica waits for its own import).
    current = m.current_version if m.origin is Origin.AWS_KMS else None
    await repl_store.ensure_account(con, m.account)
    await key_store.insert_key(con, key, policy=m.replica.policy, current_version=current)
    if m.origin is Origin.AWS_KMS:
        await _install_versions(con, frame, key_id, m.key_spec, m.shared, m.material or (), ctx)
        if current is not None and not any(v.version == current for v in await key_store.versions(con, key_id)):
            raise ApplyError(f"{key_id}: the current version's material is missing from the frame")
    await tag_store.upsert(con, key_id, list(m.replica.tags))
    await _apply_rotation(con, key_id, m.shared, ctx.now)
    await repl_store.set_epoch(con, key_id, frame.epoch or 1)
    ready = apply(key, KeyEvent.REPLICA_CREATED)
    await key_store.update_state(con, ready, ctx.now)
    log.info("replication.replica_created", key_id=key_id, region=ctx.region, source=frame.source,
             seq=frame.seq, state=ready.key_state.value)  # fmt: skip
    return APPLIED


def _sender_may_change(record: key_store.KeyRecord, frame: Frame, claimed_primary: str | None) -> Result | None:
    """``None`` if ``frame.source`` may change this key (module docstring), else the refusal.

    ``claimed_primary``: the primary a shared-state frame names (``None`` for the other kinds)."""
    config = record.key.multi_region_configuration
    members = {record.key.region}
    if config is not None:
        members = {config.primary_key.region, *(r.region for r in config.replica_keys)}
    if frame.source not in members:
        return _refuse("not_a_member", source=frame.source, key_id=record.key.key_id, seq=frame.seq)
    if claimed_primary is not None and claimed_primary != frame.source:
        return _refuse("not_the_primary", source=frame.source, key_id=record.key.key_id, seq=frame.seq,
                       primary=claimed_primary)  # fmt: skip
    return None


async def _admitted(
    con: Conn, frame: Frame, key_id: str, claimed_primary: str | None = None
) -> tuple[key_store.KeyRecord | None, Result | None]:
    """The locked key row if ``frame``'s source may change the key and the frame passes the epoch
    rule, else the result to return."""
    record = await key_store.get_key(con, key_id, for_update=True)
    if record is None:
        return None, _skip("key_not_here", source=frame.source, key_id=key_id, seq=frame.seq)
    refused = _sender_may_change(record, frame, claimed_primary)
    if refused is not None:
        return None, refused
    local_epoch = await repl_store.epoch(con, key_id)
    config = record.key.multi_region_configuration
    local_primary = config.primary_key.region if config else record.key.region
    if not epoch_admits(frame.epoch, frame.source, local_epoch, local_primary):
        return None, _refuse(
            "stale_epoch", source=frame.source, key_id=key_id, seq=frame.seq,
            frame_epoch=frame.epoch, local_epoch=local_epoch, primary=local_primary,
        )  # fmt: skip
    return record, None


async def _apply_shared(
    con: Conn, frame: Frame, m: KeyMaterial | KeyUpdated, record: key_store.KeyRecord, ctx: ApplyContext
) -> None:
    """Install the frame's backing versions, current version and rotation schedule (admitted frames)."""
    key_id = m.key_id
    await _apply_rotation(con, key_id, m.shared, ctx.now)
    if record.key.origin is not Origin.AWS_KMS:
        return  # imported material never crosses regions
    await _install_versions(con, frame, key_id, record.key.key_spec, m.shared, m.material or (), ctx)
    current = m.current_version
    if current is not None:
        held = {v.version for v in await key_store.versions(con, key_id)}
        if current not in held:
            raise ApplyError(f"{key_id}: current version {current} has no material here")
        await repl_store.set_current_version(con, key_id, current, ctx.now)


async def _key_material(con: Conn, frame: Frame, m: KeyMaterial, ctx: ApplyContext) -> Result:
    record, early = await _admitted(con, frame, m.key_id)
    if record is None:
        assert early is not None
        return early
    await _apply_shared(con, frame, m, record, ctx)
    await repl_store.set_epoch(con, m.key_id, frame.epoch)
    return APPLIED


async def _key_updated(con: Conn, frame: Frame, m: KeyUpdated, ctx: ApplyContext) -> Result:
    key_id = m.key_id
    record, early = await _admitted(con, frame, key_id, m.primary_region)
    if record is None:
        assert early is not None
        return early
    primary, replicas = _members(m.primary_region, m.replica_regions)
    await repl_store.set_mr_config(con, key_id, primary, replicas, ctx.now)
    await _apply_shared(con, frame, m, record, ctx)
    await repl_store.set_epoch(con, key_id, frame.epoch)
    key = record.key
    if key.key_state is KeyState.UPDATING and primary != ctx.region:
        # The old primary of a move: the new primary has taken over, restore the state.
        await key_store.update_state(con, apply(key, KeyEvent.PRIMARY_UPDATE_END), ctx.now)
        log.info("replication.primary_update_finished", key_id=key_id, primary=primary)
    return APPLIED


async def _primary_moved(con: Conn, frame: Frame, m: PrimaryMoved, ctx: ApplyContext) -> Result:
    key_id = m.key_id
    record = await key_store.get_key(con, key_id, for_update=True)
    if record is None:
        return _skip("key_not_here", source=frame.source, key_id=key_id, seq=frame.seq)
    refused = _sender_may_change(record, frame, None)
    if refused is not None:
        return refused
    if m.previous != frame.source:  # the old primary announces its own move
        return _refuse("not_the_previous_primary", source=frame.source, key_id=key_id, seq=frame.seq)
    primary, replicas = _members(m.primary_region, m.replica_regions)
    local_epoch = await repl_store.epoch(con, key_id)
    config = record.key.multi_region_configuration
    if frame.epoch <= local_epoch:
        if config is not None and config.primary_key.region == primary:
            return _skip("move_already_known", source=frame.source, key_id=key_id, seq=frame.seq)
        return _refuse("stale_epoch", source=frame.source, key_id=key_id, seq=frame.seq,
                       frame_epoch=frame.epoch, local_epoch=local_epoch)  # fmt: skip
    await repl_store.set_mr_config(con, key_id, primary, replicas, ctx.now)
    await repl_store.set_epoch(con, key_id, frame.epoch)
    if primary == ctx.region:
        key = record.key
        if key.key_state is KeyState.ENABLED:  # passes through Updating to Enabled (AWS)
            key = apply(apply(key, KeyEvent.PRIMARY_UPDATE_START), KeyEvent.PRIMARY_UPDATE_END)
        # Take over: send every member the complete shared state at the new epoch. This also
        # ends the old primary's Updating state, and replaces anything it queued before the move.
        shared = await shared_snapshot(con, key_id, versions=None if key.origin is Origin.AWS_KMS else [])
        takeover = KeyUpdated(key_id, primary, tuple(replicas), record.current_version, shared)
        await ctx.outbox.append_key(con, takeover, epoch=frame.epoch, dests=replicas)
        log.info("replication.became_primary", key_id=key_id, epoch=frame.epoch, previous=frame.source)
    return APPLIED


async def _key_deleted(con: Conn, frame: Frame, m: KeyDeleted, ctx: ApplyContext) -> Result:
    key_id = m.key_id
    gone = m.region
    if gone != frame.source:
        return _refuse("deletion_not_from_owner", source=frame.source, key_id=key_id, seq=frame.seq)
    record = await key_store.get_key(con, key_id, for_update=True)
    if record is None:
        return _skip("key_not_here", source=frame.source, key_id=key_id, seq=frame.seq)
    config = record.key.multi_region_configuration
    assert config is not None  # mrk- keys always carry one
    primary = config.primary_key.region
    remaining = [r.region for r in config.replica_keys if r.region != gone]
    await repl_store.set_mr_config(con, key_id, primary, remaining, ctx.now)
    key = record.key
    if primary == ctx.region and not remaining and key.key_state is KeyState.PENDING_REPLICA_DELETION:
        key = apply(key, KeyEvent.LAST_REPLICA_DELETED, now=ctx.now)
        await key_store.update_state(con, key, ctx.now)
        log.info("replication.primary_deletion_scheduled", key_id=key_id, deletion_date=str(key.deletion_date))
    log.info("replication.replica_removed", key_id=key_id, region=gone)
    return APPLIED


# --- IAM ----------------------------------------------------------------------------------------


async def _apply_iam(con: Conn, frame: Frame, m: IamChange, ctx: ApplyContext) -> Result:
    match m:
        case IamAccount():
            await repl_store.upsert_account(con, m.account_id, m.root_principal_id)
        case IamPrincipal():
            await repl_store.upsert_principal(con, m.arn, m.account_id, m.kind.value, m.name, m.principal_id)
        case IamAccessKey():
            if m.sealed_secret is None:  # deleted at the home region before it was sent; a delete follows
                return _skip("access_key_gone", access_key_id=m.access_key_id, seq=frame.seq)
            try:
                secret = hpke.open_from_region(
                    ctx.encryption_key, m.sealed_secret, key_id=m.access_key_id,
                    version=ACCESS_KEY_SECRET_VERSION, source_region=frame.source, dest_region=ctx.region,
                )  # fmt: skip
            except hpke.SealedMaterialError:
                raise ApplyError(f"sealed secret of {m.access_key_id} did not open") from None
            wrapped = ctx.keyring.wrap(secret, access_key_aad(m.access_key_id))
            if not await repl_store.upsert_access_key(con, m.access_key_id, m.principal_arn, wrapped, m.status):
                return _skip("principal_not_here", access_key_id=m.access_key_id, seq=frame.seq)
        case IamAccessKeyStatus():
            await repl_store.set_access_key_status(con, m.access_key_id, m.status)
        case IamAccessKeyDeleted():
            await repl_store.delete_access_key(con, m.access_key_id)
        case IamPolicy():
            if not await repl_store.upsert_identity_policy(con, m.principal_arn, m.policy_name, m.document):
                return _skip("principal_not_here", seq=frame.seq)
        case IamPolicyDeleted():
            await repl_store.delete_identity_policy(con, m.principal_arn, m.policy_name)
        case _:
            return _refuse("unknown_iam_op", source=frame.source, seq=frame.seq)
    return APPLIED
