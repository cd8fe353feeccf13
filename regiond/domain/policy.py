"""AWS IAM / KMS policy documents: a strict parser and a compiled evaluator.

``parse_policy`` turns JSON text into a :class:`Policy` whose statements are compiled
(action/resource globs into regexes, principals into sets, conditions into matchers; see
:mod:`regiond.domain.policy_conditions`), because evaluation runs on the request hot path
whenever a cached decision misses, while parsing runs only when a policy is written.

The parser is strict, like AWS KMS's ``MalformedPolicyDocumentException``: unknown fields,
wrong types, duplicate JSON keys, unknown condition operators and malformed principals are
rejected with a short reason that never echoes more than a few dozen characters of input.

Two kinds of document share the grammar (``PolicyKind``):

* **key policies** name who is allowed, so each statement has exactly one of ``Principal``
  / ``NotPrincipal``;
* **identity policies** are attached to a principal, so ``Principal`` is forbidden.

Evaluation (``Policy.evaluate``) reports *which* statements matched and, for key policies,
*how* an Allow matched the caller (:class:`Evaluation`): by naming it (its ARN, ``"*"``, or the
account root when the caller is that root) or only through its account root, which in AWS
means "delegate to that account's IAM policies". Combining key policy, identity policies and
grants is :mod:`regiond.domain.decision`'s job.

Principal matching models AWS's view that a request by ``arn:aws:iam::111122223333:user/a``
carries two identities: the user and its account. ``Principal`` matches when one listed entry
covers either identity; ``NotPrincipal`` matches when some identity is *not* listed, which is
why AWS documents that a ``Deny`` with ``NotPrincipal`` must list the account too.
``{"AWS": "*"}`` matches any non-service principal, ``"*"`` matches everyone. Principal ARNs
match exactly (AWS allows no wildcards there); assumed-role session ARNs are not mapped to
their role.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any

from regiond.domain.policy_conditions import (
    Condition,
    SetQualifier,
    compile_wildcards,
    parse_condition_block,
    shorten,
)
from regiond.errors import MalformedPolicyDocumentException

MAX_POLICY_BYTES = 32 * 1024
SUPPORTED_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})

_TOP_LEVEL_FIELDS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_FIELDS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_ACCOUNT_ID = re.compile(r"\d{12}")
_PRINCIPAL_ARN = re.compile(r"arn:[a-z0-9-]+:(?:iam|sts)::(\d{12}):([^\s*?]+)")
_ROOT_ARN = re.compile(r"arn:[a-z0-9-]+:iam::(\d{12}):root")
_SERVICE_PRINCIPAL = re.compile(r"[a-z0-9][a-z0-9.-]*")
_ACTION = re.compile(r"\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+")

ValueMap = Mapping[str, tuple[str, ...]]


class PolicyKind(StrEnum):
    KEY = "key"
    IDENTITY = "identity"


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


class PrincipalMatch(Enum):
    """How a statement's principal element matched the caller."""

    NONE = "none"
    DIRECT = "direct"  # the caller itself, "*", the root calling as root, or no Principal element
    ACCOUNT_ROOT = "account-root"  # only via the caller's account root: delegates to IAM


# --- request context -----------------------------------------------------------------------------


ENCRYPTION_CONTEXT_PREFIX = "kms:encryptioncontext:"
_SINGLE_VALUED_PREFIXES = (ENCRYPTION_CONTEXT_PREFIX, "aws:requesttag/")

UNKNOWN_WHEN_ABSENT = ("aws:resourcetag/", "kms:resourcealiases")
"""Condition keys (lower-cased prefixes) that describe the KMS key's tags and aliases, which the
authorizer does not know: a request without a value for one is not evidence that the key has no
such tag or alias. AWS evaluates them on every operation on a key ("Conditions for KMS keys used in
API operations"), so a ``Deny`` on ``aws:ResourceTag/<k>`` or ``kms:ResourceAliases`` would never
apply here. Such a condition fails closed, as an ambiguous one does (``Statement.match``), ``Null``
included: it never lets an ``Allow`` apply and always lets a ``Deny`` apply. A request that does
carry a value for the key (a future service that supplies it, the simulator) is evaluated as usual."""


