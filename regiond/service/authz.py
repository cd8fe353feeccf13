"""Authorization of every KMS operation: one function, called before any cryptography or write.

``Authorizer.authorize(principal, "kms:Encrypt", key, ...)`` combines, with the pure
``regiond.domain.decision.decide``:

- the key policy (parsed once and cached with the key in ``KeyCache``, so the hot path reads
  no policy from the database);
- the caller's identity policies (``IamAuthorizer.identity_policies``: cached, dropped on any
  IAM change through LISTEN/NOTIFY);
- the key's grants (``GrantSource``: cached per key, dropped on any grant change through
  LISTEN/NOTIFY), plus grants named by the request's grant tokens, read fresh from the
  database when the cached grants do not already allow the call: that is what lets a token
  work before the grant has reached this process's cache.

Operations that have no key yet (CreateKey, ListKeys, ListAliases, GenerateRandom,
ListRetirableGrants) are authorized by identity policies alone, against resource ``*``, as in
AWS. A principal of another account reaching a key by ARN is allowed only for the operations
AWS allows across accounts (``CROSS_ACCOUNT_ACTIONS``), and only if the key policy *and* its own
account's IAM allow it (or a grant does).

Decisions are cached per (principal, action, key account) *and per policy versions*: a cached
entry remembers the very key policy, identity policy tuple and grant tuple it was computed from,
and is used only while those are still the objects the caches hand out. Any policy, grant or
IAM change makes its cache drop and reload the input (NOTIFY reaches every worker and node of
the region), so the next call sees a new object and recomputes: no decision can outlive the
inputs it was made from, and no separate invalidation path can be forgotten. Within one entry,
decisions are keyed by the request values the policies actually read (their condition keys,
and the encryption context when a condition or a grant constraint looks at it), and by how the
policies' ``Resource`` lists match the key's ARN.

An entry is not per key: keys whose policy text is the same share one parsed policy
(``KeyCache``), keys without grants share the empty grant tuple, and the evaluation reads a key
only through its account, its ARN and its condition values (``kms:KeySpec`` and the others of
``key_conditions.KEY_CONDITION_KEYS``); the ARN only through the statements' ``Resource`` /
``NotResource`` lists (``policy.resource_lists``). So two keys of one account are told apart by
exactly those inputs: which of the lists match each key's ARN (nothing to compute when every
list is ``"*"``), and the key's condition values when a condition reads one. Keys that agree on
all of them get the decision a fresh evaluation would give either of them; 100,000 keys with the
default policy and no grants cost one evaluation per (principal, action), not one per key, and
the first request on a key right after a restart is decided from memory like any other.

A refusal is ``AccessDeniedException`` in AWS's wording, naming principal, action and key and
nothing of the policy: the message is the same whatever denied the call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, Protocol

from regiond.cache import TtlCache, remember
from regiond.domain.decision import Decision, DecisionReason, GrantView, decide, lockout_check
from regiond.domain.grants import CONSTRAINT_FREE_ACTIONS, NewGrant, applicable_grants
from regiond.domain.key import Key
from regiond.domain.key_conditions import KEY_CONDITION_KEYS, key_values
from regiond.domain.permissions import DecidedBy, Permission, keyless_resource
from regiond.domain.policy import Policy, RequestContext, ResourceList, resource_lists
from regiond.domain.principal import Principal
from regiond.errors import AccessDeniedException, InvalidGrantTokenException
from regiond.service.iam_authz import IamAuthorizer

__all__ = [
    "CROSS_ACCOUNT_ACTIONS",
    "Authorizer",
    "GrantSource",
    "KeyPolicySource",
    "Requester",
    "access_denied",
    "evaluate",
    "in_region",
    "make_grant_token",
    "parse_grant_token",
]

RequestValues = Mapping[str, tuple[str, ...]]

REQUESTED_REGION = "aws:requestedregion"

CROSS_ACCOUNT_ACTIONS = frozenset(
    "kms:" + op.lower()
    for op in (
        "CreateGrant", "Decrypt", "DescribeKey", "DeriveSharedSecret", "Encrypt", "GenerateDataKey",
        "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext",
        "GenerateMac", "GetKeyRotationStatus", "GetPublicKey", "ListGrants", "ReEncryptFrom", "ReEncryptTo",
        "RetireGrant", "RevokeGrant", "Sign", "Verify", "VerifyMac",
    )
)  # fmt: skip
"""AWS KMS's "Cross-account use: Yes" operations; any other action on another account's key is denied."""

_MAX_FINGERPRINTS = 1024
"""Distinct (resource match, request values) combinations remembered per entry (principal, action,
key account, policies, grants); when full it is emptied."""


_NO_VALUES: RequestValues = MappingProxyType({})


class Requester(NamedTuple):
    """Who asks, the request's global condition values (``aws:SourceIp``, ``aws:CurrentTime``) and
    the grant tokens it carries (the ``GrantTokens`` parameter).

    A named tuple rather than a frozen dataclass: every request builds one, at half the cost."""

    principal: Principal
    values: RequestValues = _NO_VALUES
    request_id: str = ""
    grant_tokens: tuple[str, ...] = ()

    @property
    def account(self) -> str:
        return self.principal.account_id


class KeyPolicySource(Protocol):
    async def key_policy(self, key: Key) -> Policy:
        """The parsed key policy of ``key`` (served from the key cache)."""


class GrantSource(Protocol):
    async def grants(self, key_id: str) -> tuple[GrantView, ...]:
        """The grants of ``key_id`` (served from a cache; the same tuple until they change)."""

    async def fresh_grants(self, key_id: str, grant_ids: Sequence[str]) -> tuple[GrantView, ...]:
        """The grants of ``key_id`` among ``grant_ids``, read from the database (grant tokens)."""

    def invalidate(self, payload: str | None = None) -> None:
        """Drop the cached grants of one key id (or of every key for ``None``)."""


class _NoGrants:
    """A ``GrantSource`` without grants, for authorizers built without a grant store."""

    async def grants(self, key_id: str) -> tuple[GrantView, ...]:
        return ()

    async def fresh_grants(self, key_id: str, grant_ids: Sequence[str]) -> tuple[GrantView, ...]:
        return ()

    def invalidate(self, payload: str | None = None) -> None:
        return None


# --- grant tokens -------------------------------------------------------------------------------

_TOKEN_VERSION = 1
_TOKEN_NONCE_BYTES = 16
_TOKEN_CHECK_BYTES = 8
_GRANT_ID = re.compile(r"[0-9a-f]{64}")


def make_grant_token(grant_id: str) -> str:
    """A new token for ``grant_id``; every CreateGrant call gets a different one.

    Layout (base64url, no padding): ``1 byte version | 32 bytes grant id | 16 random bytes |
    8 bytes SHA-256 check``. AWS calls grant tokens "nonsecret": a token only names a grant,
    which still applies to its grantee alone, and the grant is read from the database before
    a token is honoured, so a forged or stale token grants nothing. The check catches typos.
    """
    if not _GRANT_ID.fullmatch(grant_id):
        raise ValueError("grant id must be 64 lower-case hex digits")
    body = bytes([_TOKEN_VERSION]) + bytes.fromhex(grant_id) + os.urandom(_TOKEN_NONCE_BYTES)
    check = hashlib.sha256(body).digest()[:_TOKEN_CHECK_BYTES]
    return base64.urlsafe_b64encode(body + check).rstrip(b"=").decode("ascii")


def parse_grant_token(token: str) -> str:
    """The grant id a token names, or ``InvalidGrantTokenException``."""
    size = 1 + 32 + _TOKEN_NONCE_BYTES + _TOKEN_CHECK_BYTES
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    body, check = raw[:-_TOKEN_CHECK_BYTES], raw[-_TOKEN_CHECK_BYTES:]
    if len(raw) != size or raw[0] != _TOKEN_VERSION or hashlib.sha256(body).digest()[:_TOKEN_CHECK_BYTES] != check:
        raise InvalidGrantTokenException("The grant token is not valid")
    return raw[1:33].hex()


def in_region(values: RequestValues, region: str) -> dict[str, tuple[str, ...]]:
    """``values`` as a permission "in an IAM policy in" ``region`` sees them (``aws:RequestedRegion``).

    IAM policies apply in every Region unless a condition such as ``aws:RequestedRegion`` limits
    them; an operation that needs a permission in another Region (ReplicateKey's ``kms:CreateKey``
    in the replica Region) evaluates it with that Region as the requested one."""
    return {**{k: v for k, v in values.items() if k.lower() != REQUESTED_REGION}, REQUESTED_REGION: (region,)}


def access_denied(principal: Principal, action: str, resource: str) -> AccessDeniedException:
    """AWS's refusal. The wording is the same for every cause, so it tells a prober nothing."""
    return AccessDeniedException(
        f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action",
        resource=resource if resource != "*" else None,
    )


