"""AWS KMS's combination of key policy, IAM policies and grants, and the policy templates."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from regiond.domain.decision import (
    DecidingStatement,
    Decision,
    DecisionReason,
    GrantConstraints,
    GrantView,
    PolicySource,
    aws_managed_key_policy,
    decide,
    default_key_policy,
    key_administrators_statement,
    key_users_grants_statement,
    key_users_statement,
    lockout_check,
    policy_document,
)
from regiond.domain.policy import Policy, PolicyKind, RequestContext, StatementRef, parse_policy

ACCOUNT = "111122223333"
OTHER = "444455556666"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/key-admin"
APP = f"arn:aws:iam::{ACCOUNT}:role/app"
CAROL = f"arn:aws:iam::{OTHER}:user/carol"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/ffffffff-12ab-34cd-56ef-1234567890ab"


def key_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy(policy_document(statements))


def identity_policy(*statements: dict[str, Any]) -> Policy:
    return parse_policy(policy_document(statements), PolicyKind.IDENTITY)


def allow(principal: Any, action: Any = "kms:*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*", **extra}


def deny(principal: Any, action: Any = "kms:*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Principal": principal, "Action": action, "Resource": "*", **extra}


def iam_allow(action: Any = "kms:*", resource: Any = KEY_ARN, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def iam_deny(action: Any = "kms:*", resource: Any = "*") -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


def request(
    principal: str = ALICE,
    action: str = "kms:Encrypt",
    *,
    encryption_context: dict[str, str] | None = None,
    values: Mapping[str, tuple[str, ...]] | None = None,
) -> RequestContext:
    account = principal.split(":")[4] if principal.startswith("arn:") else ""
    return RequestContext(
        principal_arn=principal,
        principal_account=account,
        action=action,
        resource_arn=KEY_ARN,
        values=values or {},
        encryption_context=encryption_context or {},
        principal_is_service=not principal.startswith("arn:"),
    )


def run(
    kp: Policy,
    ctx: RequestContext,
    identity: Sequence[Policy] = (),
    grants: Sequence[GrantView] = (),
) -> Decision:
    return decide(key_policy=kp, key_account=ACCOUNT, identity_policies=identity, grants=grants, ctx=ctx)


DELEGATING = key_policy(allow({"AWS": ROOT}))


# --- key policy and IAM ----------------------------------------------------------------------------


def test_same_account_user_is_allowed_via_root_delegation_when_iam_allows() -> None:
    decision = run(DELEGATING, request(), [identity_policy({"Sid": "UseKey", **iam_allow("kms:Encrypt")})])
    assert decision.allowed
    assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY_AND_IAM
    assert decision.statements == (
        DecidingStatement(PolicySource.KEY_POLICY, 0, StatementRef(0, None)),
        DecidingStatement(PolicySource.IDENTITY_POLICY, 0, StatementRef(0, "UseKey")),
    )


def test_same_account_user_is_denied_via_root_delegation_without_iam_allow() -> None:
    decision = run(DELEGATING, request())
    assert not decision.allowed
    assert decision.reason is DecisionReason.IAM_DOES_NOT_ALLOW


def test_iam_allow_for_another_key_does_not_count() -> None:
    decision = run(DELEGATING, request(), [identity_policy(iam_allow(resource=OTHER_KEY_ARN))])
    assert decision.reason is DecisionReason.IAM_DOES_NOT_ALLOW


def test_iam_allow_for_another_action_does_not_count() -> None:
    assert not run(DELEGATING, request(), [identity_policy(iam_allow("kms:Decrypt"))]).allowed


def test_iam_allow_in_any_of_several_identity_policies_counts() -> None:
    policies = [identity_policy(iam_allow("kms:Decrypt")), identity_policy(iam_allow("kms:Encrypt"))]
    decision = run(DELEGATING, request(), policies)
    assert decision.allowed
    assert decision.statements[-1] == DecidingStatement(
        PolicySource.IDENTITY_POLICY, 1, StatementRef(0, None)
    )


def test_key_policy_naming_the_principal_allows_without_iam() -> None:
    decision = run(key_policy(allow({"AWS": ALICE}, "kms:Encrypt")), request())
    assert decision.allowed
    assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY


def test_key_policy_star_allows_same_account_principal_without_iam() -> None:
    assert (
        run(key_policy(allow("*", "kms:Encrypt")), request()).reason is DecisionReason.ALLOWED_BY_KEY_POLICY
    )


def test_key_policy_not_naming_the_principal_denies_even_with_iam_allow() -> None:
    decision = run(key_policy(allow({"AWS": BOB})), request(), [identity_policy(iam_allow())])
    assert not decision.allowed
    assert decision.reason is DecisionReason.KEY_POLICY_DOES_NOT_ALLOW
    assert decision.statements == ()


def test_account_root_is_allowed_by_a_statement_naming_the_root() -> None:
    decision = run(DELEGATING, request(ROOT, "kms:PutKeyPolicy"))
    assert decision.allowed
    assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY


def test_account_root_is_denied_when_the_key_policy_omits_it() -> None:
    assert not run(key_policy(allow({"AWS": ALICE})), request(ROOT)).allowed


# --- cross-account -------------------------------------------------------------------------------


def test_cross_account_principal_is_denied_with_key_policy_allow_alone() -> None:
    decision = run(key_policy(allow({"AWS": OTHER_ROOT}, "kms:Decrypt")), request(CAROL, "kms:Decrypt"))
    assert not decision.allowed
    assert decision.reason is DecisionReason.IAM_DOES_NOT_ALLOW


def test_cross_account_principal_is_allowed_with_key_policy_and_its_own_iam() -> None:
    decision = run(
        key_policy(allow({"AWS": OTHER}, "kms:Decrypt")),
        request(CAROL, "kms:Decrypt"),
        [identity_policy(iam_allow("kms:Decrypt"))],
    )
    assert decision.allowed
    assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY_AND_IAM


def test_cross_account_principal_named_directly_still_needs_its_iam() -> None:
    kp = key_policy(allow({"AWS": CAROL}, "kms:Decrypt"))
    assert not run(kp, request(CAROL, "kms:Decrypt")).allowed
    assert run(kp, request(CAROL, "kms:Decrypt"), [identity_policy(iam_allow("kms:Decrypt"))]).allowed


def test_cross_account_principal_with_key_policy_star_still_needs_its_iam() -> None:
    assert not run(key_policy(allow("*", "kms:Decrypt")), request(CAROL, "kms:Decrypt")).allowed


def test_cross_account_iam_allow_alone_is_not_enough() -> None:
    decision = run(DELEGATING, request(CAROL, "kms:Decrypt"), [identity_policy(iam_allow("kms:Decrypt"))])
    assert not decision.allowed
    assert decision.reason is DecisionReason.KEY_POLICY_DOES_NOT_ALLOW


def test_other_account_root_named_by_key_policy_needs_no_identity_policy() -> None:
    decision = run(key_policy(allow({"AWS": OTHER_ROOT}, "kms:Decrypt")), request(OTHER_ROOT, "kms:Decrypt"))
    assert decision.allowed
    assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY_AND_IAM


# --- explicit deny -------------------------------------------------------------------------------


def test_explicit_deny_in_key_policy_beats_direct_allow() -> None:
    kp = key_policy(allow({"AWS": ALICE}), {"Sid": "NoEncrypt", **deny("*", "kms:Encrypt")})
    decision = run(kp, request())
    assert not decision.allowed
    assert decision.reason is DecisionReason.EXPLICIT_DENY
    assert decision.statements == (
        DecidingStatement(PolicySource.KEY_POLICY, 0, StatementRef(1, "NoEncrypt")),
    )


def test_explicit_deny_in_identity_policy_beats_direct_key_policy_allow() -> None:
    decision = run(key_policy(allow({"AWS": ALICE})), request(), [identity_policy(iam_deny("kms:Encrypt"))])
    assert decision.reason is DecisionReason.EXPLICIT_DENY
    assert decision.statements[0].source is PolicySource.IDENTITY_POLICY


def test_explicit_deny_beats_iam_allow() -> None:
    identity = [identity_policy(iam_allow()), identity_policy(iam_deny("kms:Encrypt"))]
    assert run(DELEGATING, request(), identity).reason is DecisionReason.EXPLICIT_DENY


def test_explicit_deny_beats_grant() -> None:
    grant = GrantView("g-1", ALICE, frozenset({"Encrypt"}))
    kp = key_policy(allow({"AWS": ROOT}), deny({"AWS": ALICE}, "kms:Encrypt"))
    decision = run(kp, request(), grants=[grant])
    assert not decision.allowed
    assert decision.reason is DecisionReason.EXPLICIT_DENY
    assert decision.grant_id is None


def test_conditional_deny_applies_only_when_its_condition_holds() -> None:
    kp = key_policy(
        allow({"AWS": ALICE}),
        deny("*", Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
    )
    assert run(kp, request(values={"aws:SourceIp": ("10.1.1.1",)})).allowed
    assert not run(kp, request(values={"aws:SourceIp": ("192.0.2.1",)})).allowed


# --- grants --------------------------------------------------------------------------------------


def test_grant_allows_its_grantee_without_key_policy_or_iam() -> None:
    grant = GrantView("g-1", APP, frozenset({"Decrypt", "Encrypt"}))
    decision = run(DELEGATING, request(APP), grants=[grant])
    assert decision.allowed
    assert decision.reason is DecisionReason.ALLOWED_BY_GRANT
    assert decision.grant_id == "g-1"


def test_grant_allows_a_cross_account_grantee_without_iam() -> None:
    grant = GrantView("g-2", CAROL, frozenset({"Decrypt"}))
    assert run(DELEGATING, request(CAROL, "kms:Decrypt"), grants=[grant]).allowed


def test_grant_does_not_allow_another_principal() -> None:
    grant = GrantView("g-1", APP, frozenset({"Encrypt"}))
    assert not run(DELEGATING, request(BOB), grants=[grant]).allowed


def test_grant_does_not_allow_an_operation_it_does_not_list() -> None:
    grant = GrantView("g-1", APP, frozenset({"Decrypt"}))
    assert not run(DELEGATING, request(APP, "kms:Encrypt"), grants=[grant]).allowed


def test_key_policy_allow_is_reported_before_a_grant() -> None:
    grant = GrantView("g-1", ALICE, frozenset({"Encrypt"}))
    decision = run(key_policy(allow({"AWS": ALICE})), request(), grants=[grant])
    assert decision.reason is DecisionReason.ALLOWED_BY_KEY_POLICY


CONSTRAINT_CASES = [
    # id, constraints, request encryption context, allowed?
    ("equals_exact", GrantConstraints(encryption_context_equals={"app": "pay"}), {"app": "pay"}, True),
    (
        "equals_extra_pair",
        GrantConstraints(encryption_context_equals={"app": "pay"}),
        {"app": "pay", "x": "1"},
        False,
    ),
    (
        "equals_missing_pair",
        GrantConstraints(encryption_context_equals={"app": "pay", "x": "1"}),
        {"app": "pay"},
        False,
    ),
    (
        "equals_is_case_sensitive",
        GrantConstraints(encryption_context_equals={"app": "pay"}),
        {"App": "pay"},
        False,
    ),
    ("equals_empty_matches_empty", GrantConstraints(encryption_context_equals={}), {}, True),
    (
        "subset_with_extra_pairs",
        GrantConstraints(encryption_context_subset={"app": "pay"}),
        {"app": "pay", "x": "1"},
        True,
    ),
    (
        "subset_wrong_value",
        GrantConstraints(encryption_context_subset={"app": "pay"}),
        {"app": "billing"},
        False,
    ),
    ("subset_missing_key", GrantConstraints(encryption_context_subset={"app": "pay"}), {}, False),
    (
        "both_must_hold",
        GrantConstraints(
            encryption_context_equals={"app": "pay"}, encryption_context_subset={"app": "other"}
        ),
        {"app": "pay"},
        False,
    ),
    ("no_constraints", None, {"anything": "goes"}, True),
]


@pytest.mark.parametrize(
    ("constraints", "context", "allowed"),
    [case[1:] for case in CONSTRAINT_CASES],
    ids=[case[0] for case in CONSTRAINT_CASES],
)
def test_grant_encryption_context_constraints(
    constraints: GrantConstraints | None, context: dict[str, str], allowed: bool
) -> None:
    grant = GrantView("g-1", APP, frozenset({"Decrypt"}), constraints)
    decision = run(DELEGATING, request(APP, "kms:Decrypt", encryption_context=context), grants=[grant])
    assert decision.allowed is allowed


# --- service principals and argument checks ------------------------------------------------------


def test_service_principal_is_allowed_by_key_policy_alone() -> None:
    kp = key_policy(allow({"Service": "logs.amazonaws.com"}, "kms:GenerateDataKey*"))
    assert run(kp, request("logs.amazonaws.com", "kms:GenerateDataKey")).allowed
    assert not run(kp, request("logs.amazonaws.com", "kms:Decrypt")).allowed


def test_decide_rejects_policies_of_the_wrong_kind() -> None:
    with pytest.raises(ValueError, match="key_policy"):
        run(identity_policy(iam_allow()), request())
    with pytest.raises(ValueError, match="identity_policies"):
        run(DELEGATING, request(), [DELEGATING])


# --- lockout check -------------------------------------------------------------------------------


def lockout(kp: Policy, caller: str, identity: Sequence[Policy] = (), **values: tuple[str, ...]) -> bool:
    return lockout_check(
        kp, caller_arn=caller, caller_account=caller.split(":")[4], key_arn=KEY_ARN, key_account=ACCOUNT,
        identity_policies=identity, values={k.replace("_", ":", 1): v for k, v in values.items()},
    )  # fmt: skip


def test_lockout_check_passes_for_the_default_policy_when_iam_allows_put_key_policy() -> None:
    """AWS: the caller "can get kms:PutKeyPolicy permission for the KMS key from an IAM policy"."""
    default = parse_policy(default_key_policy(ACCOUNT))
    assert lockout(default, ALICE, [identity_policy(iam_allow("kms:PutKeyPolicy"))])
    assert lockout(default, ALICE, [identity_policy(iam_allow("kms:*", "*"))])


def test_lockout_check_fails_for_the_default_policy_without_the_callers_iam_permission() -> None:
    """Issue 13 finding 11: the account-root statement delegates to IAM, so it counts only with the
    caller's own IAM permission for kms:PutKeyPolicy on this key."""
    default = parse_policy(default_key_policy(ACCOUNT))
    assert not lockout(default, ALICE)
    assert not lockout(default, ALICE, [identity_policy(iam_allow("kms:Encrypt"))])
    assert not lockout(default, ALICE, [identity_policy(iam_allow("kms:PutKeyPolicy", OTHER_KEY_ARN))])
    assert not lockout(default, ALICE, [identity_policy(iam_allow(), iam_deny("kms:PutKeyPolicy"))])


