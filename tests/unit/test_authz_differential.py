"""The authorization differential table (tests/support/authz_cases.py) against the authorizer, no I/O.

Every row runs through the service's own ``Authorizer`` (key policy, identity policies and grants
served from in-memory sources, the decision cache included) or, for the multi-Region operations,
through the permissions ``regiond.domain.permissions`` declares, decided in the region each must
be effective in -- exactly what the services do. The expected decision is AWS's, with its rule
in the row; a failure names the row and the rule.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from regiond.domain import permissions
from regiond.domain.decision import GrantConstraints, GrantView, decide, default_key_policy
from regiond.domain.key import (
    Key,
    KeySpec,
    KeyState,
    KeyUsage,
    MultiRegionConfiguration,
    MultiRegionKey,
    MultiRegionKeyType,
    Origin,
)
from regiond.domain.key_conditions import tag_values
from regiond.domain.policy import Policy, PolicyKind, RequestContext, parse_policy
from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import AccessDeniedException
from regiond.service.authz import Authorizer
from tests.support import authz_cases as t

KEYLESS_ACTIONS = frozenset({"kms:CreateKey", "kms:ListKeys"})
ALIAS_ACTIONS = frozenset({"kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"})
NOW = "2026-12-01T12:00:00Z"


def policy_text(statements: Sequence[t.Statement] | None) -> str:
    if statements is None:
        return default_key_policy(t.ACCOUNT)
    cleaned = [{k: v for k, v in s.items() if v is not None} for s in statements]
    return json.dumps({"Version": "2012-10-17", "Statement": cleaned})


def principal(arn: str) -> Principal:
    account, rest = arn.split(":")[4], arn.split(":")[5]
    if rest == "root":
        return Principal(arn, account, PrincipalKind.ROOT, "", account)
    kind, name = rest.split("/", 1)
    return Principal(arn, account, PrincipalKind(kind), name, "AIDA" + name.upper())


def grant_views(grants: Sequence[t.Grant]) -> tuple[GrantView, ...]:
    return tuple(
        GrantView(
            f"{i:064x}", g.grantee, frozenset(g.operations),
            None if g.equals is None and g.subset is None else GrantConstraints(g.equals, g.subset),
        )
        for i, g in enumerate(grants)
    )  # fmt: skip


class Iam:
    def __init__(self, policies: Mapping[str, tuple[Policy, ...]]) -> None:
        self.policies = dict(policies)

    async def identity_policies(self, who: Principal) -> tuple[Policy, ...]:
        return self.policies.setdefault(who.arn, ())


class KeyPolicies:
    def __init__(self, policies: Mapping[str, Policy]) -> None:
        self.policies = policies  # by key ARN

    async def key_policy(self, key: Key) -> Policy:
        return self.policies[key.arn]


class Grants:
    def __init__(self, grants: tuple[GrantView, ...]) -> None:
        self.cached = grants

    async def grants(self, key_id: str) -> tuple[GrantView, ...]:
        return self.cached

    async def fresh_grants(self, key_id: str, grant_ids: Sequence[str]) -> tuple[GrantView, ...]:
        return ()

    def invalidate(self, payload: str | None = None) -> None:
        return None


def base_values(extra: Mapping[str, tuple[str, ...]] = {}) -> dict[str, tuple[str, ...]]:
    return {"aws:SourceIp": (t.SOURCE_IP,), "aws:CurrentTime": (NOW,), "aws:RequestedRegion": (t.REGION,), **extra}


def tag_values_of(case: t.Case) -> dict[str, tuple[str, ...]]:
    """aws:RequestTag/<k> and aws:TagKeys of the row's request, as the services derive them."""
    tags = [(tag["TagKey"], tag["TagValue"]) for tag in case.create.get("Tags", ())]
    values = tag_values(tags, tag_keys=case.create.get("TagKeys", ()))
    if case.by_alias:  # KeyService.naming
        values["kms:RequestAlias"] = (t.ALIAS,)
    return values


def identity(statements: Sequence[t.Statement]) -> tuple[Policy, ...]:
    return (parse_policy(policy_text(statements), PolicyKind.IDENTITY),) if statements else ()


KEY = Key(key_id=t.KEY_ID, account=t.ACCOUNT, region=t.REGION, creation_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
          key_state=KeyState.ENABLED)  # fmt: skip


