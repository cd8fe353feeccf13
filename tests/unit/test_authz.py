"""The authorizer without I/O: cached decisions keyed by policy versions and request values,
grant semantics around the pure decision (constraints, CreateGrant, tokens), cross-account."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence
from typing import Any

import pytest

from regiond.domain.decision import DecisionReason, GrantConstraints, GrantView, default_key_policy
from regiond.domain.grants import NewGrant, applicable_grants, grant_admits
from regiond.domain.key import Key, KeyState, MultiRegionConfiguration, MultiRegionKey, MultiRegionKeyType, Origin
from regiond.domain.policy import Policy, PolicyKind, RequestContext, parse_policy
from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import AccessDeniedException, InvalidGrantTokenException
from regiond.service.authz import (
    Authorizer,
    evaluate,
    make_grant_token,
    parse_grant_token,
)

ACCOUNT = "111122223333"
OTHER = "444455556666"
KEY = Key(
    key_id="1234abcd-12ab-34cd-56ef-1234567890ab",
    account=ACCOUNT,
    region="us-east-1",
    creation_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    key_state=KeyState.ENABLED,
)
BOB = Principal(f"arn:aws:iam::{ACCOUNT}:user/bob", ACCOUNT, PrincipalKind.USER, "bob", "AIDABOB")
CAROL = Principal(f"arn:aws:iam::{OTHER}:user/carol", OTHER, PrincipalKind.USER, "carol", "AIDACAROL")
GRANT_ID = "ab" * 32


def key_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), PolicyKind.KEY)


def allow(principal: str, *actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": list(actions), "Resource": "*", **extra}


class FakeIam:
    def __init__(self, policies: dict[str, tuple[Policy, ...]] | None = None) -> None:
        self.policies = policies or {}

    async def identity_policies(self, principal: Principal) -> tuple[Policy, ...]:
        return self.policies.setdefault(principal.arn, ())


class FakeKeys:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def key_policy(self, key: Key) -> Policy:
        return self.policy


class FakeGrants:
    def __init__(self, cached: tuple[GrantView, ...] = (), stored: tuple[GrantView, ...] = ()) -> None:
        self.cached, self.stored = cached, stored
        self.fresh_reads: list[list[str]] = []
        self.invalidated: list[str | None] = []

    async def grants(self, key_id: str) -> tuple[GrantView, ...]:
        return self.cached

    async def fresh_grants(self, key_id: str, grant_ids: Sequence[str]) -> tuple[GrantView, ...]:
        self.fresh_reads.append(list(grant_ids))
        return tuple(g for g in self.stored if g.grant_id in grant_ids)

    def invalidate(self, payload: str | None = None) -> None:
        self.invalidated.append(payload)


def authorizer(policy: Policy, grants: FakeGrants | None = None, iam: FakeIam | None = None) -> Authorizer:
    return Authorizer(iam or FakeIam(), FakeKeys(policy), grants or FakeGrants())  # type: ignore[arg-type]


# --- decision cache ------------------------------------------------------------------------------


async def test_repeated_request_is_decided_once() -> None:
    authz = authorizer(key_policy(allow(BOB.arn, "kms:Encrypt")))
    for _ in range(3):
        decision = await authz.authorize(BOB, "kms:Encrypt", KEY)
        assert decision is not None
        assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY
    assert authz.evaluations == 1


async def test_cached_decisions_follow_the_policy_object_they_were_made_from() -> None:
    keys = FakeKeys(key_policy(allow(BOB.arn, "kms:Encrypt")))
    authz = Authorizer(FakeIam(), keys, FakeGrants())  # type: ignore[arg-type]
    await authz.authorize(BOB, "kms:Encrypt", KEY)
    keys.policy = key_policy(allow(BOB.arn, "kms:Decrypt"))  # what a reload after NOTIFY hands out
    with pytest.raises(AccessDeniedException):
        await authz.authorize(BOB, "kms:Encrypt", KEY)
    assert authz.evaluations == 2


async def test_cached_decisions_follow_identity_policy_and_grant_changes() -> None:
    iam = FakeIam()
    grants = FakeGrants()
    authz = authorizer(parse_policy(default_key_policy(ACCOUNT)), grants, iam)
    with pytest.raises(AccessDeniedException):
        await authz.authorize(BOB, "kms:Encrypt", KEY)
    iam.policies[BOB.arn] = (
        parse_policy(
            json.dumps({"Statement": {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}}),
            PolicyKind.IDENTITY,
        ),
    )
    decision = await authz.authorize(BOB, "kms:Encrypt", KEY)
    assert decision is not None and decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY_AND_IAM
    grants.cached = (GrantView(GRANT_ID, BOB.arn, frozenset({"Decrypt"})),)
    decision = await authz.authorize(BOB, "kms:Decrypt", KEY)
    assert decision is not None and decision.grant_id == GRANT_ID


async def test_cached_decisions_are_keyed_by_the_request_values_conditions_read() -> None:
    policy = key_policy(
        allow(BOB.arn, "kms:Encrypt", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        allow(BOB.arn, "kms:Decrypt", Condition={"StringEquals": {"kms:EncryptionContext:tenant": "blue"}}),
    )
    authz = authorizer(policy)
    for _ in range(2):
        await authz.authorize(BOB, "kms:Encrypt", KEY, request_values={"aws:SourceIp": ("10.1.2.3",)})
        with pytest.raises(AccessDeniedException):
            await authz.authorize(BOB, "kms:Encrypt", KEY, request_values={"aws:SourceIp": ("11.1.2.3",)})
        await authz.authorize(BOB, "kms:Decrypt", KEY, encryption_context={"tenant": "blue"})
        with pytest.raises(AccessDeniedException):
            await authz.authorize(BOB, "kms:Decrypt", KEY, encryption_context={"tenant": "red"})
    assert authz.evaluations == 4


async def test_values_no_condition_reads_do_not_split_the_cache() -> None:
    authz = authorizer(key_policy(allow(BOB.arn, "kms:Encrypt")))
    for second in range(5):
        now = f"2024-01-01T00:00:0{second}Z"
        await authz.authorize(BOB, "kms:Encrypt", KEY, request_values={"aws:CurrentTime": (now,)},
                              encryption_context={"n": str(second)})  # fmt: skip
    assert authz.evaluations == 1


async def test_a_constrained_grant_is_decided_per_encryption_context() -> None:
    constrained = GrantView(
        GRANT_ID, BOB.arn, frozenset({"Encrypt"}), GrantConstraints(encryption_context_subset={"t": "1"})
    )
    authz = authorizer(key_policy(allow(f"arn:aws:iam::{ACCOUNT}:root", "kms:*")), FakeGrants((constrained,)))
    await authz.authorize(BOB, "kms:Encrypt", KEY, encryption_context={"t": "1"})
    with pytest.raises(AccessDeniedException):
        await authz.authorize(BOB, "kms:Encrypt", KEY, encryption_context={"t": "2"})
    await authz.authorize(BOB, "kms:Encrypt", KEY, encryption_context={"t": "1", "u": "2"})


# --- grant tokens --------------------------------------------------------------------------------


def test_grant_token_names_its_grant_and_differs_every_time() -> None:
    first, second = make_grant_token(GRANT_ID), make_grant_token(GRANT_ID)
    assert first != second
    assert parse_grant_token(first) == parse_grant_token(second) == GRANT_ID


@pytest.mark.parametrize("token", ["", "x", "!!!!", make_grant_token(GRANT_ID)[:-2] + "AA", "A" * 76])
def test_malformed_or_altered_grant_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidGrantTokenException):
        parse_grant_token(token)


async def test_token_of_an_uncached_grant_allows_what_the_grant_names() -> None:
    stored = GrantView(GRANT_ID, BOB.arn, frozenset({"Encrypt"}))
    grants = FakeGrants(cached=(), stored=(stored,))
    authz = authorizer(parse_policy(default_key_policy(ACCOUNT)), grants)
    token = make_grant_token(GRANT_ID)
    decision = await authz.authorize(BOB, "kms:Encrypt", KEY, grant_tokens=[token])
    assert decision is not None
    assert decision.grant_id == GRANT_ID
    assert grants.fresh_reads == [[GRANT_ID]] and grants.invalidated == [KEY.key_id]
    with pytest.raises(AccessDeniedException):
        await authz.authorize(BOB, "kms:Decrypt", KEY, grant_tokens=[token])
    with pytest.raises(InvalidGrantTokenException):
        await authz.authorize(BOB, "kms:Encrypt", KEY, grant_tokens=["garbage"])


async def test_tokens_are_not_read_when_the_cache_allows_or_a_deny_decides() -> None:
    grant = GrantView(GRANT_ID, BOB.arn, frozenset({"Encrypt", "Decrypt"}))
    grants = FakeGrants(cached=(grant,), stored=(grant,))
    deny = {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    authz = authorizer(key_policy(allow(f"arn:aws:iam::{ACCOUNT}:root", "kms:*"), deny), grants)
    token = make_grant_token(GRANT_ID)
    await authz.authorize(BOB, "kms:Encrypt", KEY, grant_tokens=[token])
    with pytest.raises(AccessDeniedException):
        await authz.authorize(BOB, "kms:Decrypt", KEY, grant_tokens=[token])
    assert grants.fresh_reads == []


# --- grant semantics around decide() -------------------------------------------------------------

EQ = GrantConstraints(encryption_context_equals={"a": "1"})
SUB = GrantConstraints(encryption_context_subset={"a": "1"})
SRC = GrantConstraints(source_arn=f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:app")

ADMITS_CASES = [
    ("unconstrained_parent_admits_anything", None, None, True),
    ("unconstrained_parent_admits_constraints", None, SUB, True),
    ("constrained_parent_refuses_unconstrained_child", SUB, None, False),
    ("subset_admits_same_subset", SUB, SUB, True),
    ("subset_admits_wider_subset", SUB, GrantConstraints(encryption_context_subset={"a": "1", "b": "2"}), True),
    ("subset_refuses_other_subset", SUB, GrantConstraints(encryption_context_subset={"b": "2"}), False),
    ("subset_admits_equals_holding_it", SUB, GrantConstraints(encryption_context_equals={"a": "1", "b": "2"}), True),
    ("equals_admits_same_equals", EQ, EQ, True),
    ("equals_refuses_subset", EQ, SUB, False),
    ("equals_refuses_other_equals", EQ, GrantConstraints(encryption_context_equals={"a": "2"}), False),
    ("source_arn_parent_refuses_even_its_own_constraint", SRC, SRC, False),
    ("source_arn_parent_refuses_unconstrained_child", SRC, None, False),
    ("unconstrained_parent_admits_source_arn_child", None, SRC, True),
]


@pytest.mark.parametrize(
    ("parent", "child", "admitted"), [c[1:] for c in ADMITS_CASES], ids=[c[0] for c in ADMITS_CASES]
)
def test_grant_admits_only_equally_strict_or_stricter_children(
    parent: GrantConstraints | None, child: GrantConstraints | None, admitted: bool
) -> None:
    assert grant_admits(parent, child) is admitted


def test_constraints_do_not_apply_to_describe_key_and_retire_grant() -> None:
    grant = GrantView(GRANT_ID, BOB.arn, frozenset({"DescribeKey", "Encrypt"}), SUB)
    (describe,) = applicable_grants([grant], BOB.arn, "kms:describekey")
    assert describe.constraints is None
    (encrypt,) = applicable_grants([grant], BOB.arn, "kms:encrypt")
    assert encrypt.constraints is SUB
    assert applicable_grants([grant], CAROL.arn, "kms:encrypt") == ()


def test_a_source_arn_constraint_allows_nothing_but_retire_grant() -> None:
    """No request to regionkms is made on behalf of an AWS resource (no aws:SourceArn)."""
    both = GrantConstraints(encryption_context_subset={"a": "1"}, source_arn=SRC.source_arn)
    for constraints in (SRC, both):
        grant = GrantView(GRANT_ID, BOB.arn, frozenset({"DescribeKey", "Encrypt", "RetireGrant", "CreateGrant"}),
                          constraints)  # fmt: skip
        ctx = RequestContext(BOB.arn, ACCOUNT, "kms:Encrypt", KEY.arn, encryption_context={"a": "1"})
        assert not grant.permits(ctx)
        (describe,) = applicable_grants([grant], BOB.arn, "kms:describekey")
        assert describe.constraints == SRC  # the context part is dropped, SourceArn stays
        assert not describe.permits(RequestContext(BOB.arn, ACCOUNT, "kms:DescribeKey", KEY.arn))
        (retire,) = applicable_grants([grant], BOB.arn, "kms:retiregrant")
        assert retire.constraints is None
        assert not applicable_grants([grant], BOB.arn, "kms:creategrant", NewGrant(frozenset({"Encrypt"}), SRC))


def test_a_grant_to_a_service_principal_permits_no_caller() -> None:
    grant = GrantView(GRANT_ID, None, frozenset({"Encrypt"}))
    service = "logs.us-east-1.amazonaws.com"
    for ctx in (RequestContext(BOB.arn, ACCOUNT, "kms:Encrypt", KEY.arn),
                RequestContext(service, "", "kms:Encrypt", KEY.arn, principal_is_service=True)):  # fmt: skip
        assert not grant.permits(ctx)
    assert applicable_grants([grant], BOB.arn, "kms:encrypt") == ()
    assert applicable_grants([grant], service, "kms:describekey") == ()


def test_create_grant_through_a_grant_needs_a_subset_of_its_operations() -> None:
    grant = GrantView(GRANT_ID, BOB.arn, frozenset({"Encrypt", "CreateGrant"}))
    assert applicable_grants([grant], BOB.arn, "kms:creategrant", NewGrant(frozenset({"Encrypt"}), None))
    assert not applicable_grants([grant], BOB.arn, "kms:creategrant", NewGrant(frozenset({"Decrypt"}), None))
    assert not applicable_grants([grant], BOB.arn, "kms:creategrant")


@pytest.mark.parametrize(
    ("action", "allowed"), [("kms:Encrypt", True), ("kms:DescribeKey", True), ("kms:DisableKey", False),
                            ("kms:PutKeyPolicy", False), ("kms:ScheduleKeyDeletion", False)],
)  # fmt: skip
def test_only_cross_account_operations_reach_another_accounts_key(action: str, allowed: bool) -> None:
    policy = key_policy(allow(CAROL.arn, "kms:*"))
    identity = parse_policy(
        json.dumps({"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}}), PolicyKind.IDENTITY
    )
    ctx = RequestContext(CAROL.arn, OTHER, action, KEY.arn)
    decision = evaluate(principal=CAROL, key=KEY, key_policy=policy, identity=[identity], grants=[], ctx=ctx)
    assert decision.allowed is allowed


async def test_a_cached_decision_follows_the_keys_own_condition_values() -> None:
    """kms:MultiRegionKeyType describes the key: after a primary move the same key id, under the very
    same (shared) policy object, is a replica, and a decision made for the primary must not be reused."""
    key_id = "mrk-0123456789abcdef0123456789abcdef"

    def mrk(key_type: MultiRegionKeyType) -> Key:
        home = MultiRegionKey(f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}", "us-east-1")
        return Key(key_id=key_id, account=ACCOUNT, region="us-east-1", creation_date=KEY.creation_date,
                   key_state=KeyState.ENABLED, multi_region_configuration=MultiRegionConfiguration(key_type, home))

    only_replicas = allow(BOB.arn, "kms:ScheduleKeyDeletion",
                          Condition={"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}})  # fmt: skip
    authz = authorizer(key_policy(only_replicas))
    await authz.authorize(BOB, "kms:ScheduleKeyDeletion", mrk(MultiRegionKeyType.REPLICA))
    with pytest.raises(AccessDeniedException):
        await authz.authorize(BOB, "kms:ScheduleKeyDeletion", mrk(MultiRegionKeyType.PRIMARY))
    await authz.authorize(BOB, "kms:ScheduleKeyDeletion", mrk(MultiRegionKeyType.REPLICA))
    assert authz.evaluations == 2  # cached per key value, still


# --- one decision for many keys ------------------------------------------------------------------


def key_in(account: str, n: int, origin: Origin = Origin.AWS_KMS) -> Key:
    return Key(key_id=f"{n:08x}-12ab-34cd-56ef-1234567890ab", account=account, region="us-east-1",
               creation_date=KEY.creation_date, key_state=KeyState.ENABLED, origin=origin)  # fmt: skip


class KeysByKey:
    """A ``KeyPolicySource`` with a policy object per key (keys may share one, as ``KeyCache`` shares them)."""

    def __init__(self, policies: dict[str, Policy]) -> None:
        self.policies = policies

    async def key_policy(self, key: Key) -> Policy:
        return self.policies[key.key_id]


class GrantsByKey(FakeGrants):
    def __init__(self, by_key: dict[str, tuple[GrantView, ...]]) -> None:
        super().__init__()
        self.by_key = by_key

    async def grants(self, key_id: str) -> tuple[GrantView, ...]:
        return self.by_key.get(key_id, ())


def identity_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), PolicyKind.IDENTITY)


async def allowed(authz: Authorizer, who: Principal, action: str, key: Key) -> DecisionReason | None:
    try:
        decision = await authz.authorize(who, action, key)
    except AccessDeniedException:
        return None
    assert decision is not None
    return decision.reason


async def test_keys_that_share_policy_and_grants_cost_one_evaluation() -> None:
    """The first request on each of many keys with the default policy and no grants (right after a
    restart, every key preloaded) is decided from memory: one evaluation per principal and action."""
    shared = parse_policy(default_key_policy(ACCOUNT))
    keys = [key_in(ACCOUNT, n) for n in range(50)]
    iam = FakeIam({BOB.arn: (identity_policy({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}),)})
    authz = Authorizer(iam, KeysByKey({k.key_id: shared for k in keys}), FakeGrants())  # type: ignore[arg-type]
    for key in keys:
        assert await allowed(authz, BOB, "kms:Encrypt", key) is DecisionReason.ALLOWED_BY_KEY_POLICY_AND_IAM
    assert authz.evaluations == 1
    await allowed(authz, BOB, "kms:Decrypt", keys[0])
    assert authz.evaluations == 2


async def test_a_decision_for_one_key_is_not_reused_for_a_key_its_resource_list_does_not_name() -> None:
    shared = parse_policy(default_key_policy(ACCOUNT))
    first, second, third = key_in(ACCOUNT, 1), key_in(ACCOUNT, 2), key_in(ACCOUNT, 0x10000003)
    iam = FakeIam({BOB.arn: (
        identity_policy(
            {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": first.arn},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0*"},
            {"Effect": "Deny", "Action": "kms:Decrypt", "NotResource": [first.arn, third.arn]},
        ),
    )})  # fmt: skip
    authz = Authorizer(
        iam, KeysByKey({k.key_id: shared for k in (first, second, third)}), FakeGrants()  # type: ignore[arg-type]
    )
    for _ in range(2):  # the second pass is served from the memo
        assert await allowed(authz, BOB, "kms:Encrypt", first) is not None
        assert await allowed(authz, BOB, "kms:Encrypt", second) is None
        assert await allowed(authz, BOB, "kms:Encrypt", third) is None
        assert await allowed(authz, BOB, "kms:Decrypt", first) is not None
        assert await allowed(authz, BOB, "kms:Decrypt", second) is None  # the Deny: not first, not third
        assert await allowed(authz, BOB, "kms:Decrypt", third) is None  # the Allow's glob is key/0*
    assert authz.evaluations == 6


async def test_a_shared_policy_object_still_decides_each_account_and_each_keys_grants_apart() -> None:
    shared = key_policy(allow(f"arn:aws:iam::{ACCOUNT}:root", "kms:*"), allow(BOB.arn, "kms:Encrypt"))
    mine, other, granted = key_in(ACCOUNT, 1), key_in(OTHER, 2), key_in(ACCOUNT, 3)
    grant = GrantView(GRANT_ID, BOB.arn, frozenset({"Decrypt"}))
    authz = Authorizer(
        FakeIam(), KeysByKey({k.key_id: shared for k in (mine, other, granted)}),  # type: ignore[arg-type]
        GrantsByKey({granted.key_id: (grant,)}),
    )  # fmt: skip
    for _ in range(2):
        assert await allowed(authz, BOB, "kms:Encrypt", mine) is DecisionReason.ALLOWED_BY_KEY_POLICY
        # the same policy object on another account's key: BOB is named, but of another account
        # a cross-account Allow needs his own IAM too, and he has none
        assert await allowed(authz, BOB, "kms:Encrypt", other) is None
        assert await allowed(authz, BOB, "kms:Decrypt", mine) is None
        assert await allowed(authz, BOB, "kms:Decrypt", granted) is DecisionReason.ALLOWED_BY_GRANT


async def test_a_policy_change_on_one_of_the_keys_sharing_a_policy_is_seen_by_its_next_request() -> None:
    shared = key_policy(allow(BOB.arn, "kms:Encrypt"))
    first, second = key_in(ACCOUNT, 1), key_in(ACCOUNT, 2)
    keys = KeysByKey({first.key_id: shared, second.key_id: shared})
    authz = Authorizer(FakeIam(), keys, FakeGrants())  # type: ignore[arg-type]
    assert await allowed(authz, BOB, "kms:Encrypt", first) is not None
    assert await allowed(authz, BOB, "kms:Encrypt", second) is not None
    keys.policies[second.key_id] = key_policy(allow(BOB.arn, "kms:Decrypt"))  # a reload after PutKeyPolicy
    assert await allowed(authz, BOB, "kms:Encrypt", second) is None
    assert await allowed(authz, BOB, "kms:Encrypt", first) is not None
    keys.policies[first.key_id] = keys.policies[second.key_id]
    assert await allowed(authz, BOB, "kms:Encrypt", first) is None


def _random_statement(rng: random.Random, keys: Sequence[Key], *, with_principal: bool) -> dict[str, Any]:
    resources = [
        "*", rng.choice(keys).arn, f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*", f"arn:aws:kms:*:{OTHER}:key/*",
        "arn:aws:kms:us-east-1:*:key/0000000?-*", f"arn:aws:kms:us-west-2:{ACCOUNT}:key/*",
    ]  # fmt: skip
    statement: dict[str, Any] = {
        "Effect": rng.choice(["Allow", "Allow", "Deny"]),
        "Action": rng.choice(["kms:*", "kms:Encrypt", ["kms:Decrypt", "kms:Encrypt"], "kms:Describe*"]),
    }
    listed = rng.sample(resources, rng.randint(1, 2))
    statement["NotResource" if rng.random() < 0.2 else "Resource"] = listed
    if with_principal:
        statement["Principal"] = {"AWS": rng.choice(
            [f"arn:aws:iam::{ACCOUNT}:root", BOB.arn, CAROL.arn, f"arn:aws:iam::{OTHER}:root", "*"]
        )}  # fmt: skip
    if rng.random() < 0.25:
        statement["Condition"] = {"StringEquals": {"kms:KeyOrigin": rng.choice(["AWS_KMS", "EXTERNAL"])}}
    return statement


@pytest.mark.parametrize("seed", range(40))
async def test_a_warm_memo_decides_every_key_as_a_fresh_evaluation_does(seed: int) -> None:
    """Many keys sharing policy objects (some in another account, some with grants, two origins),
    random key and identity policies naming keys by ARN, glob and NotResource, requests in random
    order: every answer of one long-lived authorizer is the answer of a fresh one (no memo)."""
    rng = random.Random(seed)
    keys = [
        key_in(rng.choice([ACCOUNT, ACCOUNT, OTHER]), n, rng.choice([Origin.AWS_KMS, Origin.EXTERNAL]))
        for n in range(12)
    ]
    policies = [
        key_policy(*(_random_statement(rng, keys, with_principal=True) for _ in range(rng.randint(1, 4))))
        for _ in range(3)
    ]
    key_policies = KeysByKey({k.key_id: rng.choice(policies) for k in keys})
    iam = FakeIam({
        who.arn: tuple(
            identity_policy(*(_random_statement(rng, keys, with_principal=False) for _ in range(rng.randint(1, 3))))
            for _ in range(rng.randint(0, 2))
        )
        for who in (BOB, CAROL)
    })  # fmt: skip
    grants = GrantsByKey({
        k.key_id: (GrantView(GRANT_ID, rng.choice([BOB, CAROL]).arn, frozenset({"Encrypt"})),)
        for k in rng.sample(keys, 3)
    })  # fmt: skip
    warm = Authorizer(iam, key_policies, grants)  # type: ignore[arg-type]
    for _ in range(150):
        who, key = rng.choice([BOB, CAROL]), rng.choice(keys)
        action = rng.choice(["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"])
        fresh = Authorizer(iam, key_policies, grants)  # type: ignore[arg-type]
        expected = await allowed(fresh, who, action, key)
        assert await allowed(warm, who, action, key) is expected, (who.arn, action, key.arn)
    assert warm.evaluations < 150  # the memo was used