def encryption_context_values(
    encryption_context: Mapping[str, str],
) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """Condition values AWS KMS derives from an encryption context, and the ambiguous ones.

    AWS: the condition key ``kms:EncryptionContext:<k>`` is not case-sensitive (neither its
    prefix nor ``<k>``), it is single-valued, and encryption context keys themselves *are*
    case-sensitive. So ``{"tenant": "red", "Tenant": "blue"}`` gives the one condition key
    ``kms:encryptioncontext:tenant`` two values, which a single-valued key cannot have: AWS
    documents no answer for it. Such keys are returned as *ambiguous*, and a condition on one
    fails closed (``Statement.match``): it never lets an Allow apply and always lets a Deny
    apply, whatever the operator. ``kms:EncryptionContextKeys`` keeps the keys' case (its values
    are compared by the operator, so ``StringEquals`` there is the case-sensitive check AWS
    recommends).
    """
    values: dict[str, list[str]] = {}
    for k, v in encryption_context.items():
        values.setdefault(ENCRYPTION_CONTEXT_PREFIX + k.lower(), []).append(v)
    derived = {k: tuple(vs) for k, vs in values.items()}
    ambiguous = frozenset(k for k, vs in derived.items() if len(vs) > 1)
    derived["kms:encryptioncontextkeys"] = tuple(encryption_context)
    return derived, ambiguous


@dataclass(frozen=True)
class RequestContext:
    """Everything a policy can look at, for one (principal, action, resource).

    ``values`` maps condition key names to their values as strings (AWS-style: ``"true"``,
    ``"2024-01-31T00:00:00Z"``, ``"10.0.0.1"``). Keys are lower-cased on construction. The
    evaluator hard-codes no key; for convenience (and so no caller forgets one) the
    constructor fills in, when absent, ``aws:PrincipalArn``, ``aws:PrincipalAccount`` and
    ``kms:CallerAccount`` from the principal fields, and the ``kms:EncryptionContext*``
    keys from ``encryption_context``, which grants' constraints also read verbatim.
    ``ambiguous_keys`` are the single-valued condition keys the request gives more than one
    value (encryption context keys that differ only in case): conditions on them fail closed.

    A service principal (``principal_is_service``) has its service name, e.g.
    ``logs.amazonaws.com``, as ``principal_arn`` and an empty ``principal_account``.
    """

    principal_arn: str
    principal_account: str
    action: str
    resource_arn: str
    values: ValueMap = field(default_factory=dict, hash=False)
    encryption_context: Mapping[str, str] = field(default_factory=dict, hash=False)
    principal_is_service: bool = False
    action_key: str = field(init=False, repr=False, compare=False)
    principal_is_root: bool = field(init=False, repr=False, compare=False)
    ambiguous_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = {k.lower(): tuple(v) for k, v in self.values.items()}
        if not self.principal_is_service:
            values.setdefault("aws:principalarn", (self.principal_arn,))
            values.setdefault("aws:principalaccount", (self.principal_account,))
            values.setdefault("kms:calleraccount", (self.principal_account,))
        derived, ambiguous = encryption_context_values(self.encryption_context)
        for k, v in derived.items():
            values.setdefault(k, v)
        # A caller-supplied multi-valued kms:EncryptionContext:<k> is just as ambiguous, and so is
        # aws:RequestTag/<k> for two request tags equal but for case (single-valued, like it).
        ambiguous |= {k for k, v in values.items() if k.startswith(_SINGLE_VALUED_PREFIXES) and len(v) > 1}
        root = _ROOT_ARN.fullmatch(self.principal_arn)
        object.__setattr__(self, "ambiguous_keys", frozenset(ambiguous))
        object.__setattr__(self, "values", MappingProxyType(values))
        object.__setattr__(self, "encryption_context", MappingProxyType(dict(self.encryption_context)))
        object.__setattr__(self, "action_key", self.action.lower())
        object.__setattr__(
            self,
            "principal_is_root",
            not self.principal_is_service and root is not None and root.group(1) == self.principal_account,
        )


