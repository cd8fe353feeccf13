"""Key lifecycle: CreateKey, DescribeKey, ListKeys, Enable/DisableKey, UpdateKeyDescription,
ScheduleKeyDeletion, CancelKeyDeletion, tags, and resolving a ``KeyId`` parameter to a key.

Every operation follows the same order: resolve the key (from the cache), authorize
(``Authorizer.authorize``, before any write or cryptography), then write inside one
transaction that re-reads the key row ``FOR UPDATE`` and lets ``regiond.domain.key`` decide the
transition, so two concurrent calls serialise on the row and never both pass a state check
that only one of them should. After commit the local cache entry is dropped at once; other
processes learn through the ``regionkms_keys`` NOTIFY.

AWS managed keys (``alias/aws/<service>``) are made on first use by ``resolve``, under an
advisory lock so two racing first uses make one key. Customers cannot change them: their key
policy allows no management action, and ``_require_customer_managed`` refuses again as a
second line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from regiond.cache import remember
from regiond.clock import Clock
from regiond.crypto import import_wrap, keymaterial, wrap
from regiond.crypto.keyring import RootKeyring
from regiond.domain import ids, keyspec, permissions
from regiond.domain.decision import aws_managed_key_policy, default_key_policy
from regiond.domain.key import (
    DEFAULT_PENDING_WINDOW_IN_DAYS,
    Key,
    KeyEvent,
    KeyManager,
    KeySpec,
    KeyState,
    MultiRegionConfiguration,
    MultiRegionKey,
    MultiRegionKeyType,
    Origin,
    apply,
    require_state,
)
from regiond.domain.key_conditions import tag_values
from regiond.domain.policy import PolicyKind, parse_policy_for_write
from regiond.errors import (
    InvalidMarkerException,
    MalformedPolicyDocumentException,
    NotFoundException,
    TagException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.service.authz import Authorizer, Requester, access_denied
from regiond.service.keycache import CachedKey, KeyCache
from regiond.store import aliases as alias_store
from regiond.store import keys as key_store
from regiond.store import locks
from regiond.store import rotation as rotation_store
from regiond.store import tags as tag_store
from regiond.store.pool import Conn, Pool, connection, transaction

log = structlog.get_logger(__name__)

__all__ = [
    "AWS_MANAGED_SERVICES",
    "MAX_TAGS_PER_KEY",
    "CreateKeyRequest",
    "KeyService",
    "Page",
    "validate_tags",
]

MAX_TAGS_PER_KEY = 50
"""AWS: "Tags per KMS key: 50"."""
_TAG_CHARS = frozenset("_.:/=+-@")
AWS_MANAGED_SERVICES = frozenset(
    {
        "acm", "backup", "codeartifact", "codecommit", "connect", "dms", "dynamodb", "ebs", "elasticfilesystem",
        "es", "fsx", "glue", "imagebuilder", "kafka", "kinesis", "kinesisvideo", "lambda", "lightsail", "mq", "rds",
        "redshift", "s3", "secretsmanager", "sns", "sqs", "ssm", "timestream", "workspaces", "xray",
    }
)  # fmt: skip
"""Services whose AWS managed key ``alias/aws/<service>`` is made on first use. AWS makes one only for
a "predefined AWS alias" (DescribeKey); any other ``alias/aws/`` name is NotFoundException. A fixed
set, because the key is made before the call is authorized: with any name allowed, a principal
with no permission at all made a key (material, alias, rotation schedule) per name it tried."""
DEFAULT_LIST_LIMIT = 100
RESOURCE_OWNER_SELF = "SELF"
DEFAULT_TAG_LIST_LIMIT = 50
LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."
REQUEST_ALIAS = "kms:RequestAlias"

_KEY_REFS: dict[str, ids.KeyRef] = {}
"""``KeyId`` parameters already classified (``ids.parse_key_reference`` is a pure function of the
text, costly next to a dict lookup, and ``KeyRef`` is frozen): clients send the same few values
again and again. Bounded
in entries and in the length of what it keeps (a key ARN is ~75 characters): when full it is
emptied. A value that fails to parse raises and is not kept."""
_KEY_REFS_MAX = 4096
_KEY_REF_MAX_CHARS = 320


def _key_reference(value: str) -> ids.KeyRef:
    ref = _KEY_REFS.get(value)
    if ref is None:
        ref = ids.parse_key_reference(value)
        if len(value) <= _KEY_REF_MAX_CHARS:
            remember(_KEY_REFS, value, ref, _KEY_REFS_MAX)
    return ref


@dataclass(frozen=True)
class CreateKeyRequest:
    description: str = ""
    key_usage: str | None = None  # required for every spec but SYMMETRIC_DEFAULT (domain.keyspec)
    key_spec: str | None = None
    customer_master_key_spec: str | None = None
    origin: str = Origin.AWS_KMS.value
    policy: str | None = None
    bypass_policy_lockout_safety_check: bool | None = None  # None: the request did not send it
    tags: tuple[tuple[str, str], ...] = ()
    multi_region: bool = False
    custom_key_store_id: str | None = None
    xks_key_id: str | None = None


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_marker: str | None

    @property
    def truncated(self) -> bool:
        return self.next_marker is not None


def validate_tags(tags: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """AWS's tag rules beyond the model's lengths: the ``aws:`` prefix is reserved, characters
    are letters, digits, white space and ``_ . : / = + - @``, and a key appears once per call."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for key, value in tags:
        if key.lower().startswith("aws:"):
            raise TagException("Tags beginning with aws: are reserved and cannot be used")
        for text, what in ((key, "key"), (value, "value")):
            if not all(ch.isalnum() or ch.isspace() or ch in _TAG_CHARS for ch in text):
                raise TagException(
                    f"Tag {what} contains invalid characters: allowed are letters, digits, white space and _.:/=+-@"
                )
        if key in seen:
            raise TagException(f"Duplicate tag key in the request: {key}")
        seen.add(key)
        out.append((key, value))
    if len(out) > MAX_TAGS_PER_KEY:
        raise TagException(f"A KMS key can have at most {MAX_TAGS_PER_KEY} tags")
    return out


