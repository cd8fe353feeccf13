"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, and the
per-process grant cache the authorizer reads on the hot path.

A grant lets one principal (the grantee) perform some operations on one key, optionally only
with an encryption context that satisfies its constraints; grants add allows and need no IAM
permission, even across accounts (``regiond.domain.decision``). They are per key and per
region, stored in migration 0005's ``grants`` table.

Caching: ``GrantCache`` holds each key's grants as an immutable tuple, loaded on first use
(usually in the key cache's query for a cold key, else with one query of its own; or in bulk
by ``regiond.service.preload``) and dropped when the ``regionkms_grants`` NOTIFY names the key (every worker and
node of the region), when this process writes a grant of the key, or after the TTL. Grants
have their own channel rather than the key cache's so that grant churn never makes a process
unwrap key material again.

Grant tokens: CreateGrant returns a token naming the grant (``authz.make_grant_token``). A
call carrying tokens whose cached grants do not allow it has the named grants read from the
database, so a grant is usable with its token the moment CreateGrant returns, on any node,
before the notification has arrived.

Writes lock the key row (``FOR UPDATE``), which serialises CreateGrant with itself (exact
per-key limits, one grant per named retry) and with key state changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NoReturn

import structlog

from regiond.cache import LoadWindow, LoadWindows, TtlCache
from regiond.domain.decision import GrantConstraints, GrantView
from regiond.domain.grants import GrantRecord, NewGrant, constraints_to_json
from regiond.domain.key import Key, KeySpec, KeyUsage, require_state
from regiond.errors import (
    AccessDeniedException,
    DryRunOperationException,
    InvalidArnException,
    InvalidGrantIdException,
    InvalidMarkerException,
    LimitExceededException,
    NoSuchEntity,
    NotFoundException,
    ValidationException,
)
from regiond.service.authz import Authorizer, Requester, access_denied, make_grant_token, parse_grant_token
from regiond.service.keycache import KeyCache
from regiond.service.keys import KeyService, Page
from regiond.store import grants as grant_store
from regiond.store import iam as iam_store
from regiond.store import keys as key_store
from regiond.store.pool import Pool, connection, transaction

log = structlog.get_logger(__name__)

__all__ = [
    "CHANNEL",
    "MAX_GRANTS_PER_GRANTEE",
    "MAX_GRANTS_PER_KEY",
    "CreateGrantRequest",
    "GrantCache",
    "GrantService",
    "NewGrantResult",
]

CHANNEL = grant_store.CHANNEL
MAX_GRANTS_PER_KEY = 50_000
"""AWS quota "Grants per KMS key"."""
MAX_GRANTS_PER_GRANTEE = 500
"""AWS quota "Grants for a given principal per KMS key"."""
DEFAULT_LIST_LIMIT = 50
DRY_RUN_MESSAGE = "The request would have succeeded, but the DryRun option is set."

_GRANT_ID = re.compile(r"[0-9a-f]{64}")
_PRINCIPAL_ARN = re.compile(r"arn:aws:iam::(\d{12}):(?:root|user/[\w+=,.@-]{1,64}|role/[\w+=,.@-]{1,64})")

_ALWAYS_GRANTABLE = frozenset({"CreateGrant", "RetireGrant", "DescribeKey"})
_SYMMETRIC_OPERATIONS = frozenset(
    {
        "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
        "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
    }
)  # fmt: skip
_OPERATIONS_BY_USAGE: Mapping[KeyUsage, frozenset[str]] = {
    # ReEncrypt takes asymmetric encryption keys on both sides (SourceEncryptionAlgorithm), so AWS grants it.
    KeyUsage.ENCRYPT_DECRYPT: frozenset({"Decrypt", "Encrypt", "GetPublicKey", "ReEncryptFrom", "ReEncryptTo"}),
    KeyUsage.SIGN_VERIFY: frozenset({"Sign", "Verify", "GetPublicKey"}),
    KeyUsage.GENERATE_VERIFY_MAC: frozenset({"GenerateMac", "VerifyMac"}),
    KeyUsage.KEY_AGREEMENT: frozenset({"DeriveSharedSecret", "GetPublicKey"}),
    KeyUsage.ENCAPSULATE_DECAPSULATE: frozenset({"Encapsulate", "Decapsulate", "GetPublicKey"}),
}