async def decide_case(case: t.Case) -> bool:
    key_policy = parse_policy(policy_text(case.key_policy))
    if case.caller == t.SERVICE:  # a service principal has no IAM identity: the pure decision
        ctx = RequestContext(case.caller, "", case.action, t.KEY_ARN, base_values(case.values), case.context,
                             principal_is_service=True)  # fmt: skip
        decision = decide(key_policy=key_policy, key_account=t.ACCOUNT, identity_policies=(),
                          grants=grant_views(case.grants), ctx=ctx)  # fmt: skip
        return decision.allowed
    authz = Authorizer(
        Iam({case.caller: identity(case.iam)}), KeyPolicies({t.KEY_ARN: key_policy}),  # type: ignore[arg-type]
        Grants(grant_views(case.grants)), region=t.REGION,
    )  # fmt: skip
    who = principal(case.caller)
    try:
        if case.action == "kms:CreateKey":  # the service's own declaration, with the row's parameters
            for permission in permissions.create_key(
                region=t.REGION, account=who.account_id, new_key_arn=f"arn:aws:kms:{t.REGION}:{t.ACCOUNT}:key/new",
                spec=KeySpec.SYMMETRIC_DEFAULT, usage=KeyUsage.ENCRYPT_DECRYPT, origin=Origin.AWS_KMS,
                key_type=MultiRegionKeyType.PRIMARY if case.create.get("MultiRegion") else None,
                bypass_lockout=case.create.get("BypassPolicyLockoutSafetyCheck"), tags=bool(case.create.get("Tags")),
            ):  # fmt: skip
                await authz.require(who, permission, base_values({**case.values, **tag_values_of(case)}))
            return True
        if case.action in ALIAS_ACTIONS:  # the alias in IAM and every affected key: the service's declaration
            operation = case.action.removeprefix("kms:")
            keys = (KEY, KEY) if operation == "UpdateAlias" else (KEY,)
            for permission in permissions.alias_operation(operation, t.ALIAS, *keys):
                on_key = permission.decided_by is permissions.DecidedBy.KEY
                await authz.require(who, permission, base_values(case.values), key=KEY if on_key else None)
            return True
        await authz.authorize(
            who, case.action, None if case.action in KEYLESS_ACTIONS else KEY,
            encryption_context=case.context, request_values=base_values({**case.values, **tag_values_of(case)}),
        )  # fmt: skip
    except AccessDeniedException:
        return False
    return True


@pytest.mark.parametrize("case", t.CASES, ids=[c.name for c in t.CASES])
async def test_aws_decision(case: t.Case) -> None:
    assert await decide_case(case) is case.allowed, f"{case.name}: AWS says {case.allowed} ({case.rule})"


def test_the_table_covers_what_it_promises() -> None:
    every: list[t.Case | t.MultiRegionCase] = [*t.CASES, *t.MULTI_REGION_CASES]
    names = [c.name for c in every]
    assert len(names) == len(set(names))
    assert all(c.rule for c in every)
    operations = {c.operation for c in t.MULTI_REGION_CASES}
    assert operations == {"ReplicateKey", "UpdatePrimaryRegion", "ScheduleKeyDeletion"}
    assert sum(c.e2e for c in t.CASES) >= 40


# --- multi-Region operations ------------------------------------------------------------------

MRK = "mrk-0123456789abcdef0123456789abcdef"


def mrk(region: str, primary: str, replica: str) -> Key:
    return Key(
        key_id=MRK, account=t.ACCOUNT, region=region, creation_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        key_state=KeyState.ENABLED,
        multi_region_configuration=MultiRegionConfiguration(
            MultiRegionKeyType.PRIMARY if region == primary else MultiRegionKeyType.REPLICA,
            MultiRegionKey(f"arn:aws:kms:{primary}:{t.ACCOUNT}:key/{MRK}", primary),
            (MultiRegionKey(f"arn:aws:kms:{replica}:{t.ACCOUNT}:key/{MRK}", replica),),
        ),
    )  # fmt: skip


