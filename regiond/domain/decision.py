"""AWS KMS authorization: combine the key policy, the caller's IAM policies and grants.

The rules, as AWS KMS documents them for key policies:

1. An explicit ``Deny`` in the key policy or in any of the caller's identity policies wins;
   nothing, not even a grant, overrides it.
2. Same account: the key policy allows the caller *directly* (names its ARN, ``"*"``, or
   names the account root and the caller is that root) — allowed, whatever IAM says. If the
   key policy allows the caller only through its account root, that delegates to IAM: an
   identity policy of the caller must allow the action on this key's ARN.
3. Another account: the key policy must allow the caller (directly or via its account root)
   *and* the caller's own identity policies must allow; cross-account always needs both. An
   account root caller counts as allowed by its own IAM (AWS gives the root user everything
   in its account), so naming another account's root lets that root in.
4. A grant to the caller for the operation, whose encryption-context constraints hold,
   allows (grants need no IAM permission, in any account).

Service principals (``principal_is_service``) have no identity policies: a key-policy allow
suffices. The module also holds AWS's policy templates (default key policy, AWS-managed key
policy, the console's key administrators / key users statements) and the lockout check
behind ``BypassPolicyLockoutSafetyCheck``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from regiond.domain.policy import Evaluation, Policy, PolicyKind, RequestContext, StatementRef

_ACCOUNT_ID = re.compile(r"\d{12}")


class DecisionReason(StrEnum):
    """Why a request was allowed or denied: short, stable, safe for logs and audit."""

    ALLOWED_BY_KEY_POLICY = "allowed-by-key-policy"
    ALLOWED_BY_KEY_POLICY_AND_IAM = "allowed-by-key-policy-and-iam"
    ALLOWED_BY_GRANT = "allowed-by-grant"
    EXPLICIT_DENY = "explicit-deny"
    KEY_POLICY_DOES_NOT_ALLOW = "key-policy-does-not-allow"
    IAM_DOES_NOT_ALLOW = "iam-does-not-allow"


class PolicySource(StrEnum):
    KEY_POLICY = "key-policy"
    IDENTITY_POLICY = "identity-policy"


@dataclass(frozen=True, slots=True)
class DecidingStatement:
    """A statement that decided; ``policy_index`` indexes ``identity_policies`` (0 for the key policy)."""

    source: PolicySource
    policy_index: int
    statement: StatementRef


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DecisionReason
    statements: tuple[DecidingStatement, ...] = ()
    grant_id: str | None = None


@dataclass(frozen=True)
class GrantConstraints:
    """CreateGrant ``Constraints``; when several are set, all must hold.

    ``EncryptionContextEquals``: the request's encryption context is exactly these pairs.
    ``EncryptionContextSubset``: these pairs are all present (the request may have more).
    Both compare keys and values case-sensitively, as AWS does.
    ``SourceArn``: the request is made on behalf of this AWS resource (AWS: "effectively the
    same as having the aws:SourceArn global condition key in the grant"). Only an AWS service
    calling for one of its resources makes such a request; regionkms has no integrated
    services, so no request here carries ``aws:SourceArn`` and a grant with this constraint
    allows nothing but RetireGrant, to which AWS does not apply it. Failing closed keeps the
    grant exactly as narrow as its creator asked.
    """

    encryption_context_equals: Mapping[str, str] | None = field(default=None, hash=False)
    encryption_context_subset: Mapping[str, str] | None = field(default=None, hash=False)
    source_arn: str | None = None

    def hold(self, encryption_context: Mapping[str, str]) -> bool:
        if self.source_arn is not None:
            return False  # no request is made on behalf of an AWS resource (docstring)
        equals, subset = self.encryption_context_equals, self.encryption_context_subset
        if equals is not None and dict(encryption_context) != dict(equals):
            return False
        return subset is None or all(encryption_context.get(k) == v for k, v in subset.items())

    def without_encryption_context(self) -> GrantConstraints | None:
        """What is left for operations AWS exempts from the encryption-context constraints."""
        return GrantConstraints(source_arn=self.source_arn) if self.source_arn is not None else None


@dataclass(frozen=True)
class GrantView:
    """What authorization needs of a grant; the store layer builds these from its rows.

    ``operations`` are KMS operation names as CreateGrant takes them (``"Encrypt"``,
    ``"GenerateDataKey"``), matched case-insensitively against the request's ``kms:<Op>``.
    ``grantee_principal`` is ``None`` for a grant to an AWS service principal
    (``GranteeServicePrincipal``): such a grant permits no caller of regionkms, where every
    caller is an IAM principal authenticated by SigV4 and no AWS service calls in.
    """

    grant_id: str
    grantee_principal: str | None
    operations: frozenset[str]
    constraints: GrantConstraints | None = None
    _operation_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_operation_keys", frozenset(op.lower() for op in self.operations))

    def permits(self, ctx: RequestContext) -> bool:
        if self.grantee_principal is None or ctx.principal_is_service or ctx.principal_arn != self.grantee_principal:
            return False
        service, _, operation = ctx.action_key.partition(":")
        if service != "kms" or operation not in self._operation_keys:
            return False
        return self.constraints is None or self.constraints.hold(ctx.encryption_context)


def _refs(source: PolicySource, index: int, refs: tuple[StatementRef, ...]) -> tuple[DecidingStatement, ...]:
    return tuple(DecidingStatement(source, index, ref) for ref in refs)


def decide(
    *,
    key_policy: Policy,
    key_account: str,
    identity_policies: Sequence[Policy],
    grants: Sequence[GrantView],
    ctx: RequestContext,
) -> Decision:
    """Apply AWS KMS's rules (module docstring) to one request. Pure and cheap to cache."""
    if key_policy.kind is not PolicyKind.KEY:
        raise ValueError("key_policy must be parsed as PolicyKind.KEY")
    if any(p.kind is not PolicyKind.IDENTITY for p in identity_policies):
        raise ValueError("identity_policies must be parsed as PolicyKind.IDENTITY")

    key_eval = key_policy.evaluate(ctx)
    identity_evals: list[Evaluation] = [p.evaluate(ctx) for p in identity_policies]

    denies = _refs(PolicySource.KEY_POLICY, 0, key_eval.denied_by)
    for i, ev in enumerate(identity_evals):
        denies += _refs(PolicySource.IDENTITY_POLICY, i, ev.denied_by)
    if denies:
        return Decision(False, DecisionReason.EXPLICIT_DENY, denies)

    same_account = ctx.principal_is_service or ctx.principal_account == key_account
    if same_account and key_eval.allows_directly:
        return Decision(
            True,
            DecisionReason.ALLOWED_BY_KEY_POLICY,
            _refs(PolicySource.KEY_POLICY, 0, key_eval.allowed_by),
        )
    # Delegation (same account) or cross-account: the caller's IAM policies must allow too.
    key_refs = key_eval.delegated_by if same_account else key_eval.allowed_by + key_eval.delegated_by
    iam_refs: tuple[DecidingStatement, ...] = ()
    for i, ev in enumerate(identity_evals):
        iam_refs += _refs(PolicySource.IDENTITY_POLICY, i, ev.allowed_by)
    # An account's root user needs no identity policy: IAM allows it everything in its account.
    iam_allows = bool(iam_refs) or ctx.principal_is_root
    if key_refs and iam_allows and not ctx.principal_is_service:
        return Decision(
            True,
            DecisionReason.ALLOWED_BY_KEY_POLICY_AND_IAM,
            _refs(PolicySource.KEY_POLICY, 0, key_refs) + iam_refs,
        )

    for grant in grants:
        if grant.permits(ctx):
            return Decision(True, DecisionReason.ALLOWED_BY_GRANT, grant_id=grant.grant_id)

    if key_eval.allow:
        return Decision(False, DecisionReason.IAM_DOES_NOT_ALLOW, _refs(PolicySource.KEY_POLICY, 0, key_refs))
    return Decision(False, DecisionReason.KEY_POLICY_DOES_NOT_ALLOW)


def lockout_check(
    policy: Policy,
    *,
    caller_arn: str,
    caller_account: str,
    key_arn: str,
    key_account: str,
    identity_policies: Sequence[Policy],
    values: Mapping[str, tuple[str, ...]] | None = None,
) -> bool:
    """Would the caller still be allowed to call kms:PutKeyPolicy on the key under ``policy``?

    AWS's safety check behind ``BypassPolicyLockoutSafetyCheck`` (CreateKey, PutKeyPolicy,
    ReplicateKey): "The key policy must allow the calling principal to make a subsequent
    PutKeyPolicy request on the KMS key", and the caller "can get kms:PutKeyPolicy permission
    for the KMS key from an IAM policy or they can include this permission in the key policy".
    So this is the whole decision (``decide``) for that later call, on the new policy and the
    caller's own identity policies: a statement naming the caller counts; one that names only
    its account root counts only if the caller's IAM allows kms:PutKeyPolicy on this key; an
    explicit Deny in either refuses; grants never count (no grant can give PutKeyPolicy).
    Conditions see ``values``, the global values of this request (source IP, time, region), as
    a later call from the same place would; a condition on anything else sees a missing key.
    """
    ctx = RequestContext(
        principal_arn=caller_arn,
        principal_account=caller_account,
        action="kms:PutKeyPolicy",
        resource_arn=key_arn,
        values=values or {},
    )
    decision = decide(
        key_policy=policy, key_account=key_account, identity_policies=identity_policies, grants=(), ctx=ctx
    )
    return decision.allowed


# --- AWS policy templates ------------------------------------------------------------------------

POLICY_VERSION = "2012-10-17"

KEY_ADMINISTRATOR_ACTIONS = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
)
KEY_USER_ACTIONS = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey")
KEY_USER_GRANT_ACTIONS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")
AWS_MANAGED_USE_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:CreateGrant",
    "kms:DescribeKey",
)
AWS_MANAGED_METADATA_ACTIONS = ("kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant")