def evaluate(
    *,
    principal: Principal,
    key: Key,
    key_policy: Policy,
    identity: Sequence[Policy],
    grants: Sequence[GrantView],
    ctx: RequestContext,
    new_grant: NewGrant | None = None,
) -> Decision:
    """The whole decision for one request on one key; pure (the simulator calls it too)."""
    if principal.account_id != key.account and ctx.action_key not in CROSS_ACCOUNT_ACTIONS:
        return Decision(False, DecisionReason.KEY_POLICY_DOES_NOT_ALLOW)
    return decide(
        key_policy=key_policy,
        key_account=key.account,
        identity_policies=identity,
        grants=applicable_grants(grants, principal.arn, ctx.action_key, new_grant),
        ctx=ctx,
    )


def _condition_keys(policies: Sequence[Policy]) -> frozenset[str]:
    return frozenset(c.key for p in policies for s in p.statements for c in s.conditions)


@dataclass(slots=True)
class _Memo:
    """Decisions for one (principal, action, key account, policies, grants), valid while its inputs
    are current; per key only as far as the key's ARN and condition values matter (module docstring)."""

    key_policy: Policy
    identity: tuple[Policy, ...]
    grants: tuple[GrantView, ...]
    value_keys: tuple[str, ...]  # lower-cased condition keys other than the encryption context's
    reads_context: bool
    reads_key: bool  # some of value_keys describe the key (kms:KeySpec, kms:MultiRegionKeyType, ...)
    resources: tuple[ResourceList, ...]  # the Resource lists other than "*": each key's ARN against them
    decisions: dict[Hashable, Decision] = field(default_factory=dict)

    def current(self, key_policy: Policy, identity: tuple[Policy, ...], grants: tuple[GrantView, ...]) -> bool:
        return self.key_policy is key_policy and self.identity is identity and self.grants is grants