async def decide_multi_region(case: t.MultiRegionCase) -> bool:
    primary, replica = mrk(t.PRIMARY, t.PRIMARY, t.REPLICA), mrk(t.REPLICA, t.PRIMARY, t.REPLICA)
    iam = Iam({case.caller: identity(case.iam)})
    policies = {primary.arn: parse_policy(policy_text(case.primary_policy)),
                replica.arn: parse_policy(policy_text(case.replica_policy))}  # fmt: skip
    in_region = {
        region: Authorizer(iam, KeyPolicies(policies), Grants(()), region=region)  # type: ignore[arg-type]
        for region in (t.PRIMARY, t.REPLICA)
    }
    keys = {t.PRIMARY: primary, t.REPLICA: replica}
    who = principal(case.caller)
    values = base_values()
    if case.operation == "ReplicateKey":
        needed = permissions.replicate_key(primary, t.REPLICA, tags=case.tags, bypass_lockout=None)
    elif case.operation == "UpdatePrimaryRegion":
        needed = permissions.update_primary_region(primary, t.REPLICA)
    else:
        target = keys[t.REPLICA if case.target == "replica" else t.PRIMARY]
        needed = (permissions.Permission(f"kms:{case.operation}", permissions.DecidedBy.KEY, target.region,
                                         target.arn),)  # fmt: skip
    try:
        for permission in needed:
            # decided where it must be effective: a key permission by that key's region (as the
            # replica's region answers UpdatePrimaryRegion's question), IAM ones anywhere
            region = permission.region if permission.decided_by is permissions.DecidedBy.KEY else t.PRIMARY
            key = keys[region] if permission.decided_by is permissions.DecidedBy.KEY else None
            await in_region[region].require(who, permission, values, key=key)
    except AccessDeniedException:
        return False
    return True


@pytest.mark.parametrize("case", t.MULTI_REGION_CASES, ids=[c.name for c in t.MULTI_REGION_CASES])
async def test_aws_decision_for_multi_region_operations(case: t.MultiRegionCase) -> None:
    assert await decide_multi_region(case) is case.allowed, f"{case.name}: AWS says {case.allowed} ({case.rule})"


def test_declared_permissions_follow_the_api_reference() -> None:
    primary = mrk(t.PRIMARY, t.PRIMARY, t.REPLICA)
    replicate = permissions.replicate_key(primary, t.REPLICA, tags=True, bypass_lockout=True)
    summary: list[Any] = [(p.action, p.decided_by.value, p.region, p.resource) for p in replicate]
    assert summary == [
        ("kms:ReplicateKey", "key", t.PRIMARY, primary.arn),
        ("kms:CreateKey", "iam", t.REPLICA, f"arn:aws:kms:{t.REPLICA}:{t.ACCOUNT}:*"),
        ("kms:TagResource", "iam", t.REPLICA, f"arn:aws:kms:{t.REPLICA}:{t.ACCOUNT}:key/{MRK}"),
    ]
    assert replicate[1].values["kms:MultiRegionKeyType"] == ("REPLICA",)
    assert replicate[1].values["kms:BypassPolicyLockoutSafetyCheck"] == ("true",)
    moved = permissions.update_primary_region(primary, t.REPLICA)
    assert [(p.action, p.region, p.resource) for p in moved] == [
        ("kms:UpdatePrimaryRegion", t.PRIMARY, primary.arn),
        ("kms:UpdatePrimaryRegion", t.REPLICA, f"arn:aws:kms:{t.REPLICA}:{t.ACCOUNT}:key/{MRK}"),
    ]
    assert all(p.values == {"kms:PrimaryRegion": (t.REPLICA,)} for p in moved)
    assert dataclasses.replace(moved[0]).rule.startswith("UpdatePrimaryRegion")


def test_alias_permissions_follow_the_developer_guide() -> None:
    """alias-access: the alias operation on the alias (IAM policy) and on every affected KMS key."""
    other = dataclasses.replace(KEY, key_id="ffffffff-12ab-34cd-56ef-1234567890ab")
    updated = permissions.alias_operation("UpdateAlias", t.ALIAS, KEY, other)
    assert [(p.action, p.decided_by.value, p.resource) for p in updated] == [
        ("kms:UpdateAlias", "iam", t.ALIAS_ARN),
        ("kms:UpdateAlias", "key", KEY.arn),
        ("kms:UpdateAlias", "key", other.arn),
    ]
    for operation in ("CreateAlias", "DeleteAlias"):
        declared = permissions.alias_operation(operation, t.ALIAS, KEY)
        assert [(p.decided_by.value, p.resource) for p in declared] == [("iam", t.ALIAS_ARN), ("key", KEY.arn)]
    with pytest.raises(ValueError):
        permissions.alias_operation("ListAliases", t.ALIAS, KEY)