def grantable_operations(key: Key) -> frozenset[str]:
    """The grant operations that make sense for ``key``'s type (AWS refuses the others)."""
    if key.key_spec is KeySpec.SYMMETRIC_DEFAULT:
        return _SYMMETRIC_OPERATIONS | _ALWAYS_GRANTABLE
    return _OPERATIONS_BY_USAGE.get(key.key_usage, frozenset()) | _ALWAYS_GRANTABLE


@dataclass(frozen=True)
class CreateGrantRequest:
    key_id: str
    operations: tuple[str, ...]
    grantee_principal: str | None = None
    retiring_principal: str | None = None
    constraints: Mapping[str, object] | None = None
    name: str | None = None
    dry_run: bool = False
    grantee_service_principal: str | None = None
    retiring_service_principal: str | None = None


@dataclass(frozen=True, slots=True)
class NewGrantResult:
    grant: GrantRecord
    token: str
    key: Key


class GrantCache:
    """Per-process grants by key id (``authz.GrantSource``); see the module docstring.

    Besides its own one-query load, it is fed by the key cache (``prime``: a cold key's grants
    come in the same query as its row) and by the bulk preload (``fill``), both under the same
    generation rule, so its invalidation semantics are the ones above whoever loaded the entry.
    """

    def __init__(self, pool: Pool, *, ttl_s: float) -> None:
        self._pool = pool
        self._grants: TtlCache[str, tuple[GrantView, ...]] = TtlCache(ttl_s=ttl_s)
        self._windows = LoadWindows()
        self.loads = 0  # database loads of its own since start: a cheap gauge for tests

    def invalidate(self, payload: str | None = None) -> None:
        """Listener callback: ``payload`` is a key id, or ``None`` for "drop everything"."""
        self._grants.invalidate(payload)
        self._windows.note(payload)

    @property
    def generation(self) -> int:
        return self._grants.generation

    def holds(self, key_id: str) -> bool:
        return self._grants.get(key_id) is not None

    def prime(self, key_id: str, grants: tuple[GrantView, ...], *, generation: int) -> None:
        """Store grants read at ``generation`` (by ``KeyCache.get``); skipped if invalidated since."""
        self._grants.put(key_id, grants, generation=generation)

    def load_window(self) -> AbstractContextManager[LoadWindow]:
        """Open before a bulk load's query; pass to ``fill``."""
        return self._windows.open(self._grants.generation)

    def fill(self, key_id: str, grants: tuple[GrantView, ...], window: LoadWindow) -> bool:
        """Store bulk-loaded grants unless cached already or invalidated since ``window`` opened."""
        if not window.admits(key_id, self._grants.generation) or self._grants.get(key_id) is not None:
            return False
        self._grants.put(key_id, grants)
        return True

    async def grants(self, key_id: str) -> tuple[GrantView, ...]:
        hit = self._grants.get(key_id)
        if hit is not None:
            return hit
        generation = self._grants.generation
        self.loads += 1
        async with connection(self._pool) as con:
            records = await grant_store.for_key(con, key_id)
        views = tuple(r.view() for r in records)
        self._grants.put(key_id, views, generation=generation)
        return views

    async def fresh_grants(self, key_id: str, grant_ids: Sequence[str]) -> tuple[GrantView, ...]:
        async with connection(self._pool) as con:
            records = await grant_store.by_ids(con, key_id, grant_ids)
        return tuple(r.view() for r in records)


def _principal_arn(value: str, member: str) -> str:
    if not _PRINCIPAL_ARN.fullmatch(value):
        raise InvalidArnException(f"{member} {value} is not a valid principal ARN")
    return value


def _context_map(raw: object, member: str) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValidationException(f"Constraints.{member} must map strings to strings")
    return dict(raw)


def _constraints(raw: Mapping[str, object] | None) -> GrantConstraints | None:
    if not raw:
        return None
    equals = _context_map(raw.get("EncryptionContextEquals"), "EncryptionContextEquals")
    subset = _context_map(raw.get("EncryptionContextSubset"), "EncryptionContextSubset")
    source_arn = raw.get("SourceArn")
    if source_arn is not None and not isinstance(source_arn, str):
        raise ValidationException("Constraints.SourceArn must be a string")
    if equals is None and subset is None and source_arn is None:
        return None
    return GrantConstraints(encryption_context_equals=equals, encryption_context_subset=subset, source_arn=source_arn)