def _current_material_id(key: Key, material_id: str | None) -> str | None:
    """``CurrentKeyMaterialId``: "present for symmetric encryption keys with AWS_KMS or EXTERNAL origin"."""
    return material_id if key.key_spec is KeySpec.SYMMETRIC_DEFAULT else None


def _key_spec(request: CreateKeyRequest) -> KeySpec:
    spec, legacy = request.key_spec, request.customer_master_key_spec
    if spec is not None and legacy is not None:
        raise ValidationException(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. "
            "CustomerMasterKeySpec is deprecated."
        )
    return KeySpec(spec or legacy or KeySpec.SYMMETRIC_DEFAULT.value)


class UsageTracker:
    """Last successful cryptographic use per key (GetKeyLastUsage), kept off the hot path.

    ``record`` is a dict store in memory; a background task calls ``flush`` every few seconds,
    writing all pending uses in one statement. Uses not yet flushed by another node are not
    visible here until that node flushes, so GetKeyLastUsage lags by at most one interval.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # key id -> (operation, when, request id): a plain tuple on every call, the (frozen, so
        # slower to build) ``LastUsage`` only for the few that are read or written
        self._pending: dict[str, tuple[str, dt.datetime, str]] = {}

    def record(self, key_id: str, operation: str, request_id: str) -> None:
        self._pending[key_id] = (operation, self._clock.now(), request_id)

    def pending(self, key_id: str) -> key_store.LastUsage | None:
        use = self._pending.get(key_id)
        return key_store.LastUsage(*use) if use is not None else None

    async def flush(self, pool: Pool) -> int:
        """Write pending uses; returns how many. Uses recorded during the write stay pending."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            async with transaction(pool) as con:
                await key_store.record_usage(con, {key_id: key_store.LastUsage(*use) for key_id, use in batch.items()})
        except Exception:
            for key_id, use in batch.items():
                self._pending.setdefault(key_id, use)
            raise
        return len(batch)