def _memo(
    key_policy: Policy, identity: tuple[Policy, ...], grants: tuple[GrantView, ...], principal_arn: str, action_key: str
) -> _Memo:
    keys = _condition_keys((key_policy, *identity))
    context_keys = {k for k in keys if k.startswith("kms:encryptioncontext")}
    constrained = action_key not in CONSTRAINT_FREE_ACTIONS and any(
        g.constraints is not None and g.grantee_principal == principal_arn for g in grants
    )
    value_keys = tuple(sorted(keys - context_keys))
    return _Memo(
        key_policy, identity, grants, value_keys, bool(context_keys) or constrained,
        not KEY_CONDITION_KEYS.isdisjoint(value_keys), resource_lists((key_policy, *identity)),
    )  # fmt: skip


class Authorizer:
    def __init__(
        self,
        iam_authz: IamAuthorizer,
        policies: KeyPolicySource,
        grants: GrantSource | None = None,
        *,
        ttl_s: float = 30.0,
        region: str | None = None,
    ) -> None:
        self.region = region  # the node's: operations without a key are decided on arn:aws:kms:<region>:<account>:*
        self._iam = iam_authz
        self._policies = policies
        self.grants: GrantSource = grants or _NoGrants()
        self._memos: TtlCache[tuple[str, str, str, int, int, int], _Memo] = TtlCache(ttl_s=ttl_s)
        self.evaluations = 0  # decisions computed (not served from the cache): a gauge for tests

    async def authorize(
        self,
        principal: Principal,
        action: str,
        key: Key | None,
        *,
        encryption_context: Mapping[str, str] | None = None,
        request_values: RequestValues | None = None,
        grant_tokens: Sequence[str] = (),
        new_grant: NewGrant | None = None,
        key_policy: Policy | None = None,
    ) -> Decision | None:
        """Return if ``principal`` may perform ``action`` on ``key``; else raise ``AccessDeniedException``.

        The returned decision says why (``None`` for an operation without a key, which IAM alone
        decides). A malformed grant token is ``InvalidGrantTokenException``. ``key_policy`` is
        ``key``'s parsed policy when the caller already holds its key cache entry (the hot path),
        which saves a second cache lookup; otherwise it comes from the policy source.
        """
        token_grant_ids = [parse_grant_token(t) for t in grant_tokens]
        identity = await self._iam.identity_policies(principal)
        if key is None:
            resource = "*" if self.region is None else keyless_resource(self.region, principal.account_id)
            self._authorize_identity(principal, action, resource, identity, encryption_context, request_values)
            return None
        if key_policy is None:
            key_policy = await self._policies.key_policy(key)
        grants = await self.grants.grants(key.key_id)
        context = encryption_context or {}
        values = request_values or {}
        if new_grant is None:
            decision = self._cached_decision(principal, key, action, key_policy, identity, grants, context, values)
        else:  # CreateGrant: the decision depends on the requested grant; not worth caching
            decision = self._evaluate(principal, key, action, key_policy, identity, grants, context, values, new_grant)
        if not decision.allowed and decision.reason is not DecisionReason.EXPLICIT_DENY and token_grant_ids:
            known = {g.grant_id for g in grants}
            missing = [g for g in token_grant_ids if g not in known]
            fresh = await self.grants.fresh_grants(key.key_id, missing) if missing else ()
            if fresh:
                self.grants.invalidate(key.key_id)  # our cache is behind: reload on the next call
                decision = self._evaluate(
                    principal, key, action, key_policy, identity, (*grants, *fresh), context, values, new_grant
                )
        if not decision.allowed:
            raise access_denied(principal, action, key.arn)
        return decision

    def _evaluate(
        self, principal: Principal, key: Key, action: str, key_policy: Policy, identity: Sequence[Policy],
        grants: Sequence[GrantView], context: Mapping[str, str], values: RequestValues, new_grant: NewGrant | None,
    ) -> Decision:  # fmt: skip
        self.evaluations += 1
        ctx = RequestContext(
            principal_arn=principal.arn,
            principal_account=principal.account_id,
            action=action,
            resource_arn=key.arn,
            values={**values, **key_values(key)},
            encryption_context=context,
        )
        return evaluate(
            principal=principal, key=key, key_policy=key_policy, identity=identity, grants=grants, ctx=ctx,
            new_grant=new_grant,
        )  # fmt: skip

    def _cached_decision(
        self, principal: Principal, key: Key, action: str, key_policy: Policy, identity: tuple[Policy, ...],
        grants: tuple[GrantView, ...], context: Mapping[str, str], values: RequestValues,
    ) -> Decision:  # fmt: skip
        action_key = action.lower()
        if not grants:
            grants = ()  # every key without grants shares one entry (an empty tuple is one object)
        # The ids stand for the objects, which the entry holds (so no other object can have one of
        # those ids while it lives) and ``current`` checks by identity.
        slot = (principal.arn, action_key, key.account, id(key_policy), id(identity), id(grants))
        memo = self._memos.get(slot)
        if memo is None or not memo.current(key_policy, identity, grants):
            memo = _memo(key_policy, identity, grants, principal.arn, action_key)
            self._memos.put(slot, memo)
        fingerprint: Hashable = ()
        if memo.value_keys:
            lowered = {k.lower(): tuple(v) for k, v in values.items()}
            if memo.reads_key:  # the key's own values: a primary move changes kms:MultiRegionKeyType
                lowered.update(key_values(key))
            fingerprint = tuple(lowered.get(k) for k in memo.value_keys)
        if memo.reads_context:
            fingerprint = (fingerprint, tuple(sorted(context.items())))
        if memo.resources:  # which Resource lists the key's ARN is in: all the evaluation reads of it
            arn = key.arn
            fingerprint = (fingerprint, tuple([r.match(arn) for r in memo.resources]))
        decision = memo.decisions.get(fingerprint)
        if decision is None:
            decision = self._evaluate(principal, key, action, key_policy, identity, grants, context, values, None)
            remember(memo.decisions, fingerprint, decision, _MAX_FINGERPRINTS)
        return decision

    async def require(
        self, principal: Principal, permission: Permission, request_values: RequestValues, *, key: Key | None = None
    ) -> None:
        """Decide one declared permission (``regiond.domain.permissions``) here; else ``AccessDeniedException``.

        ``DecidedBy.IAM``: the caller's identity policies alone, on ``permission.resource`` (an
        explicit Deny refuses; an Allow is needed, except for the account root, whom IAM allows
        everything in its account). ``DecidedBy.KEY``: ``authorize`` on ``key``, which must be the
        permission's resource, held in this region. Either way the request's values are seen as
        in the permission's region (``aws:RequestedRegion``), with the permission's own values."""
        values = {**in_region(request_values, permission.region), **permission.values}
        if permission.decided_by is DecidedBy.IAM:
            identity = await self._iam.identity_policies(principal)
            self._authorize_identity(principal, permission.action, permission.resource, identity, None, values)
            return
        if key is None or key.arn != permission.resource or (self.region is not None and key.region != self.region):
            raise ValueError(f"{permission.action} must be decided where {permission.resource} is held")
        await self.authorize(principal, permission.action, key, request_values=values)

    async def allows_put_key_policy_later(
        self, principal: Principal, policy: Policy, *, key_arn: str, key_account: str,
        request_values: RequestValues | None = None,
    ) -> bool:  # fmt: skip
        """The lockout safety check (``decision.lockout_check``) with the caller's own identity policies."""
        identity = await self._iam.identity_policies(principal)
        return lockout_check(
            policy, caller_arn=principal.arn, caller_account=principal.account_id, key_arn=key_arn,
            key_account=key_account, identity_policies=identity, values=request_values,
        )  # fmt: skip

    def _authorize_identity(
        self, principal: Principal, action: str, resource: str, identity: Sequence[Policy],
        encryption_context: Mapping[str, str] | None, request_values: RequestValues | None,
    ) -> None:  # fmt: skip
        ctx = RequestContext(
            principal_arn=principal.arn,
            principal_account=principal.account_id,
            action=action,
            resource_arn=resource,
            values=dict(request_values or {}),
            encryption_context=dict(encryption_context or {}),
        )
        denied = allowed = False
        for policy in identity:
            evaluation = policy.evaluate(ctx)
            denied = denied or evaluation.explicit_deny
            allowed = allowed or evaluation.allow
        if denied or not (allowed or ctx.principal_is_root):
            raise access_denied(principal, action, resource)

    async def authorize_retire(
        self,
        principal: Principal,
        key: Key,
        *,
        grantee_principal: str | None,
        retiring_principal: str | None,
        operations: frozenset[str],
        request_values: RequestValues | None = None,
    ) -> None:
        """RetireGrant: permission comes from the grant itself, not from policies (AWS).

        Allowed for the grant's retiring principal, its grantee when the grant lists
        RetireGrant, and the root of the account that issued it (the key's account); an
        explicit Deny of ``kms:RetireGrant`` in the key policy or the caller's IAM still wins.
        """
        identity = await self._iam.identity_policies(principal)
        key_policy = await self._policies.key_policy(key)
        ctx = RequestContext(
            principal_arn=principal.arn,
            principal_account=principal.account_id,
            action="kms:RetireGrant",
            resource_arn=key.arn,
            values={**(request_values or {}), **key_values(key)},
        )
        denied = any(p.evaluate(ctx).explicit_deny for p in (key_policy, *identity))
        # ``None``: a grant that names a service principal there, which no caller here is.
        named = (retiring_principal is not None and principal.arn == retiring_principal) or (
            grantee_principal is not None
            and principal.arn == grantee_principal
            and "retiregrant" in {op.lower() for op in operations}
        )
        issuer_root = principal.is_root and principal.account_id == key.account
        if denied or not (named or issuer_root):
            raise access_denied(principal, "kms:RetireGrant", key.arn)