@dataclass(frozen=True, slots=True)
class _Parties:
    """Who a new grant names: its grantee and retiring principal, each IAM or service."""

    grantee: str | None
    grantee_service: str | None
    retiring: str | None
    retiring_service: str | None


def _parties(request: CreateGrantRequest, constraints: GrantConstraints | None) -> _Parties:
    """The model's rules for the principal members of CreateGrant (botocore's documentation)."""
    grantee, grantee_service = request.grantee_principal, request.grantee_service_principal
    retiring, retiring_service = request.retiring_principal, request.retiring_service_principal
    if (grantee is None) == (grantee_service is None):
        raise ValidationException("Specify either GranteePrincipal or GranteeServicePrincipal, but not both.")
    if retiring is not None and retiring_service is not None:
        raise ValidationException("Specify either RetiringPrincipal or RetiringServicePrincipal, but not both.")
    if grantee_service is not None:
        if constraints is None or constraints.source_arn is None:
            raise ValidationException("A grant with a GranteeServicePrincipal requires a SourceArn grant constraint.")
        if retiring is None and retiring_service is None:
            raise ValidationException(
                "A grant with a GranteeServicePrincipal requires a RetiringPrincipal or a RetiringServicePrincipal."
            )
    return _Parties(
        grantee=_principal_arn(grantee, "GranteePrincipal") if grantee is not None else None,
        grantee_service=grantee_service,
        retiring=_principal_arn(retiring, "RetiringPrincipal") if retiring is not None else None,
        retiring_service=retiring_service,
    )


def _request_digest(
    name: str, parties: _Parties, operations: Sequence[str], constraints: GrantConstraints | None
) -> str:
    """What makes a named CreateGrant a retry of an earlier one (AWS: all parameters equal).

    The service principals join the digested list only when one is named, so the digests of
    grants made before service principals existed are unchanged.
    """
    fields: list[object] = [name, parties.grantee, parties.retiring, sorted(operations),
                            constraints_to_json(constraints)]  # fmt: skip
    if parties.grantee_service is not None or parties.retiring_service is not None:
        fields.append({"GranteeServicePrincipal": parties.grantee_service,
                       "RetiringServicePrincipal": parties.retiring_service})  # fmt: skip
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refuse_service_filter(who: Requester, action: str, resource: str, member: str) -> NoReturn:
    """AWS: the service-principal filters "are only usable by callers in a service principal".

    Every caller of regionkms is an IAM principal (no AWS service calls in), so the filter is
    refused, as AWS refuses it to such a caller, rather than ignored, which would answer with
    grants the caller did not ask for.
    """
    raise AccessDeniedException(
        f"User: {who.principal.arn} is not authorized to perform: {action} with the {member} filter: it is only "
        "usable by callers in a service principal",
        resource=resource if resource != "*" else None,
    )


def _require_grant_id(grant_id: str) -> str:
    if not _GRANT_ID.fullmatch(grant_id):
        raise InvalidGrantIdException(f"Invalid grant ID {grant_id[:128]}")
    return grant_id


def _marker(marker: str | None) -> int:
    if marker is None:
        return 0
    if not marker.isdigit() or len(marker) > 19:
        raise InvalidMarkerException("Invalid marker")
    return int(marker)


def _page(records: list[GrantRecord], size: int) -> Page[GrantRecord]:
    return Page(records[:size], str(records[size - 1].seq) if len(records) > size else None)


