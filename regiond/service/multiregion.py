"""Multi-region keys: ReplicateKey and UpdatePrimaryRegion (CreateKey MultiRegion=true is in keys.py).

A multi-region key is one key id held in several regions, each region's copy in its own
database. Shared properties (key id, spec, usage, origin, backing versions, rotation) follow
the primary; key policy, grants, aliases, tags, description and enabled state stay per region
(DESIGN section 8). Both operations here run in the primary region and only *queue* their
effect for the other regions in the replication outbox, in the same transaction that changes
the primary's row, so the change and its propagation commit together:

- ``ReplicateKey`` adds the region to the primary's ReplicaKeys and queues ``KEY_CREATED`` for
  it (metadata, the replica's own policy/description/tags, and every backing version, which
  the sender seals to that region) and a membership update for the other replicas. The answer
  shows the replica in state ``Creating``; it becomes Enabled (PendingImport for imported
  material, which never crosses regions) when the replica region applies the frame.
- ``UpdatePrimaryRegion`` bumps the key's primary epoch, makes this region a replica in state
  ``Updating`` and queues ``PRIMARY_MOVED`` for every member. The new primary, on applying it,
  re-sends the complete shared state at the new epoch, which ends this region's Updating state;
  frames this region queued under the old epoch are refused from then on (``replication.apply``).

Before either changes anything, every permission AWS requires for it (``regiond.domain.permissions``)
is decided: ReplicateKey's kms:ReplicateKey here and its kms:CreateKey / kms:TagResource in IAM
for the replica Region; UpdatePrimaryRegion's kms:UpdatePrimaryRegion here and, by asking the
replica's region (``PeerAuthorizer``), on the replica there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from regiond.domain import ids, permissions
from regiond.domain.decision import default_key_policy
from regiond.domain.key import (
    Key,
    KeyEvent,
    KeyState,
    MultiRegionConfiguration,
    MultiRegionKey,
    MultiRegionKeyType,
    Origin,
    apply,
    require_state,
)
from regiond.domain.key_conditions import tag_values
from regiond.domain.permissions import DecidedBy, Permission
from regiond.domain.policy import PolicyKind, parse_policy_for_write
from regiond.errors import (
    AlreadyExistsException,
    KMSInternalException,
    MalformedPolicyDocumentException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.service.authz import Authorizer, Requester, access_denied, in_region
from regiond.service.keycache import KeyCache
from regiond.service.keys import LOCKOUT_MESSAGE, KeyService, validate_tags
from regiond.service.peer_authz import PeerAuthorizer
from regiond.store import keys as key_store
from regiond.store import replication as repl_store
from regiond.store.outbox import Outbox, shared_snapshot
from regiond.store.pool import Pool, transaction
from replication.messages import KeyCreated, KeyUpdated, PrimaryMoved, ReplicaProperties

log = structlog.get_logger(__name__)

__all__ = ["MultiRegionService", "Replicated", "require_primary"]


def _not_primary(key: Key) -> UnsupportedOperationException:
    return UnsupportedOperationException(f"{key.arn} is not a multi-Region primary key.")


def require_primary(key: Key) -> None:
    """Refuse primary-only operations (ReplicateKey, UpdatePrimaryRegion, rotation settings) on a
    single-region key or a replica, as AWS does."""
    config = key.multi_region_configuration
    if config is None or config.key_type is not MultiRegionKeyType.PRIMARY:
        raise _not_primary(key)


def configuration(
    account: str, key_id: str, here: str, primary: str, replicas: Sequence[str]
) -> MultiRegionConfiguration:
    """How DescribeKey shows the key set in region ``here``."""
    others = sorted({r for r in replicas if r != primary})
    return MultiRegionConfiguration(
        key_type=MultiRegionKeyType.PRIMARY if here == primary else MultiRegionKeyType.REPLICA,
        primary_key=MultiRegionKey(ids.key_arn(primary, account, key_id), primary),
        replica_keys=tuple(MultiRegionKey(ids.key_arn(r, account, key_id), r) for r in others),
    )


@dataclass(frozen=True)
class Replicated:
    """ReplicateKey's answer: the replica as it starts (Creating), its policy and tags."""

    replica: Key
    policy: str
    tags: list[tuple[str, str]]