# --- compiled statement parts --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Patterns:
    """A compiled Action or Resource list: exact strings in a set, globs in one regex."""

    any: bool
    exact: frozenset[str]
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, items: tuple[str, ...], *, ignore_case: bool) -> _Patterns:
        fold = str.lower if ignore_case else str
        globs = tuple(i for i in items if "*" in i or "?" in i)
        return cls(
            any="*" in items,
            exact=frozenset(fold(i) for i in items if i not in globs),
            regex=compile_wildcards(globs, ignore_case=ignore_case) if globs else None,
        )

    def match(self, value: str) -> bool:
        """``value`` must already be lower-cased for case-insensitive lists."""
        if self.any or value in self.exact:
            return True
        return self.regex is not None and self.regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class _Principals:
    """A compiled Principal / NotPrincipal element."""

    everyone: bool  # "*"
    any_aws: bool  # {"AWS": "*"}
    arns: frozenset[str]
    accounts: frozenset[str]  # from 12-digit ids and ...:root ARNs
    services: frozenset[str]

    def match(self, ctx: RequestContext) -> PrincipalMatch:
        if self.everyone:
            return PrincipalMatch.DIRECT
        if ctx.principal_is_service:
            return PrincipalMatch.DIRECT if ctx.principal_arn in self.services else PrincipalMatch.NONE
        if self.any_aws or ctx.principal_arn in self.arns:
            return PrincipalMatch.DIRECT
        if ctx.principal_account in self.accounts:
            return PrincipalMatch.DIRECT if ctx.principal_is_root else PrincipalMatch.ACCOUNT_ROOT
        return PrincipalMatch.NONE

    def excludes(self, ctx: RequestContext) -> bool:
        """NotPrincipal: true when one of the request's identities is not listed."""
        if self.everyone:
            return False
        if ctx.principal_is_service:
            return ctx.principal_arn not in self.services
        account_listed = self.any_aws or ctx.principal_account in self.accounts
        if ctx.principal_is_root:
            return not account_listed
        caller_listed = self.any_aws or ctx.principal_arn in self.arns
        return not (caller_listed and account_listed)


@dataclass(frozen=True, slots=True)
class StatementRef:
    """Where a statement sits in its policy, for logs and a policy simulator."""

    index: int
    sid: str | None


@dataclass(frozen=True, slots=True)
class Statement:
    ref: StatementRef
    effect: Effect
    principals: _Principals | None  # None in identity policies
    not_principal: bool
    actions: _Patterns
    not_action: bool
    resources: _Patterns
    not_resource: bool
    conditions: tuple[Condition, ...]

    def match(self, ctx: RequestContext) -> PrincipalMatch:
        """How this statement applies to the request (``NONE`` when it does not)."""
        if self.actions.match(ctx.action_key) == self.not_action:
            return PrincipalMatch.NONE
        if self.resources.match(ctx.resource_arn) == self.not_resource:
            return PrincipalMatch.NONE
        how = PrincipalMatch.DIRECT
        if self.principals is not None:
            if self.not_principal:
                how = PrincipalMatch.DIRECT if self.principals.excludes(ctx) else PrincipalMatch.NONE
            else:
                how = self.principals.match(ctx)
            if how is PrincipalMatch.NONE:
                return how
        values = ctx.values
        ambiguous = ctx.ambiguous_keys
        for condition in self.conditions:
            unknown = condition.key.startswith(UNKNOWN_WHEN_ABSENT) and condition.key not in values
            if unknown or (ambiguous and condition.key in ambiguous and not condition.is_null):
                # Fail closed on a value AWS leaves undefined, or one the authorizer cannot know: a
                # Deny applies, an Allow does not. (For an ambiguous key Null asks only whether the
                # key is present, which is not in doubt; for an unknown one it is in doubt too.)
                if self.effect is Effect.DENY:
                    continue
                return PrincipalMatch.NONE
            if not condition.evaluate(values):
                return PrincipalMatch.NONE
        return how


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one policy for one request; the decision module combines these.

    ``allowed_by`` holds Allow statements that named the caller directly (for identity
    policies, every matching Allow); ``delegated_by`` holds Allow statements that matched only
    through the caller's account root, i.e. that hand the decision to the caller's IAM policies.
    """

    denied_by: tuple[StatementRef, ...] = ()
    allowed_by: tuple[StatementRef, ...] = ()
    delegated_by: tuple[StatementRef, ...] = ()

    @property
    def explicit_deny(self) -> bool:
        return bool(self.denied_by)

    @property
    def allow(self) -> bool:
        """Some Allow statement matched, directly or through the account root."""
        return bool(self.allowed_by or self.delegated_by)

    @property
    def allows_directly(self) -> bool:
        return bool(self.allowed_by)

    @property
    def delegates_to_iam(self) -> bool:
        return bool(self.delegated_by)


@dataclass(frozen=True, slots=True)
class Policy:
    kind: PolicyKind
    version: str | None
    policy_id: str | None
    statements: tuple[Statement, ...]

    def evaluate(self, ctx: RequestContext) -> Evaluation:
        """Match every statement (deny lists stay complete for the simulator)."""
        denied: list[StatementRef] = []
        allowed: list[StatementRef] = []
        delegated: list[StatementRef] = []
        for statement in self.statements:
            how = statement.match(ctx)
            if how is PrincipalMatch.NONE:
                continue
            if statement.effect is Effect.DENY:
                denied.append(statement.ref)
            elif how is PrincipalMatch.DIRECT:
                allowed.append(statement.ref)
            else:
                delegated.append(statement.ref)
        return Evaluation(tuple(denied), tuple(allowed), tuple(delegated))


ResourceList = _Patterns
"""A statement's compiled ``Resource`` (or ``NotResource``) list; ``match(arn)`` says if it names ``arn``."""