class KeyService:
    def __init__(
        self, pool: Pool, keyring: RootKeyring, cache: KeyCache, authz: Authorizer, *, region: str, clock: Clock,
        usage: UsageTracker | None = None,
    ) -> None:  # fmt: skip
        self._clock = clock
        self.usage = usage or UsageTracker(clock)
        self._pool = pool
        self._keyring = keyring
        self.cache = cache
        self.authz = authz
        self.region = region

    # --- resolving a KeyId parameter ----------------------------------------------------------

    def key_arn(self, account: str, key_id: str) -> str:
        return ids.key_arn(self.region, account, key_id)

    @staticmethod
    def naming(who: Requester, value: str) -> Requester:
        """``who`` with ``kms:RequestAlias`` when the ``KeyId`` parameter ``value`` is an alias (its
        name, whether the request gave the name or the alias ARN); else ``who`` itself.

        AWS ("Use aliases to control access to KMS keys"): kms:RequestAlias "allows or denies access
        to a KMS key based on the alias in a request", for the cryptographic operations, DescribeKey
        and GetPublicKey. Without it, a Deny on the alias a request uses never applied."""
        ref = _key_reference(value)
        if not ref.is_alias:
            return who
        return who._replace(values={**who.values, REQUEST_ALIAS: (ref.alias_name or "",)})

    async def resolve(self, who: Requester, value: str, *, allow_alias: bool = True) -> CachedKey:
        """The key a ``KeyId`` parameter names, from the cache; AWS's NotFound/InvalidArn answers.

        A bare key id or alias name means the caller's account. An ARN may name another account:
        the key is returned and authorization decides (cross-account access by key policy).
        """
        ref = _key_reference(value)
        ref.require_region(self.region)
        account = ref.account or who.account
        if ref.is_alias:
            if not allow_alias:
                ref.require_key()
            assert ref.alias_name is not None
            key_id = await self.cache.alias_target(account, ref.alias_name)
            if key_id is None and ref.alias_name.startswith(ids.AWS_MANAGED_ALIAS_PREFIX) and account == who.account:
                key_id = await self._ensure_aws_managed(account, ref.alias_name)
            if key_id is None:
                arn = ids.alias_arn_text(self.region, account, ref.alias_name)
                raise NotFoundException(f"Alias {arn} is not found.")
        else:
            assert ref.key_id is not None
            key_id = ref.key_id
        entry = await self.cache.get(key_id)
        if entry is None or entry.key.account != account:
            raise NotFoundException(f"Key '{self.key_arn(account, key_id)}' does not exist")
        return entry

    async def _ensure_aws_managed(self, account: str, alias_name: str) -> str | None:
        """Create the AWS managed key behind ``alias/aws/<service>`` on first use, exactly once."""
        service = alias_name[len(ids.AWS_MANAGED_ALIAS_PREFIX) :]
        if service not in AWS_MANAGED_SERVICES:
            return None
        now = self._clock.now()
        async with transaction(self._pool) as con:
            await locks.lock_name(con, f"aws-managed:{account}:{service}")
            existing = await alias_store.resolve(con, account, alias_name)
            if existing is not None:
                return existing
            key = Key(
                key_id=ids.new_key_id(False),
                account=account,
                region=self.region,
                creation_date=now,
                key_state=KeyState.ENABLED,
                description=f"Default key that protects my {service} data when no other key is defined",
                key_manager=KeyManager.AWS,
            )
            policy = aws_managed_key_policy(account, service, self.region)
            await key_store.insert_key(con, key, policy=policy, current_version=1, aws_service=service)
            await self._insert_material(con, key.key_id, now)
            await rotation_store.schedule_aws_managed(con, key.key_id, now)  # yearly, not configurable
            await alias_store.insert(
                con, account, alias_name, key.key_id, now, arn=ids.alias_arn(self.region, account, alias_name)
            )
        log.info("key.aws_managed_created", key_id=key.key_id, service=service)
        return key.key_id

    async def _insert_material(
        self, con: Conn, key_id: str, now: dt.datetime, material: wrap.SecretMaterial | None = None
    ) -> str:
        """Version 1 of a new key, with its KeyMaterialId (the id replication computes too); returns the id."""
        material = material or wrap.new_backing_key()
        ident = import_wrap.key_material_id(key_id, material)
        await rotation_store.insert_material(con, key_id, 1, ident, now)
        await key_store.insert_version(con, key_id, 1, wrap.wrap(self._keyring, key_id, 1, material), now)
        return ident

    # --- CreateKey / DescribeKey / ListKeys ---------------------------------------------------

    async def create_key(self, who: Requester, request: CreateKeyRequest, now: dt.datetime) -> tuple[Key, str | None]:
        """AWS's "Required permissions": kms:CreateKey (IAM policy) and, to use the Tags parameter,
        kms:TagResource (IAM policy); the new key policy must pass the lockout safety check.
        Returns the key and its ``CurrentKeyMaterialId``."""
        spec = _key_spec(request)
        usage = keyspec.key_usage_for(spec, request.key_usage)
        origin = Origin(request.origin)
        key_id = ids.new_key_id(request.multi_region)
        for permission in permissions.create_key(
            region=self.region, account=who.account, new_key_arn=ids.key_arn(self.region, who.account, key_id),
            spec=spec, usage=usage, origin=origin,
            key_type=MultiRegionKeyType.PRIMARY if request.multi_region else None,
            bypass_lockout=request.bypass_policy_lockout_safety_check, tags=bool(request.tags),
        ):  # fmt: skip
            await self.authz.require(who.principal, permission, {**who.values, **tag_values(request.tags)})
        if request.custom_key_store_id is not None or request.xks_key_id is not None:
            raise UnsupportedOperationException("Custom key stores are not supported by regionkms")
        keyspec.require_available(spec)
        if origin not in (Origin.AWS_KMS, Origin.EXTERNAL):
            raise UnsupportedOperationException(f"Origin {origin} is not supported by regionkms")
        tags = validate_tags(request.tags)
        key = Key(
            key_id=key_id,
            account=who.account,
            region=self.region,
            creation_date=now,
            key_state=KeyState.PENDING_IMPORT if origin is Origin.EXTERNAL else KeyState.ENABLED,
            description=request.description,
            key_usage=usage,
            key_spec=spec,
            origin=origin,
            # A new multi-Region key is a primary without replicas (ReplicateKey: service.multiregion).
            multi_region_configuration=MultiRegionConfiguration(
                MultiRegionKeyType.PRIMARY, MultiRegionKey(ids.key_arn(self.region, who.account, key_id), self.region)
            ) if request.multi_region else None,
        )  # fmt: skip
        if request.policy is None:
            policy = default_key_policy(who.account)
        else:
            policy = request.policy
            parsed = parse_policy_for_write(policy, PolicyKind.KEY)
            if not request.bypass_policy_lockout_safety_check and not await self.authz.allows_put_key_policy_later(
                who.principal, parsed, key_arn=key.arn, key_account=who.account, request_values=who.values
            ):
                raise MalformedPolicyDocumentException(LOCKOUT_MESSAGE)
        material: wrap.SecretMaterial | None = None
        material_id: str | None = None
        if origin is Origin.AWS_KMS and spec is not KeySpec.SYMMETRIC_DEFAULT:
            # RSA-4096 takes a second of CPU: not on the event loop.
            material = await asyncio.to_thread(keymaterial.generate, spec)
        async with transaction(self._pool) as con:
            current = None if origin is Origin.EXTERNAL else 1
            await key_store.insert_key(con, key, policy=policy, current_version=current)
            if current is not None:
                material_id = await self._insert_material(con, key.key_id, now, material)
            await tag_store.upsert(con, key.key_id, tags)
        log.info("key.created", key_id=key.key_id, origin=origin.value, key_spec=spec.value)
        return key, _current_material_id(key, material_id)

    async def describe_key(self, who: Requester, value: str) -> tuple[Key, str | None]:
        """The key and its ``CurrentKeyMaterialId`` (symmetric encryption keys with material only, as AWS)."""
        who = self.naming(who, value)  # kms:RequestAlias
        entry = await self.resolve(who, value)
        await self.authz.authorize(
            who.principal, "kms:DescribeKey", entry.key, request_values=who.values, grant_tokens=who.grant_tokens
        )
        return entry.key, _current_material_id(entry.key, entry.current_material_id)

    async def list_keys(
        self, who: Requester, *, limit: int | None, marker: str | None, resource_owners: Sequence[str] | None = None
    ) -> Page[str]:
        """Key ARNs of the caller's account in this region (``Page.items`` are key ids).

        ``ResourceOwners``: SELF lists the account's keys (the default); OTHER_ACCOUNTS_VIA_RAM the keys
        other accounts share through AWS Resource Access Manager, which regionkms does not have, so
        that part of the answer is always empty (an empty, untruncated page when it is asked alone)."""
        await self.authz.authorize(who.principal, "kms:ListKeys", None, request_values=who.values)
        if marker is not None and ids.key_id_kind(marker) is None:
            raise InvalidMarkerException("Invalid marker")
        if resource_owners is not None and RESOURCE_OWNER_SELF not in resource_owners:
            return Page([], None)
        size = limit or DEFAULT_LIST_LIMIT
        async with connection(self._pool) as con:
            rows = await key_store.list_keys(con, who.account, after=marker, limit=size + 1)
        items: list[str] = [key_id for key_id, _region in rows[:size]]
        return Page(items, rows[size - 1][0] if len(rows) > size else None)

    # --- state changes ------------------------------------------------------------------------

    def _require_customer_managed(self, who: Requester, key: Key, action: str) -> None:
        if key.key_manager is KeyManager.AWS:
            raise access_denied(who.principal, action, key.arn)

    async def _transition(
        self, who: Requester, value: str, operation: str, event: KeyEvent, now: dt.datetime,
        pending_window: int | None = None,
    ) -> Key:  # fmt: skip
        entry = await self.resolve(who, value, allow_alias=False)
        action = f"kms:{operation}"
        values = who.values
        if event is KeyEvent.SCHEDULE_DELETION:
            # AWS: a request condition "works even when the parameter doesn't appear in the request,
            # such as when you use the parameter's default value" (conditions-kms); 7-30 is checked by apply
            window = DEFAULT_PENDING_WINDOW_IN_DAYS if pending_window is None else pending_window
            values = {**values, "kms:ScheduleKeyDeletionPendingWindowInDays": (str(window),)}
        await self.authz.authorize(who.principal, action, entry.key, request_values=values)
        self._require_customer_managed(who, entry.key, action)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, entry.key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
            updated = apply(record.key, event, now=now, pending_window=pending_window)
            if updated != record.key:
                await key_store.update_state(con, updated, now)
        self.cache.invalidate(entry.key.key_id)
        log.info("key.state_changed", key_id=updated.key_id, operation=operation, state=updated.key_state.value)
        return updated

    async def enable_key(self, who: Requester, value: str, now: dt.datetime) -> Key:
        return await self._transition(who, value, "EnableKey", KeyEvent.ENABLE, now)

    async def disable_key(self, who: Requester, value: str, now: dt.datetime) -> Key:
        return await self._transition(who, value, "DisableKey", KeyEvent.DISABLE, now)

    async def schedule_key_deletion(
        self, who: Requester, value: str, pending_window: int | None, now: dt.datetime
    ) -> Key:
        return await self._transition(
            who, value, "ScheduleKeyDeletion", KeyEvent.SCHEDULE_DELETION, now, pending_window
        )

    async def cancel_key_deletion(self, who: Requester, value: str, now: dt.datetime) -> Key:
        return await self._transition(who, value, "CancelKeyDeletion", KeyEvent.CANCEL_DELETION, now)

    async def update_key_description(self, who: Requester, value: str, description: str, now: dt.datetime) -> Key:
        entry = await self.resolve(who, value, allow_alias=False)
        await self.authz.authorize(who.principal, "kms:UpdateKeyDescription", entry.key, request_values=who.values)
        self._require_customer_managed(who, entry.key, "kms:UpdateKeyDescription")
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, entry.key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
            require_state("UpdateKeyDescription", record.key)
            await key_store.update_description(con, record.key.key_id, description, now)
        self.cache.invalidate(entry.key.key_id)
        return record.key

    # --- tags ---------------------------------------------------------------------------------

    async def tag_resource(self, who: Requester, value: str, tags: Sequence[tuple[str, str]]) -> Key:
        entry = await self.resolve(who, value, allow_alias=False)
        values = {**who.values, **tag_values(tags)}  # aws:RequestTag/<k>, aws:TagKeys
        await self.authz.authorize(who.principal, "kms:TagResource", entry.key, request_values=values)
        self._require_customer_managed(who, entry.key, "kms:TagResource")
        valid = validate_tags(tags)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, entry.key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
            require_state("TagResource", record.key)
            await tag_store.upsert(con, record.key.key_id, valid)
            if await tag_store.count(con, record.key.key_id) > MAX_TAGS_PER_KEY:
                raise TagException(f"A KMS key can have at most {MAX_TAGS_PER_KEY} tags")  # rolls back
        return record.key

    async def untag_resource(self, who: Requester, value: str, tag_keys: Sequence[str]) -> Key:
        entry = await self.resolve(who, value, allow_alias=False)
        values = {**who.values, **tag_values(tag_keys=tag_keys)}  # aws:TagKeys
        await self.authz.authorize(who.principal, "kms:UntagResource", entry.key, request_values=values)
        self._require_customer_managed(who, entry.key, "kms:UntagResource")
        for tag_key in tag_keys:
            if tag_key.lower().startswith("aws:"):
                raise TagException("Tags beginning with aws: are reserved and cannot be removed")
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, entry.key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
            require_state("UntagResource", record.key)
            await tag_store.delete(con, record.key.key_id, list(tag_keys))
        return record.key

    async def list_resource_tags(
        self, who: Requester, value: str, *, limit: int | None, marker: str | None
    ) -> tuple[Key, Page[tuple[str, str]]]:
        entry = await self.resolve(who, value, allow_alias=False)
        await self.authz.authorize(who.principal, "kms:ListResourceTags", entry.key, request_values=who.values)
        size = limit or DEFAULT_TAG_LIST_LIMIT
        async with connection(self._pool) as con:
            rows = await tag_store.list_for_key(con, entry.key.key_id, after=marker, limit=size + 1)
        return entry.key, Page(rows[:size], rows[size - 1][0] if len(rows) > size else None)

    # --- GetKeyLastUsage ----------------------------------------------------------------------

    async def get_key_last_usage(self, who: Requester, value: str) -> tuple[Key, key_store.LastUsage | None]:
        entry = await self.resolve(who, value, allow_alias=False)
        await self.authz.authorize(who.principal, "kms:GetKeyLastUsage", entry.key, request_values=who.values)
        async with connection(self._pool) as con:
            stored = await key_store.last_usage(con, entry.key.key_id)
        local = self.usage.pending(entry.key.key_id)
        candidates = [u for u in (stored, local) if u is not None]
        return entry.key, max(candidates, key=lambda u: u.used_at) if candidates else None