class GrantService:
    def __init__(
        self, pool: Pool, keys: KeyService, cache: GrantCache, *, authz: Authorizer, key_cache: KeyCache
    ) -> None:
        self._pool = pool
        self._keys = keys
        self._authz = authz
        self._cache = key_cache
        self.cache = cache

    # --- CreateGrant --------------------------------------------------------------------------

    async def create_grant(self, who: Requester, request: CreateGrantRequest, now: dt.datetime) -> NewGrantResult:
        constraints = _constraints(request.constraints)
        parties = _parties(request, constraints)
        operations = tuple(dict.fromkeys(request.operations))  # AWS keeps one of each, in order
        if not operations:
            raise ValidationException("Operations must contain at least one grant operation")
        if operations == ("CreateGrant",):
            raise ValidationException("Grants must not contain only the CreateGrant operation.")

        entry = await self._keys.resolve(who, request.key_id, allow_alias=False)
        key = entry.key
        invalid = [op for op in operations if op not in grantable_operations(key)]
        if invalid:
            raise ValidationException(
                f"Grant operation {invalid[0]} is not valid for a key with KeySpec {key.key_spec}"
            )
        has_context_constraint = constraints is not None and (
            constraints.encryption_context_equals is not None or constraints.encryption_context_subset is not None
        )
        if has_context_constraint and key.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
            raise ValidationException("Encryption context grant constraints need a symmetric encryption KMS key")
        values = {
            **who.values,
            "kms:GrantOperations": operations,
            "kms:GrantIsForAWSResource": ("false",),
        }
        if parties.grantee is not None:
            values["kms:GranteePrincipal"] = (parties.grantee,)
        if parties.grantee_service is not None:
            values["kms:GranteeServicePrincipal"] = (parties.grantee_service,)
        if parties.retiring is not None:
            values["kms:RetiringPrincipal"] = (parties.retiring,)
        if constraints is not None:
            values["kms:GrantConstraintType"] = tuple(constraints_to_json(constraints) or {})
            if constraints.source_arn is not None:
                values["kms:GrantConstraintSourceArn"] = (constraints.source_arn,)
        await self._authz.authorize(
            who.principal, "kms:CreateGrant", key, request_values=values, grant_tokens=who.grant_tokens,
            new_grant=NewGrant(frozenset(operations), constraints),
        )  # fmt: skip
        if request.dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)

        digest = _request_digest(request.name, parties, operations, constraints) if request.name else None
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            require_state("CreateGrant", record.key)
            for arn, member in ((parties.grantee, "GranteePrincipal"), (parties.retiring, "RetiringPrincipal")):
                if arn is not None:
                    try:
                        await iam_store.get_principal(con, arn)
                    except NoSuchEntity:
                        raise InvalidArnException(f"{member} {arn} does not exist") from None
            existing = await grant_store.find_named(con, key.key_id, digest) if digest else None
            if existing is not None:
                return NewGrantResult(existing, make_grant_token(existing.grant_id), key)
            if await grant_store.count(con, key.key_id) >= MAX_GRANTS_PER_KEY:
                raise LimitExceededException(f"The key {key.arn} has the maximum number of grants")
            grantee_name = parties.grantee or parties.grantee_service
            if (
                await grant_store.count(
                    con, key.key_id, parties.grantee, grantee_service_principal=parties.grantee_service
                )
                >= MAX_GRANTS_PER_GRANTEE
            ):
                raise LimitExceededException(
                    f"The key {key.arn} has the maximum number of grants for the principal {grantee_name}"
                )
            grant = await grant_store.insert(
                con,
                GrantRecord(
                    grant_id=secrets.token_hex(32), key_id=key.key_id, account=key.account, name=request.name,
                    grantee_principal=parties.grantee, retiring_principal=parties.retiring,
                    issuing_principal=who.principal.arn, operations=operations, constraints=constraints,
                    creation_date=now, grantee_service_principal=parties.grantee_service,
                    retiring_service_principal=parties.retiring_service,
                ),
                request_digest=digest,
            )  # fmt: skip
        self.cache.invalidate(key.key_id)
        log.info("grant.created", key_id=key.key_id, grant_id=grant.grant_id, operations=list(operations))
        return NewGrantResult(grant, make_grant_token(grant.grant_id), key)

    # --- ListGrants / ListRetirableGrants -----------------------------------------------------

    async def list_grants(
        self, who: Requester, key_param: str, *, grant_id: str | None, grantee_principal: str | None,
        limit: int | None, marker: str | None, grantee_service_principal: str | None = None,
    ) -> tuple[Key, Page[GrantRecord]]:  # fmt: skip
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        await self._authz.authorize(
            who.principal, "kms:ListGrants", entry.key, request_values=who.values, grant_tokens=who.grant_tokens
        )
        if grantee_service_principal is not None:
            _refuse_service_filter(who, "kms:ListGrants", entry.key.arn, "GranteeServicePrincipal")
        if grant_id is not None:
            _require_grant_id(grant_id)
        after = _marker(marker)
        size = limit or DEFAULT_LIST_LIMIT
        async with connection(self._pool) as con:
            rows = await grant_store.list_for_key(
                con, entry.key.key_id, grant_id=grant_id, grantee_principal=grantee_principal,
                after_seq=after, limit=size + 1,
            )  # fmt: skip
        return entry.key, _page(rows, size)

    async def list_retirable_grants(
        self, who: Requester, retiring_principal: str | None, *, limit: int | None, marker: str | None,
        retiring_service_principal: str | None = None,
    ) -> Page[GrantRecord]:  # fmt: skip
        """Grants, on keys of any account, that a principal *of the caller's account* may retire."""
        if (retiring_principal is None) == (retiring_service_principal is None):
            raise ValidationException("Specify either RetiringPrincipal or RetiringServicePrincipal, but not both.")
        await self._authz.authorize(who.principal, "kms:ListRetirableGrants", None, request_values=who.values)
        if retiring_principal is None:
            _refuse_service_filter(who, "kms:ListRetirableGrants", "*", "RetiringServicePrincipal")
        match = _PRINCIPAL_ARN.fullmatch(retiring_principal)
        if match is None:
            raise InvalidArnException(f"RetiringPrincipal {retiring_principal} is not a valid principal ARN")
        if match.group(1) != who.account:
            raise access_denied(who.principal, "kms:ListRetirableGrants", retiring_principal)
        after = _marker(marker)
        size = limit or DEFAULT_LIST_LIMIT
        async with connection(self._pool) as con:
            rows = await grant_store.list_retirable(con, retiring_principal, after_seq=after, limit=size + 1)
        return _page(rows, size)

    # --- RetireGrant / RevokeGrant ------------------------------------------------------------

    async def retire_grant(
        self, who: Requester, *, grant_token: str | None, key_param: str | None, grant_id: str | None,
        dry_run: bool = False,
    ) -> tuple[Key, GrantRecord]:  # fmt: skip
        """Retire by token, or by key + grant id; permission comes from the grant (AWS)."""
        key: Key | None = None
        if grant_token is not None:
            token_grant = parse_grant_token(grant_token)
            if grant_id is not None and _require_grant_id(grant_id) != token_grant:
                raise ValidationException("GrantId does not match the grant named by GrantToken")
            grant_id = token_grant
        elif key_param is None or grant_id is None:
            raise ValidationException("Specify GrantToken, or both KeyId and GrantId")
        else:
            _require_grant_id(grant_id)
        if key_param is not None:
            key = (await self._keys.resolve(who, key_param, allow_alias=False)).key
        async with connection(self._pool) as con:
            grant = await grant_store.get(con, grant_id)
        if grant is None or (key is not None and grant.key_id != key.key_id):
            raise NotFoundException(f"Grant {grant_id} does not exist")
        if key is None:
            entry = await self._cache.get(grant.key_id)
            if entry is None:
                raise NotFoundException(f"Grant {grant_id} does not exist")
            key = entry.key
        await self._authz.authorize_retire(
            who.principal, key, grantee_principal=grant.grantee_principal,
            retiring_principal=grant.retiring_principal, operations=frozenset(grant.operations),
            request_values=who.values,
        )  # fmt: skip
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        await self._delete(key, grant)
        log.info("grant.retired", key_id=key.key_id, grant_id=grant.grant_id)
        return key, grant

    async def revoke_grant(self, who: Requester, key_param: str, grant_id: str, *, dry_run: bool = False) -> Key:
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        await self._authz.authorize(who.principal, "kms:RevokeGrant", entry.key, request_values=who.values)
        _require_grant_id(grant_id)
        async with connection(self._pool) as con:
            grant = await grant_store.get(con, grant_id)
        if grant is None or grant.key_id != entry.key.key_id:
            raise NotFoundException(f"Grant {grant_id} does not exist")
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        await self._delete(entry.key, grant)
        log.info("grant.revoked", key_id=entry.key.key_id, grant_id=grant_id)
        return entry.key

    async def _delete(self, key: Key, grant: GrantRecord) -> None:
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            if not await grant_store.delete(con, grant.grant_id, key.key_id):
                raise NotFoundException(f"Grant {grant.grant_id} does not exist")
        self.cache.invalidate(key.key_id)