def resource_lists(policies: Sequence[Policy]) -> tuple[ResourceList, ...]:
    """The distinct ``Resource`` / ``NotResource`` lists of ``policies`` other than ``"*"``.

    ``Policy.evaluate`` reads ``RequestContext.resource_arn`` only through ``Statement.match``'s
    ``resources.match``, and a list holding ``"*"`` matches every ARN. So two requests that differ
    only in their resource, whose ARNs every list returned here matches alike, get the same
    ``Evaluation`` from each of ``policies``: what lets the authorizer decide keys alike
    (``service.authz``). Keep it that way: a new use of the resource in evaluation must be
    reflected here."""
    lists = (s.resources for p in policies for s in p.statements)
    return tuple(dict.fromkeys(r for r in lists if not r.any))


# --- parsing -------------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedPolicyDocumentException(f"duplicate JSON field {shorten(key)}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise MalformedPolicyDocumentException(f"invalid JSON number {name}")


def _strings(raw: object, where: str, what: str) -> tuple[str, ...]:
    """A string or a non-empty list of strings."""
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(i, str) for i in raw):
        return tuple(raw)
    raise MalformedPolicyDocumentException(f"{where}: {what} must be a string or a non-empty list of strings")


def _parse_principals(raw: object, where: str, name: str) -> _Principals:
    if raw == "*":
        return _Principals(True, False, frozenset(), frozenset(), frozenset())
    if not isinstance(raw, dict) or not raw:
        raise MalformedPolicyDocumentException(f'{where}: {name} must be "*" or an object of principal types')
    any_aws = False
    arns: set[str] = set()
    accounts: set[str] = set()
    services: set[str] = set()
    for principal_type, entries in raw.items():
        items = _strings(entries, where, f"{name}.{shorten(principal_type)}")
        if principal_type == "AWS":
            for item in items:
                if item == "*":
                    any_aws = True
                elif _ACCOUNT_ID.fullmatch(item):
                    accounts.add(item)
                elif root := _ROOT_ARN.fullmatch(item):
                    accounts.add(root.group(1))
                elif _PRINCIPAL_ARN.fullmatch(item):
                    arns.add(item)
                else:
                    raise MalformedPolicyDocumentException(f"{where}: invalid AWS principal {shorten(item)}")
        elif principal_type == "Service":
            for item in items:
                if not _SERVICE_PRINCIPAL.fullmatch(item):
                    raise MalformedPolicyDocumentException(f"{where}: invalid service principal {shorten(item)}")
                services.add(item)
        else:
            raise MalformedPolicyDocumentException(f"{where}: unsupported principal type {shorten(principal_type)}")
    return _Principals(False, any_aws, frozenset(arns), frozenset(accounts), frozenset(services))


def _exactly_one(statement: dict[str, Any], positive: str, negative: str, where: str) -> tuple[object, bool]:
    has_pos, has_neg = positive in statement, negative in statement
    if has_pos == has_neg:
        raise MalformedPolicyDocumentException(f"{where}: exactly one of {positive} or {negative} is required")
    return (statement[positive], False) if has_pos else (statement[negative], True)