class MultiRegionService:
    def __init__(
        self, pool: Pool, keys: KeyService, outbox: Outbox, *, authz: Authorizer, cache: KeyCache,
        peers: PeerAuthorizer | None = None,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._keys = keys
        self._authz = authz
        self._cache = cache
        self._outbox = outbox
        self.peers = peers  # None: this node has no peers (it does not replicate)

    @property
    def region(self) -> str:
        return self._keys.region

    async def replicate_key(
        self, who: Requester, key_param: str, replica_region: str, *, policy: str | None,
        bypass_policy_lockout_safety_check: bool | None, description: str, tags: Sequence[tuple[str, str]],
        now: dt.datetime,
    ) -> Replicated:  # fmt: skip
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        key = entry.key
        bypass = bool(bypass_policy_lockout_safety_check)
        tagged = who._replace(values={**who.values, **tag_values(tags)})  # aws:RequestTag/<k>, aws:TagKeys
        # kms:ReplicateKey here; kms:CreateKey (and kms:TagResource) in IAM, in the replica Region
        await self._require(
            tagged,
            key,
            permissions.replicate_key(
                key, replica_region, tags=bool(tags), bypass_lockout=bypass_policy_lockout_safety_check
            ),
        )
        require_primary(key)
        require_state("ReplicateKey", key)
        if replica_region == self.region:
            raise ValidationException(
                f"ReplicaRegion {replica_region} is the Region of the primary key; a replica must be in another Region"
            )
        if not self._outbox.knows(replica_region):
            raise UnsupportedOperationException(
                f"Region {replica_region} is not part of this regionkms cluster (see the peers file)"
            )
        valid_tags = validate_tags(tags)
        replica_arn = ids.key_arn(replica_region, key.account, key.key_id)
        if policy is None:
            policy = default_key_policy(key.account)
        else:
            parsed = parse_policy_for_write(policy, PolicyKind.KEY)
            if not bypass and not await self._authz.allows_put_key_policy_later(
                who.principal, parsed, key_arn=replica_arn, key_account=key.account,
                request_values=in_region(who.values, replica_region),
            ):  # fmt: skip
                raise MalformedPolicyDocumentException(LOCKOUT_MESSAGE)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            key = record.key
            require_primary(key)
            require_state("ReplicateKey", key)
            config = key.multi_region_configuration
            assert config is not None
            existing = [r.region for r in config.replica_keys]
            if replica_region in existing:
                raise AlreadyExistsException(f"Key '{replica_arn}' already exists")
            replicas = sorted([*existing, replica_region])
            await repl_store.set_mr_config(con, key.key_id, self.region, replicas, now)
            epoch = await repl_store.epoch(con, key.key_id)
            # every backing version (imported material never crosses regions) and the rotation schedule
            shared = await shared_snapshot(con, key.key_id, versions=None if key.origin is Origin.AWS_KMS else [])
            created = KeyCreated(
                key.key_id, key.account, self.region, tuple(replicas), key.key_spec, key.key_usage, key.origin,
                key.creation_date, record.current_version, shared,
                ReplicaProperties(description, policy, tuple(valid_tags)),
            )  # fmt: skip
            await self._outbox.append_key(con, created, epoch=epoch, dests=[replica_region])
            updated = KeyUpdated(key.key_id, self.region, tuple(replicas), record.current_version, shared)
            await self._outbox.append_key(con, updated, epoch=epoch, dests=existing)
        self._cache.invalidate(key.key_id)
        log.info("key.replicated", key_id=key.key_id, replica_region=replica_region)
        replica = dataclasses.replace(
            key,
            region=replica_region,
            key_state=KeyState.CREATING,
            description=description,
            deletion_date=None,
            pending_deletion_window_in_days=None,
            multi_region_configuration=configuration(key.account, key.key_id, replica_region, self.region, replicas),
        )
        return Replicated(replica, policy, valid_tags)

    async def _require(self, who: Requester, key: Key, needed: Sequence[Permission]) -> None:
        """Carry out declared permissions (``regiond.domain.permissions``): IAM ones and this region's
        key here (IAM is replicated everywhere); another region's key by asking that region, whose
        key policy and grants exist only there. No authentic answer from it refuses the call."""
        for permission in needed:
            if permission.decided_by is DecidedBy.IAM or permission.region == self.region:
                local_key = key if permission.decided_by is DecidedBy.KEY else None
                await self._authz.require(who.principal, permission, who.values, key=local_key)
                continue
            if self.peers is None:
                raise KMSInternalException(
                    f"Region {permission.region} cannot be asked to authorize this call from this node"
                )
            try:
                allowed = await self.peers.authorize_remote(
                    permission.region, principal_arn=who.principal.arn, action=permission.action,
                    key_id=key.key_id, values={**in_region(who.values, permission.region), **permission.values},
                )  # fmt: skip
            except Exception as exc:  # no authentic answer: refuse, and say which region could not decide
                log.warning("key.peer_authorization_failed", key_id=key.key_id, region=permission.region,
                            error=str(exc)[:300])  # fmt: skip
                raise KMSInternalException(
                    f"Region {permission.region} could not be reached to authorize {permission.action} "
                    f"on {permission.resource}"
                ) from None
            if not allowed:
                raise access_denied(who.principal, permission.action, permission.resource)

    async def update_primary_region(self, who: Requester, key_param: str, primary_region: str, now: dt.datetime) -> Key:
        """AWS's "Required permissions": kms:UpdatePrimaryRegion on the current primary key (in the
        primary key's Region) *and* on the current replica key (in the replica key's Region, its key
        policy). The replica's policy and grants exist only in its region, which is asked
        (``PeerAuthorizer``) before anything changes; no authentic "allowed" means no change.
        ``kms:PrimaryRegion`` is the requested new primary Region on both sides."""
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        key = entry.key
        needed = permissions.update_primary_region(key, primary_region)
        await self._require(who, key, [p for p in needed if p.region == self.region])
        require_primary(key)
        if primary_region == self.region:
            return key  # already the primary: nothing to move
        config = key.multi_region_configuration
        assert config is not None
        if primary_region not in {r.region for r in config.replica_keys}:
            raise NotFoundException(f"Key '{ids.key_arn(primary_region, key.account, key.key_id)}' does not exist")
        await self._require(who, key, [p for p in needed if p.region != self.region])
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            key = record.key
            require_primary(key)
            config = key.multi_region_configuration
            assert config is not None
            replicas = [r.region for r in config.replica_keys]
            if primary_region not in replicas:
                raise NotFoundException(f"Key '{ids.key_arn(primary_region, key.account, key.key_id)}' does not exist")
            require_state("UpdatePrimaryRegion", key)
            epoch = await repl_store.epoch(con, key.key_id) + 1
            new_replicas = sorted({*replicas, self.region} - {primary_region})
            await repl_store.set_mr_config(con, key.key_id, primary_region, new_replicas, now)
            await repl_store.set_epoch(con, key.key_id, epoch)
            updating = apply(key, KeyEvent.PRIMARY_UPDATE_START)
            await key_store.update_state(con, updating, now)
            moved = PrimaryMoved(key.key_id, primary_region, tuple(new_replicas), self.region)
            await self._outbox.append_key(con, moved, epoch=epoch, dests=replicas)
        self._cache.invalidate(key.key_id)
        log.info("key.primary_moving", key_id=key.key_id, new_primary=primary_region, epoch=epoch)
        config = configuration(key.account, key.key_id, self.region, primary_region, new_replicas)
        return dataclasses.replace(updating, multi_region_configuration=config)