def _root_arn(account_id: str) -> str:
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise ValueError("account id must be 12 digits")
    return f"arn:aws:iam::{account_id}:root"


def _principal(principal_arns: Sequence[str]) -> str | list[str]:
    if not principal_arns:
        raise ValueError("at least one principal is required")
    return principal_arns[0] if len(principal_arns) == 1 else list(principal_arns)


def policy_document(statements: Sequence[Mapping[str, object]], *, policy_id: str | None = None) -> str:
    """Render statements as a key policy document (the JSON text AWS returns)."""
    document: dict[str, object] = {"Version": POLICY_VERSION}
    if policy_id is not None:
        document["Id"] = policy_id
    document["Statement"] = [dict(s) for s in statements]
    return json.dumps(document, indent=2)


def enable_iam_statement(account_id: str) -> dict[str, object]:
    """The statement that delegates the key to the account's IAM policies."""
    return {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": _root_arn(account_id)},
        "Action": "kms:*",
        "Resource": "*",
    }


def default_key_policy(account_id: str) -> str:
    """AWS's default key policy for CreateKey without a Policy: full delegation to IAM."""
    return policy_document([enable_iam_statement(account_id)], policy_id="key-default-1")


def aws_managed_key_policy(account_id: str, service: str, region: str) -> str:
    """The policy of an AWS-managed key (``alias/aws/<service>``).

    Any principal of the account may use the key, but only through the service in this
    region (``kms:ViaService``); the account root may read metadata and revoke grants.
    """
    return policy_document(
        [
            {
                "Sid": f"Allow access through {service} for all principals in the account "
                f"that are authorized to use {service}",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": list(AWS_MANAGED_USE_ACTIONS),
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:CallerAccount": account_id,
                        "kms:ViaService": f"{service}.{region}.amazonaws.com",
                    }
                },
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": _root_arn(account_id)},
                "Action": list(AWS_MANAGED_METADATA_ACTIONS),
                "Resource": "*",
            },
        ],
        policy_id=f"auto-{service}-1",
    )


def key_administrators_statement(principal_arns: Sequence[str]) -> dict[str, object]:
    """The console's "key administrators" statement: manage the key, never use it."""
    return {
        "Sid": "Allow access for Key Administrators",
        "Effect": "Allow",
        "Principal": {"AWS": _principal(principal_arns)},
        "Action": list(KEY_ADMINISTRATOR_ACTIONS),
        "Resource": "*",
    }


def key_users_statement(principal_arns: Sequence[str]) -> dict[str, object]:
    """The console's "key users" statement: cryptographic use, no administration."""
    return {
        "Sid": "Allow use of the key",
        "Effect": "Allow",
        "Principal": {"AWS": _principal(principal_arns)},
        "Action": list(KEY_USER_ACTIONS),
        "Resource": "*",
    }


def key_users_grants_statement(principal_arns: Sequence[str]) -> dict[str, object]:
    """The console's companion to key users: grants, but only for AWS resources."""
    return {
        "Sid": "Allow attachment of persistent resources",
        "Effect": "Allow",
        "Principal": {"AWS": _principal(principal_arns)},
        "Action": list(KEY_USER_GRANT_ACTIONS),
        "Resource": "*",
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
    }