def _parse_statement(raw: object, index: int, kind: PolicyKind) -> Statement:
    where = f"statement {index}"
    if not isinstance(raw, dict):
        raise MalformedPolicyDocumentException(f"{where}: must be an object")
    unknown = set(raw) - _STATEMENT_FIELDS
    if unknown:
        raise MalformedPolicyDocumentException(f"{where}: unknown field {shorten(sorted(unknown)[0])}")

    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedPolicyDocumentException(f"{where}: Sid must be a string")
    if sid:
        where = f"statement {index} ({shorten(sid)})"

    effect_raw = raw.get("Effect")
    if effect_raw not in ("Allow", "Deny"):
        raise MalformedPolicyDocumentException(f'{where}: Effect must be "Allow" or "Deny"')
    effect = Effect(effect_raw)

    principals: _Principals | None = None
    not_principal = False
    if kind is PolicyKind.KEY:
        raw_principal, not_principal = _exactly_one(raw, "Principal", "NotPrincipal", where)
        name = "NotPrincipal" if not_principal else "Principal"
        principals = _parse_principals(raw_principal, where, name)
    elif "Principal" in raw or "NotPrincipal" in raw:
        raise MalformedPolicyDocumentException(f"{where}: identity policies cannot have Principal or NotPrincipal")

    raw_actions, not_action = _exactly_one(raw, "Action", "NotAction", where)
    actions = _strings(raw_actions, where, "Action")
    for action in actions:
        if not _ACTION.fullmatch(action):
            raise MalformedPolicyDocumentException(f"{where}: invalid action {shorten(action)}")

    raw_resources, not_resource = _exactly_one(raw, "Resource", "NotResource", where)
    resources = _strings(raw_resources, where, "Resource")
    for resource in resources:
        if resource != "*" and not resource.startswith("arn:"):
            raise MalformedPolicyDocumentException(f'{where}: resource must be "*" or an ARN')

    conditions = parse_condition_block(raw["Condition"], where) if "Condition" in raw else ()
    return Statement(
        ref=StatementRef(index, sid),
        effect=effect,
        principals=principals,
        not_principal=not_principal,
        actions=_Patterns.compile(actions, ignore_case=True),
        not_action=not_action,
        resources=_Patterns.compile(resources, ignore_case=False),
        not_resource=not_resource,
        conditions=conditions,
    )


def parse_policy(document: str, kind: PolicyKind = PolicyKind.KEY) -> Policy:
    """Parse and compile a policy document, or raise ``MalformedPolicyDocumentException``.

    The 32 KiB limit is AWS KMS's key policy limit, checked on UTF-8 bytes before parsing so
    a huge document costs nothing. An absent ``Version`` is accepted (AWS treats it as
    2008-10-17); an unknown one is not.
    """
    try:
        size = len(document.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedPolicyDocumentException("policy document is not valid UTF-8 text") from None
    if size > MAX_POLICY_BYTES:
        raise MalformedPolicyDocumentException(f"policy document exceeds 32 KiB ({MAX_POLICY_BYTES} bytes)")
    try:
        raw = json.loads(document, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise MalformedPolicyDocumentException(f"policy document is not valid JSON (line {e.lineno})") from None
    except RecursionError:
        raise MalformedPolicyDocumentException("policy document is nested too deeply") from None
    if not isinstance(raw, dict):
        raise MalformedPolicyDocumentException("policy document must be a JSON object")
    unknown = set(raw) - _TOP_LEVEL_FIELDS
    if unknown:
        raise MalformedPolicyDocumentException(f"unknown policy field {shorten(sorted(unknown)[0])}")

    version = raw.get("Version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise MalformedPolicyDocumentException('Version must be "2012-10-17" or "2008-10-17"')
    policy_id = raw.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise MalformedPolicyDocumentException("Id must be a string")

    if "Statement" not in raw:
        raise MalformedPolicyDocumentException("policy document has no Statement")
    raw_statements = raw["Statement"]
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise MalformedPolicyDocumentException("Statement must be an object or a non-empty list")

    statements = tuple(_parse_statement(s, i, kind) for i, s in enumerate(raw_statements))
    sids = [s.ref.sid for s in statements if s.ref.sid]
    if len(sids) != len(set(sids)):
        raise MalformedPolicyDocumentException("statement Sids must be unique")
    return Policy(kind=kind, version=version, policy_id=policy_id, statements=statements)


OVERLY_PERMISSIVE_CONTEXT_CONDITION = (
    "OverlyPermissiveCondition:EncryptionContext: Using the ForAllValues set operator with a single-valued "
    "condition key matches requests without the specified encryption context or with an unspecified encryption "
    "context. To fix, remove ForAllValues."
)


def parse_policy_for_write(document: str, kind: PolicyKind = PolicyKind.KEY) -> Policy:
    """``parse_policy`` plus the checks AWS applies only when a policy is created or changed.

    AWS KMS refuses a new or changed policy that uses ``ForAllValues`` with the single-valued
    ``kms:EncryptionContext:<k>`` (it matches requests without that pair, or with any other
    pairs); policies stored earlier keep being evaluated, so this is not part of the grammar.
    """
    policy = parse_policy(document, kind)
    for statement in policy.statements:
        for condition in statement.conditions:
            if condition.qualifier is SetQualifier.FOR_ALL_VALUES and condition.key.startswith(
                ENCRYPTION_CONTEXT_PREFIX
            ):
                raise MalformedPolicyDocumentException(OVERLY_PERMISSIVE_CONTEXT_CONDITION)
    return policy