def test_lockout_check_passes_for_the_account_root_under_the_default_policy() -> None:
    assert lockout(parse_policy(default_key_policy(ACCOUNT)), ROOT)


def test_lockout_check_fails_when_the_new_policy_omits_the_caller() -> None:
    assert not lockout(key_policy(allow({"AWS": BOB})), ALICE, [identity_policy(iam_allow())])


def test_lockout_check_fails_when_the_caller_keeps_only_other_actions() -> None:
    assert not lockout(key_policy(allow({"AWS": ALICE}, "kms:Encrypt")), ALICE, [identity_policy(iam_allow())])


def test_lockout_check_fails_when_put_key_policy_is_denied() -> None:
    kp = key_policy(allow({"AWS": ROOT}), deny("*", "kms:PutKeyPolicy"))
    assert not lockout(kp, ROOT)


def test_lockout_check_passes_for_a_key_administrator() -> None:
    kp = key_policy(key_administrators_statement([ADMIN]))
    assert lockout(kp, ADMIN)
    assert not lockout(kp, APP)


def test_lockout_check_sees_the_requests_global_values() -> None:
    kp = key_policy(allow({"AWS": ALICE}, Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    assert lockout(kp, ALICE, aws_SourceIp=("10.1.2.3",))
    assert not lockout(kp, ALICE, aws_SourceIp=("192.0.2.1",))
    assert not lockout(kp, ALICE)


# --- templates -----------------------------------------------------------------------------------


def test_default_key_policy_is_the_aws_document() -> None:
    document = json.loads(default_key_policy(ACCOUNT))
    assert document["Version"] == "2012-10-17"
    assert document["Statement"] == [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": ROOT},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]


def test_default_key_policy_delegates_to_iam() -> None:
    kp = parse_policy(default_key_policy(ACCOUNT))
    assert run(kp, request(ALICE, "kms:ScheduleKeyDeletion"), [identity_policy(iam_allow())]).allowed
    assert not run(kp, request(ALICE, "kms:ScheduleKeyDeletion")).allowed


def test_templates_reject_a_malformed_account_id() -> None:
    with pytest.raises(ValueError, match="12 digits"):
        default_key_policy("1234")


AWS_MANAGED = parse_policy(aws_managed_key_policy(ACCOUNT, "ebs", "us-east-1"))
VIA_EBS = {"kms:ViaService": ("ebs.us-east-1.amazonaws.com",)}


def test_aws_managed_key_is_usable_through_its_service_by_any_account_principal() -> None:
    assert run(AWS_MANAGED, request(BOB, "kms:GenerateDataKeyWithoutPlaintext", values=VIA_EBS)).allowed


def test_aws_managed_key_is_not_usable_directly() -> None:
    assert not run(
        AWS_MANAGED, request(BOB, "kms:Decrypt"), [identity_policy(iam_allow("kms:Decrypt"))]
    ).allowed


def test_aws_managed_key_is_not_usable_through_the_service_in_another_region() -> None:
    values = {"kms:ViaService": ("ebs.eu-west-1.amazonaws.com",)}
    assert not run(AWS_MANAGED, request(BOB, "kms:Decrypt", values=values)).allowed


def test_aws_managed_key_is_not_usable_by_another_account() -> None:
    decision = run(AWS_MANAGED, request(CAROL, "kms:Decrypt", values=VIA_EBS), [identity_policy(iam_allow())])
    assert not decision.allowed


def test_aws_managed_key_metadata_is_readable_through_iam() -> None:
    assert run(AWS_MANAGED, request(BOB, "kms:GetKeyRotationStatus"), [identity_policy(iam_allow())]).allowed
    assert not run(AWS_MANAGED, request(BOB, "kms:PutKeyPolicy"), [identity_policy(iam_allow())]).allowed


CONSOLE_POLICY = key_policy(
    {**key_administrators_statement([ADMIN])},
    key_users_statement([APP, BOB]),
    key_users_grants_statement([APP]),
)


@pytest.mark.parametrize(
    ("principal", "action", "allowed"),
    [
        (ADMIN, "kms:PutKeyPolicy", True),
        (ADMIN, "kms:ScheduleKeyDeletion", True),
        (ADMIN, "kms:RotateKeyOnDemand", True),
        (ADMIN, "kms:TagResource", True),
        (ADMIN, "kms:Encrypt", False),
        (ADMIN, "kms:Decrypt", False),
        (ADMIN, "kms:GenerateDataKey", False),
        (APP, "kms:Encrypt", True),
        (APP, "kms:ReEncryptFrom", True),
        (APP, "kms:GenerateDataKeyPair", True),
        (BOB, "kms:DescribeKey", True),
        (APP, "kms:PutKeyPolicy", False),
        (APP, "kms:ScheduleKeyDeletion", False),
        (BOB, "kms:DisableKey", False),
    ],
)
def test_key_administrators_manage_and_key_users_use(principal: str, action: str, allowed: bool) -> None:
    assert run(CONSOLE_POLICY, request(principal, action)).allowed is allowed


def test_key_user_grants_are_only_for_aws_resources() -> None:
    for_resource = {"kms:GrantIsForAWSResource": ("true",)}
    assert run(CONSOLE_POLICY, request(APP, "kms:CreateGrant", values=for_resource)).allowed
    assert not run(CONSOLE_POLICY, request(APP, "kms:CreateGrant")).allowed
    assert not run(CONSOLE_POLICY, request(BOB, "kms:CreateGrant", values=for_resource)).allowed


def test_statement_templates_name_a_single_principal_as_a_string() -> None:
    assert key_users_statement([APP])["Principal"] == {"AWS": APP}
    assert key_users_statement([APP, BOB])["Principal"] == {"AWS": [APP, BOB]}
    with pytest.raises(ValueError, match="at least one principal"):
        key_administrators_statement([])
