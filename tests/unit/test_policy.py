"""The policy language: parsing (strict) and evaluation (AWS semantics), table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from regiond.domain.policy import (
    MAX_POLICY_BYTES,
    Evaluation,
    PolicyKind,
    RequestContext,
    StatementRef,
    parse_policy,
    parse_policy_for_write,
)
from regiond.errors import MalformedPolicyDocumentException

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def doc(*statements: dict[str, Any], **top: Any) -> str:
    return json.dumps({"Version": "2012-10-17", **top, "Statement": list(statements)})


def ctx(
    *,
    principal: str = ALICE,
    account: str = ACCOUNT,
    action: str = "kms:Encrypt",
    resource: str = KEY_ARN,
    values: dict[str, tuple[str, ...]] | None = None,
    encryption_context: dict[str, str] | None = None,
    service: bool = False,
) -> RequestContext:
    return RequestContext(
        principal_arn=principal,
        principal_account=account,
        action=action,
        resource_arn=resource,
        values=values or {},
        encryption_context=encryption_context or {},
        principal_is_service=service,
    )


def evaluate_identity(statement: dict[str, Any], request: RequestContext) -> Evaluation:
    base = {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}
    return parse_policy(doc({**base, **statement}), PolicyKind.IDENTITY).evaluate(request)


# --- conditions ----------------------------------------------------------------------------------

CONDITION_CASES: list[tuple[str, dict[str, Any], dict[str, tuple[str, ...]], bool]] = [
    # id, Condition block, request values, allowed?
    (
        "string_equals_match",
        {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
        {"kms:viaservice": ("s3.us-east-1.amazonaws.com",)},
        True,
    ),
    (
        "string_equals_mismatch",
        {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
        {"kms:viaservice": ("ec2.us-east-1.amazonaws.com",)},
        False,
    ),
    (
        "string_equals_is_case_sensitive_on_values",
        {"StringEquals": {"kms:RequestAlias": "alias/App"}},
        {"kms:requestalias": ("alias/app",)},
        False,
    ),
    (
        "string_equals_values_are_ored",
        {"StringEquals": {"kms:RequestAlias": ["alias/a", "alias/b"]}},
        {"kms:requestalias": ("alias/b",)},
        True,
    ),
    ("string_equals_missing_key_is_false", {"StringEquals": {"kms:RequestAlias": "alias/a"}}, {}, False),
    (
        "condition_key_names_are_case_insensitive",
        {"StringEquals": {"KMS:requestALIAS": "alias/a"}},
        {"kms:RequestAlias": ("alias/a",)},
        True,
    ),
    (
        "string_not_equals_different_value",
        {"StringNotEquals": {"kms:RequestAlias": "alias/a"}},
        {"kms:requestalias": ("alias/b",)},
        True,
    ),
    (
        "string_not_equals_same_value",
        {"StringNotEquals": {"kms:RequestAlias": "alias/a"}},
        {"kms:requestalias": ("alias/a",)},
        False,
    ),
    ("string_not_equals_missing_key_is_true", {"StringNotEquals": {"kms:RequestAlias": "alias/a"}}, {}, True),
    (
        "string_not_equals_multivalued_without_qualifier_needs_no_hit",
        {"StringNotEquals": {"kms:ResourceAliases": "alias/a"}},
        {"kms:resourcealiases": ("alias/b", "alias/a")},
        False,
    ),
    (
        "string_equals_ignore_case",
        {"StringEqualsIgnoreCase": {"kms:RequestAlias": "ALIAS/App"}},
        {"kms:requestalias": ("alias/app",)},
        True,
    ),
    (
        "string_not_equals_ignore_case",
        {"StringNotEqualsIgnoreCase": {"kms:RequestAlias": "ALIAS/App"}},
        {"kms:requestalias": ("alias/app",)},
        False,
    ),
    (
        "string_like_star",
        {"StringLike": {"kms:RequestAlias": "alias/team-*"}},
        {"kms:requestalias": ("alias/team-blue",)},
        True,
    ),
    (
        "string_like_question_mark",
        {"StringLike": {"kms:RequestAlias": "alias/v?"}},
        {"kms:requestalias": ("alias/v10",)},
        False,
    ),
    (
        "string_like_is_case_sensitive",
        {"StringLike": {"kms:RequestAlias": "alias/Team-*"}},
        {"kms:requestalias": ("alias/team-blue",)},
        False,
    ),
    (
        "string_not_like",
        {"StringNotLike": {"kms:RequestAlias": "alias/team-*"}},
        {"kms:requestalias": ("alias/other",)},
        True,
    ),
    ("numeric_equals", {"NumericEquals": {"kms:GrantCount": "5"}}, {"kms:grantcount": ("5.0",)}, True),
    (
        "numeric_equals_json_number",
        {"NumericEquals": {"kms:GrantCount": 5}},
        {"kms:grantcount": ("5",)},
        True,
    ),
    ("numeric_not_equals", {"NumericNotEquals": {"kms:GrantCount": "5"}}, {"kms:grantcount": ("6",)}, True),
    ("numeric_less_than", {"NumericLessThan": {"kms:GrantCount": "5"}}, {"kms:grantcount": ("5",)}, False),
    (
        "numeric_less_than_equals",
        {"NumericLessThanEquals": {"kms:GrantCount": "5"}},
        {"kms:grantcount": ("5",)},
        True,
    ),
    (
        "numeric_greater_than",
        {"NumericGreaterThan": {"kms:GrantCount": "5"}},
        {"kms:grantcount": ("7",)},
        True,
    ),
    (
        "numeric_greater_than_equals",
        {"NumericGreaterThanEquals": {"kms:GrantCount": "5"}},
        {"kms:grantcount": ("4",)},
        False,
    ),
    (
        "numeric_unreadable_request_value_is_false",
        {"NumericNotEquals": {"kms:GrantCount": "5"}},
        {"kms:grantcount": ("many",)},
        False,
    ),
    (
        "date_equals_iso_and_epoch",
        {"DateEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
        {"aws:currenttime": ("1704067200",)},
        True,
    ),
    (
        "date_not_equals",
        {"DateNotEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
        {"aws:currenttime": ("2024-01-02T00:00:00Z",)},
        True,
    ),
    (
        "date_less_than",
        {"DateLessThan": {"aws:CurrentTime": "2025-01-01T00:00:00Z"}},
        {"aws:currenttime": ("2024-06-01T12:00:00Z",)},
        True,
    ),
    (
        "date_less_than_equals",
        {"DateLessThanEquals": {"aws:CurrentTime": "2024-01-01"}},
        {"aws:currenttime": ("2024-01-01T00:00:00+00:00",)},
        True,
    ),
    (
        "date_greater_than",
        {"DateGreaterThan": {"aws:CurrentTime": "2025-01-01T00:00:00Z"}},
        {"aws:currenttime": ("2024-06-01T12:00:00Z",)},
        False,
    ),
    (
        "date_greater_than_equals_with_offset",
        {"DateGreaterThanEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
        {"aws:currenttime": ("2024-01-01T01:00:00+01:00",)},
        True,
    ),
    ("bool_true", {"Bool": {"aws:SecureTransport": "true"}}, {"aws:securetransport": ("true",)}, True),
    ("bool_json_false", {"Bool": {"aws:SecureTransport": False}}, {"aws:securetransport": ("true",)}, False),
    (
        "bool_case_insensitive",
        {"Bool": {"kms:GrantIsForAWSResource": "TRUE"}},
        {"kms:grantisforawsresource": ("true",)},
        True,
    ),
    (
        "ip_address_in_cidr",
        {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:sourceip": ("10.1.2.3",)},
        True,
    ),
    (
        "ip_address_outside_cidr",
        {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}},
        {"aws:sourceip": ("172.16.0.1",)},
        False,
    ),
    (
        "ip_address_ipv6",
        {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}},
        {"aws:sourceip": ("2001:db8::1",)},
        True,
    ),
    (
        "ip_address_single_host",
        {"IpAddress": {"aws:SourceIp": "203.0.113.7"}},
        {"aws:sourceip": ("203.0.113.7",)},
        True,
    ),
    (
        "not_ip_address",
        {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:sourceip": ("172.16.0.1",)},
        True,
    ),
    (
        "not_ip_address_unreadable_ip_is_false",
        {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:sourceip": ("not-an-ip",)},
        False,
    ),
    ("arn_equals", {"ArnEquals": {"aws:PrincipalArn": ALICE}}, {}, True),
    ("arn_like_wildcard_account", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/al*"}}, {}, True),
    (
        "arn_like_star_does_not_cross_colons",
        {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/alice"}},
        {"aws:principalarn": (f"arn:aws:iam::{ACCOUNT}:x:user/alice",)},
        False,
    ),
    ("arn_not_equals", {"ArnNotEquals": {"aws:PrincipalArn": BOB}}, {}, True),
    ("arn_not_like", {"ArnNotLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/*"}}, {}, False),
    ("null_true_when_key_missing", {"Null": {"kms:RequestAlias": "true"}}, {}, True),
    (
        "null_true_when_key_present",
        {"Null": {"kms:RequestAlias": "true"}},
        {"kms:requestalias": ("alias/a",)},
        False,
    ),
    (
        "null_false_when_key_present",
        {"Null": {"kms:RequestAlias": False}},
        {"kms:requestalias": ("alias/a",)},
        True,
    ),
    (
        "if_exists_missing_key_is_true",
        {"StringEqualsIfExists": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
        {},
        True,
    ),
    (
        "if_exists_present_key_is_the_operator",
        {"StringEqualsIfExists": {"kms:ViaService": "s3.amazonaws.com"}},
        {"kms:viaservice": ("ec2.amazonaws.com",)},
        False,
    ),
    ("numeric_if_exists_missing", {"NumericLessThanIfExists": {"kms:GrantCount": "3"}}, {}, True),
    (
        "ip_if_exists_present",
        {"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:sourceip": ("10.9.9.9",)},
        True,
    ),
    (
        "for_any_value_one_matches",
        {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["a", "b"]}},
        {"kms:encryptioncontextkeys": ("z", "b")},
        True,
    ),
    (
        "for_any_value_none_matches",
        {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["a", "b"]}},
        {"kms:encryptioncontextkeys": ("y", "z")},
        False,
    ),
    (
        "for_any_value_missing_key_is_false",
        {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "a"}},
        {},
        False,
    ),
    (
        "for_any_value_string_not_equals",
        {"ForAnyValue:StringNotEquals": {"kms:GrantOperations": "Decrypt"}},
        {"kms:grantoperations": ("Decrypt", "Encrypt")},
        True,
    ),
    (
        "for_all_values_all_listed",
        {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]}},
        {"kms:grantoperations": ("Decrypt",)},
        True,
    ),
    (
        "for_all_values_one_unlisted",
        {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}},
        {"kms:grantoperations": ("Decrypt", "CreateGrant")},
        False,
    ),
    (
        "for_all_values_missing_key_is_true",
        {"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}},
        {},
        True,
    ),
    (
        "for_all_values_empty_key_is_true",
        {"ForAllValues:StringLike": {"kms:GrantOperations": ["Decrypt*"]}},
        {"kms:grantoperations": ()},
        True,
    ),
    (
        "for_all_values_string_not_equals",
        {"ForAllValues:StringNotEquals": {"kms:GrantOperations": "CreateGrant"}},
        {"kms:grantoperations": ("Decrypt", "Encrypt")},
        True,
    ),
    (
        "for_all_values_string_not_equals_hit",
        {"ForAllValues:StringNotEquals": {"kms:GrantOperations": "Encrypt"}},
        {"kms:grantoperations": ("Decrypt", "Encrypt")},
        False,
    ),
    (
        "for_any_value_if_exists_missing",  # (kms:ResourceAliases, unknown when absent, fails closed instead)
        {"ForAnyValue:StringLikeIfExists": {"kms:GrantOperations": "Decrypt*"}},
        {},
        True,
    ),
    (
        "keys_in_one_operator_are_anded",
        {"StringEquals": {"kms:CallerAccount": ACCOUNT, "kms:ViaService": "s3.us-east-1.amazonaws.com"}},
        {"kms:viaservice": ("ec2.us-east-1.amazonaws.com",)},
        False,
    ),
    (
        "operators_are_anded",
        {"StringEquals": {"kms:CallerAccount": ACCOUNT}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:sourceip": ("10.0.0.1",)},
        True,
    ),
    (
        "operators_are_anded_one_fails",
        {"StringEquals": {"kms:CallerAccount": ACCOUNT}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        {"aws:sourceip": ("11.0.0.1",)},
        False,
    ),
    (
        "caller_account_is_derived_from_the_principal",
        {"StringEquals": {"kms:CallerAccount": OTHER_ACCOUNT}},
        {},
        False,
    ),
    ("policy_variables_are_literal", {"StringEquals": {"aws:PrincipalArn": "${aws:username}"}}, {}, False),
    # negated operators, IfExists and qualifiers with a missing or unreadable key
    ("string_like_question_mark_matches_one_character", {"StringLike": {"kms:RequestAlias": "alias/v?"}},
     {"kms:requestalias": ("alias/v2",)}, True),
    ("string_not_like_if_exists_missing_key_is_true", {"StringNotLikeIfExists": {"kms:RequestAlias": "alias/*"}},
     {}, True),
    ("string_not_like_if_exists_present_key_is_the_operator",
     {"StringNotLikeIfExists": {"kms:RequestAlias": "alias/*"}}, {"kms:requestalias": ("alias/a",)}, False),
    ("not_ip_address_missing_key_is_true", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    ("not_ip_address_if_exists_inside_range", {"NotIpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}},
     {"aws:sourceip": ("10.0.0.1",)}, False),
    ("arn_not_equals_missing_key_is_true", {"ArnNotEquals": {"aws:SourceArn": "arn:aws:s3:::bucket"}}, {}, True),
    ("arn_like_if_exists_missing_key_is_true", {"ArnLikeIfExists": {"aws:SourceArn": "arn:aws:s3:::b*"}}, {}, True),
    ("arn_like_if_exists_present_mismatch", {"ArnLikeIfExists": {"aws:SourceArn": "arn:aws:s3:::b*"}},
     {"aws:sourcearn": ("arn:aws:s3:::other",)}, False),
    ("bool_missing_key_is_false", {"Bool": {"aws:SecureTransport": "true"}}, {}, False),
    ("bool_if_exists_missing_key_is_true", {"BoolIfExists": {"aws:SecureTransport": "true"}}, {}, True),
    ("date_if_exists_missing_key_is_true", {"DateLessThanIfExists": {"aws:CurrentTime": "2020-01-01"}}, {}, True),
    ("date_unreadable_request_value_is_false", {"DateNotEquals": {"aws:CurrentTime": "2020-01-01"}},
     {"aws:currenttime": ("yesterday",)}, False),
    ("numeric_if_exists_present_is_the_operator", {"NumericLessThanIfExists": {"kms:GrantCount": "3"}},
     {"kms:grantcount": ("3",)}, False),
    ("null_false_when_key_missing", {"Null": {"kms:RequestAlias": "false"}}, {}, False),
    ("for_any_value_string_like", {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/team-*"}},
     {"kms:resourcealiases": ("alias/x", "alias/team-a")}, True),
    ("for_all_values_string_like_every_value_matches",
     {"ForAllValues:StringLike": {"kms:EncryptionContextKeys": ["tenant*", "app"]}},
     {"kms:encryptioncontextkeys": ("tenantId", "app")}, True),
    ("for_all_values_string_equals_ignore_case",
     {"ForAllValues:StringEqualsIgnoreCase": {"kms:GrantOperations": ["decrypt", "encrypt"]}},
     {"kms:grantoperations": ("Decrypt", "ENCRYPT")}, True),
    ("for_any_value_string_not_like_all_listed_is_false",
     {"ForAnyValue:StringNotLike": {"kms:GrantOperations": "*crypt"}},
     {"kms:grantoperations": ("Encrypt", "Decrypt")}, False),
    ("for_all_values_if_exists_present_mismatch",
     {"ForAllValues:StringEqualsIfExists": {"kms:GrantOperations": "Decrypt"}},
     {"kms:grantoperations": ("Decrypt", "Encrypt")}, False),
    # the condition keys AWS KMS documents, through the evaluator
    ("encryption_context_key_string_like", {"StringLike": {"kms:EncryptionContext:tenant": "team-*"}},
     {"kms:encryptioncontext:tenant": ("team-7",)}, True),
    ("caller_account_matches_the_principal", {"StringEquals": {"kms:CallerAccount": ACCOUNT}}, {}, True),
    ("principal_account_matches_the_principal", {"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}, {}, True),
    ("via_service_missing_for_a_direct_call", {"StringLike": {"kms:ViaService": "*.amazonaws.com"}}, {}, False),
    ("grant_is_for_aws_resource_false", {"Bool": {"kms:GrantIsForAWSResource": "true"}},
     {"kms:grantisforawsresource": ("false",)}, False),
    ("secure_transport_false_denied_by_bool_true", {"Bool": {"aws:SecureTransport": "true"}},
     {"aws:securetransport": ("false",)}, False),
    ("current_time_window", {"DateGreaterThan": {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
                             "DateLessThan": {"aws:CurrentTime": "2025-01-01T00:00:00Z"}},
     {"aws:currenttime": ("2024-07-01T00:00:00Z",)}, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "values", "allowed"),
    [case[1:] for case in CONDITION_CASES],
    ids=[case[0] for case in CONDITION_CASES],
)
def test_condition_operator_semantics(
    condition: dict[str, Any], values: dict[str, tuple[str, ...]], allowed: bool
) -> None:
    assert evaluate_identity({"Condition": condition}, ctx(values=values)).allow is allowed


def test_encryption_context_condition_key_is_case_insensitive_but_value_is_not() -> None:
    cond = {"StringEquals": {"kms:EncryptionContext:Department": "IT"}}
    assert evaluate_identity({"Condition": cond}, ctx(encryption_context={"department": "IT"})).allow
    assert not evaluate_identity({"Condition": cond}, ctx(encryption_context={"Department": "it"})).allow


def test_encryption_context_keys_values_keep_their_case() -> None:
    cond = {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["Department"]}}
    assert evaluate_identity({"Condition": cond}, ctx(encryption_context={"Department": "IT"})).allow
    assert not evaluate_identity({"Condition": cond}, ctx(encryption_context={"department": "IT"})).allow


# Encryption context keys that differ only in case (issue 13, finding 3). AWS: the condition key
# kms:EncryptionContext:<k> is not case-sensitive and single-valued; context keys are
# case-sensitive. {"tenant": "red", "Tenant": "blue"} gives one condition key two values, which
# AWS leaves undefined: a condition on it fails closed (an Allow does not apply, a Deny does).
TWO_TENANTS = {"tenant": "red", "Tenant": "blue"}
CONTEXT_CASE_CASES: list[tuple[str, str, dict[str, Any], dict[str, str], bool]] = [
    # (id, effect, condition, encryption context, statement applies)
    ("allow_equals_one_key_other_case", "Allow", {"StringEquals": {"kms:EncryptionContext:tenant": "blue"}},
     {"Tenant": "blue"}, True),
    ("allow_equals_defeated_by_a_second_case", "Allow", {"StringEquals": {"kms:EncryptionContext:tenant": "blue"}},
     TWO_TENANTS, False),
    ("allow_ignore_case_defeated_by_a_second_case", "Allow",
     {"StringEqualsIgnoreCase": {"kms:EncryptionContext:TENANT": "BLUE"}}, TWO_TENANTS, False),
    ("allow_like_defeated_by_a_second_case", "Allow", {"StringLike": {"kms:EncryptionContext:tenant": "*"}},
     TWO_TENANTS, False),
    ("allow_for_any_value_defeated_by_a_second_case", "Allow",
     {"ForAnyValue:StringEquals": {"kms:EncryptionContext:tenant": "blue"}}, TWO_TENANTS, False),
    ("allow_if_exists_defeated_by_a_second_case", "Allow",
     {"StringEqualsIfExists": {"kms:EncryptionContext:tenant": "red"}}, TWO_TENANTS, False),
    ("allow_negated_defeated_by_a_second_case", "Allow",
     {"StringNotEquals": {"kms:EncryptionContext:tenant": "green"}}, TWO_TENANTS, False),
    ("deny_not_equals_one_key", "Deny", {"StringNotEquals": {"kms:EncryptionContext:tenant": "red"}},
     {"Tenant": "red"}, False),
    ("deny_not_equals_applies_with_a_second_case", "Deny",
     {"StringNotEquals": {"kms:EncryptionContext:tenant": "red"}}, TWO_TENANTS, True),
    ("deny_equals_applies_with_a_second_case", "Deny", {"StringEquals": {"kms:EncryptionContext:tenant": "blue"}},
     {"tenant": "red", "TENANT": "green"}, True),
    ("deny_for_all_values_applies_with_a_second_case", "Deny",
     {"ForAllValues:StringNotEquals": {"kms:EncryptionContext:tenant": ["red", "blue"]}}, TWO_TENANTS, True),
    ("null_is_still_answered", "Allow", {"Null": {"kms:EncryptionContext:tenant": "false"}}, TWO_TENANTS, True),
    ("other_keys_are_not_ambiguous", "Allow", {"StringEquals": {"kms:EncryptionContext:app": "x"}},
     {**TWO_TENANTS, "app": "x"}, True),
    ("context_keys_condition_keeps_case", "Allow",
     {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant", "Tenant"]}}, TWO_TENANTS, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("effect", "condition", "context", "applies"),
    [case[1:] for case in CONTEXT_CASE_CASES],
    ids=[case[0] for case in CONTEXT_CASE_CASES],
)
def test_encryption_context_keys_differing_only_in_case_fail_closed(
    effect: str, condition: dict[str, Any], context: dict[str, str], applies: bool
) -> None:
    statement = {"Effect": effect, "Action": "kms:Decrypt", "Resource": "*", "Condition": condition}
    evaluation = parse_policy(doc(statement), PolicyKind.IDENTITY).evaluate(
        ctx(action="kms:Decrypt", encryption_context=context)
    )
    assert (evaluation.explicit_deny if effect == "Deny" else evaluation.allow) is applies


def test_for_all_values_with_an_encryption_context_key_is_refused_on_write() -> None:
    """AWS: creating or updating such a policy fails with OverlyPermissiveCondition; stored ones still parse."""
    statement = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                 "Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContext:Department": "IT"}}}  # fmt: skip
    with pytest.raises(MalformedPolicyDocumentException, match="OverlyPermissiveCondition"):
        parse_policy_for_write(doc(statement), PolicyKind.IDENTITY)
    parse_policy(doc(statement), PolicyKind.IDENTITY)
    allowed = {**statement, "Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "Department"}}}
    parse_policy_for_write(doc(allowed), PolicyKind.IDENTITY)


def test_request_context_lowercases_keys_and_keeps_explicit_values() -> None:
    request = ctx(values={"AWS:SourceIp": ("10.0.0.1",), "kms:CallerAccount": ("999999999999",)})
    assert request.values["aws:sourceip"] == ("10.0.0.1",)
    assert request.values["kms:calleraccount"] == ("999999999999",)
    assert request.values["aws:principalarn"] == (ALICE,)


# --- actions, resources, principals --------------------------------------------------------------

ACTION_CASES = [
    ("kms:ReEncrypt*", "kms:ReEncryptFrom", True),
    ("kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext", True),
    ("kms:GenerateDataKey*", "kms:GenerateRandom", False),
    ("kms:*", "kms:ScheduleKeyDeletion", True),
    ("*", "kms:Decrypt", True),
    ("KMS:encrypt", "kms:Encrypt", True),
    ("kms:?ncrypt", "kms:Encrypt", True),
    ("kms:?ncrypt", "kms:Decrypt", False),
    ("kms:Decrypt", "kms:Encrypt", False),
    ("kms:Describe*", "kms:DescribeKey", True),
]


@pytest.mark.parametrize(("pattern", "action", "allowed"), ACTION_CASES)
def test_action_wildcards_match_case_insensitively(pattern: str, action: str, allowed: bool) -> None:
    assert evaluate_identity({"Action": pattern}, ctx(action=action)).allow is allowed


def test_not_action_allows_everything_else() -> None:
    policy = parse_policy(
        doc({"Effect": "Allow", "NotAction": ["kms:ScheduleKeyDeletion", "kms:Put*"], "Resource": "*"}),
        PolicyKind.IDENTITY,
    )
    assert policy.evaluate(ctx(action="kms:Encrypt")).allow
    assert not policy.evaluate(ctx(action="kms:PutKeyPolicy")).allow
    assert not policy.evaluate(ctx(action="kms:ScheduleKeyDeletion")).allow


RESOURCE_CASES = [
    (KEY_ARN, True),
    ("arn:aws:kms:us-east-1:111122223333:key/*", True),
    ("arn:aws:kms:*:111122223333:key/*", True),
    ("arn:aws:kms:us-west-2:111122223333:key/*", False),
    ("arn:aws:kms:us-east-?:111122223333:key/*", True),
    ("arn:aws:KMS:us-east-1:111122223333:key/*", False),
    ("arn:aws:kms:us-east-1:111122223333:alias/*", False),
]


@pytest.mark.parametrize(("resource", "allowed"), RESOURCE_CASES)
def test_resource_arn_wildcards_are_case_sensitive(resource: str, allowed: bool) -> None:
    assert evaluate_identity({"Resource": resource}, ctx()).allow is allowed


def test_not_resource_excludes_listed_keys() -> None:
    policy = parse_policy(
        doc({"Effect": "Allow", "Action": "kms:*", "NotResource": "arn:aws:kms:*:*:key/1234*"}),
        PolicyKind.IDENTITY,
    )
    assert not policy.evaluate(ctx()).allow
    assert policy.evaluate(ctx(resource=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/ffff")).allow


def key_statement(principal: Any, *, negate: bool = False, effect: str = "Allow") -> dict[str, Any]:
    return {
        "Effect": effect,
        "NotPrincipal" if negate else "Principal": principal,
        "Action": "kms:*",
        "Resource": "*",
    }


PRINCIPAL_CASES: list[tuple[str, Any, RequestContext, str]] = [
    # id, Principal element, caller, expected: "direct" | "root" | "none"
    ("star_matches_anyone", "*", ctx(), "direct"),
    ("star_matches_a_service", "*", ctx(principal="logs.amazonaws.com", account="", service=True), "direct"),
    ("aws_star_matches_any_aws_principal", {"AWS": "*"}, ctx(principal=BOB), "direct"),
    (
        "aws_star_does_not_match_a_service",
        {"AWS": "*"},
        ctx(principal="logs.amazonaws.com", account="", service=True),
        "none",
    ),
    ("user_arn_matches_that_user", {"AWS": ALICE}, ctx(), "direct"),
    ("user_arn_does_not_match_another_user", {"AWS": ALICE}, ctx(principal=BOB), "none"),
    ("list_of_users", {"AWS": [BOB, ALICE]}, ctx(), "direct"),
    ("root_arn_delegates_for_a_user", {"AWS": ROOT}, ctx(), "root"),
    ("account_id_means_the_account_root", {"AWS": ACCOUNT}, ctx(), "root"),
    ("root_arn_matches_the_root_directly", {"AWS": ROOT}, ctx(principal=ROOT), "direct"),
    ("root_of_another_account", {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}, ctx(), "none"),
    (
        "role_arn",
        {"AWS": f"arn:aws:iam::{ACCOUNT}:role/app"},
        ctx(principal=f"arn:aws:iam::{ACCOUNT}:role/app"),
        "direct",
    ),
    (
        "service_principal",
        {"Service": "logs.amazonaws.com"},
        ctx(principal="logs.amazonaws.com", account="", service=True),
        "direct",
    ),
    ("service_principal_does_not_match_a_user", {"Service": "logs.amazonaws.com"}, ctx(), "none"),
]


@pytest.mark.parametrize(
    ("principal", "request_ctx", "expected"),
    [case[1:] for case in PRINCIPAL_CASES],
    ids=[case[0] for case in PRINCIPAL_CASES],
)
def test_principal_forms_and_how_they_match(
    principal: Any, request_ctx: RequestContext, expected: str
) -> None:
    ev = parse_policy(doc(key_statement(principal))).evaluate(request_ctx)
    assert (ev.allows_directly, ev.delegates_to_iam) == {
        "direct": (True, False),
        "root": (False, True),
        "none": (False, False),
    }[expected]


def test_not_principal_with_deny_needs_the_account_listed_to_spare_a_user() -> None:
    allow_all = key_statement({"AWS": ROOT})
    only_user = parse_policy(doc(allow_all, key_statement({"AWS": ALICE}, negate=True, effect="Deny")))
    user_and_account = parse_policy(
        doc(allow_all, key_statement({"AWS": [ALICE, ROOT]}, negate=True, effect="Deny"))
    )
    assert only_user.evaluate(ctx()).explicit_deny
    assert not user_and_account.evaluate(ctx()).explicit_deny
    assert user_and_account.evaluate(ctx(principal=BOB)).explicit_deny


def test_not_principal_allow_matches_everyone_not_listed() -> None:
    policy = parse_policy(doc(key_statement({"AWS": [BOB, ROOT]}, negate=True)))
    assert policy.evaluate(ctx()).allows_directly
    assert not policy.evaluate(ctx(principal=BOB)).allow


def test_explicit_deny_is_reported_with_its_sid() -> None:
    policy = parse_policy(
        doc(
            {"Sid": "Admin", **key_statement({"AWS": ROOT})},
            {
                "Sid": "NoDeletion",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:ScheduleKeyDeletion",
                "Resource": "*",
            },
        )
    )
    ev = policy.evaluate(ctx(action="kms:ScheduleKeyDeletion"))
    assert ev.explicit_deny
    assert ev.denied_by == (StatementRef(1, "NoDeletion"),)
    assert ev.delegated_by == (StatementRef(0, "Admin"),)
    assert not policy.evaluate(ctx(action="kms:Encrypt")).explicit_deny


def test_single_statement_object_and_absent_version_are_accepted() -> None:
    text = json.dumps({"Statement": key_statement("*")})
    policy = parse_policy(text)
    assert policy.version is None
    assert policy.evaluate(ctx()).allow


def test_identity_policy_allow_is_direct() -> None:
    ev = evaluate_identity({}, ctx())
    assert ev.allows_directly and not ev.delegates_to_iam


# --- malformed documents -------------------------------------------------------------------------

GOOD = {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}


def bad_statement(**changes: Any) -> str:
    statement = {**GOOD, **changes}
    return doc({k: v for k, v in statement.items() if v is not None})


MALFORMED_CASES: list[tuple[str, str, PolicyKind, str]] = [
    ("not_json", "{not json", PolicyKind.KEY, "not valid JSON"),
    ("not_an_object", "[]", PolicyKind.KEY, "must be a JSON object"),
    (
        "unknown_top_level_field",
        json.dumps({"Statement": [GOOD], "Extra": 1}),
        PolicyKind.KEY,
        "unknown policy field",
    ),
    ("unsupported_version", doc(GOOD, Version="2020-01-01"), PolicyKind.KEY, "Version"),
    ("id_not_a_string", doc(GOOD, Id=5), PolicyKind.KEY, "Id must be a string"),
    ("missing_statement", json.dumps({"Version": "2012-10-17"}), PolicyKind.KEY, "no Statement"),
    ("empty_statement_list", doc(), PolicyKind.KEY, "non-empty list"),
    ("statement_not_an_object", json.dumps({"Statement": ["x"]}), PolicyKind.KEY, "must be an object"),
    ("unknown_statement_field", bad_statement(Effects="Allow"), PolicyKind.KEY, "unknown field"),
    ("bad_effect", bad_statement(Effect="allow"), PolicyKind.KEY, "Effect"),
    ("sid_not_a_string", bad_statement(Sid=1), PolicyKind.KEY, "Sid must be a string"),
    (
        "duplicate_sids",
        doc({**GOOD, "Sid": "A"}, {**GOOD, "Sid": "A"}),
        PolicyKind.KEY,
        "Sids must be unique",
    ),
    (
        "key_policy_without_principal",
        bad_statement(Principal=None),
        PolicyKind.KEY,
        "exactly one of Principal",
    ),
    (
        "principal_and_not_principal",
        bad_statement(NotPrincipal="*"),
        PolicyKind.KEY,
        "exactly one of Principal",
    ),
    ("identity_policy_with_principal", bad_statement(), PolicyKind.IDENTITY, "cannot have Principal"),
    ("principal_wrong_type", bad_statement(Principal=["*"]), PolicyKind.KEY, "Principal must be"),
    ("principal_bad_arn", bad_statement(Principal={"AWS": "alice"}), PolicyKind.KEY, "invalid AWS principal"),
    (
        "principal_wildcard_arn",
        bad_statement(Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:user/*"}),
        PolicyKind.KEY,
        "invalid AWS principal",
    ),
    (
        "principal_unsupported_type",
        bad_statement(Principal={"Federated": "cognito-identity.amazonaws.com"}),
        PolicyKind.KEY,
        "unsupported principal type",
    ),
    ("principal_empty_list", bad_statement(Principal={"AWS": []}), PolicyKind.KEY, "non-empty list"),
    (
        "service_principal_wildcard",
        bad_statement(Principal={"Service": "*"}),
        PolicyKind.KEY,
        "invalid service principal",
    ),
    ("missing_action", bad_statement(Action=None), PolicyKind.KEY, "exactly one of Action or NotAction"),
    (
        "action_and_not_action",
        bad_statement(NotAction="kms:Encrypt"),
        PolicyKind.KEY,
        "exactly one of Action",
    ),
    ("action_empty_list", bad_statement(Action=[]), PolicyKind.KEY, "non-empty list"),
    ("action_not_a_string", bad_statement(Action=[1]), PolicyKind.KEY, "Action must be"),
    ("action_without_service", bad_statement(Action="Encrypt"), PolicyKind.KEY, "invalid action"),
    ("missing_resource", bad_statement(Resource=None), PolicyKind.KEY, "exactly one of Resource"),
    ("resource_not_an_arn", bad_statement(Resource="key/123"), PolicyKind.KEY, "resource must be"),
    ("condition_not_an_object", bad_statement(Condition=[]), PolicyKind.KEY, "Condition must be an object"),
    (
        "unknown_operator",
        bad_statement(Condition={"StringEqualz": {"aws:SourceIp": "x"}}),
        PolicyKind.KEY,
        "unknown condition operator",
    ),
    (
        "unknown_qualifier",
        bad_statement(Condition={"ForSomeValues:StringEquals": {"a:b": "x"}}),
        PolicyKind.KEY,
        "unknown condition operator",
    ),
    (
        "null_with_if_exists",
        bad_statement(Condition={"NullIfExists": {"a:b": "true"}}),
        PolicyKind.KEY,
        "Null takes neither",
    ),
    (
        "null_not_boolean",
        bad_statement(Condition={"Null": {"a:b": "maybe"}}),
        PolicyKind.KEY,
        "true or false",
    ),
    ("operator_not_mapping", bad_statement(Condition={"StringEquals": "x"}), PolicyKind.KEY, "must map"),
    (
        "condition_key_without_colon",
        bad_statement(Condition={"StringEquals": {"sourceip": "x"}}),
        PolicyKind.KEY,
        "invalid condition key",
    ),
    (
        "condition_empty_value_list",
        bad_statement(Condition={"StringEquals": {"a:b": []}}),
        PolicyKind.KEY,
        "value list is empty",
    ),
    (
        "condition_value_object",
        bad_statement(Condition={"StringEquals": {"a:b": {"c": 1}}}),
        PolicyKind.KEY,
        "must be strings, numbers or booleans",
    ),
    (
        "numeric_not_a_number",
        bad_statement(Condition={"NumericLessThan": {"a:b": "ten"}}),
        PolicyKind.KEY,
        "not a valid number",
    ),
    (
        "date_not_a_date",
        bad_statement(Condition={"DateLessThan": {"aws:CurrentTime": "tomorrow"}}),
        PolicyKind.KEY,
        "not a valid date",
    ),
    (
        "bool_not_boolean",
        bad_statement(Condition={"Bool": {"aws:SecureTransport": "yes"}}),
        PolicyKind.KEY,
        "true or false",
    ),
    (
        "ip_not_cidr",
        bad_statement(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}),
        PolicyKind.KEY,
        "not an IP address",
    ),
    (
        "arn_like_not_an_arn",
        bad_statement(Condition={"ArnLike": {"aws:PrincipalArn": "user/alice"}}),
        PolicyKind.KEY,
        "is not an ARN",
    ),
    ("duplicate_json_key", '{"Statement": [], "Statement": []}', PolicyKind.KEY, "duplicate JSON field"),
    (
        "nan_number",
        bad_statement(Condition={"NumericEquals": {"a:b": 1}}).replace("1}", "NaN}"),
        PolicyKind.KEY,
        "invalid JSON number",
    ),
]


@pytest.mark.parametrize(
    ("document", "kind", "reason"),
    [case[1:] for case in MALFORMED_CASES],
    ids=[case[0] for case in MALFORMED_CASES],
)
def test_malformed_document_is_rejected_with_a_reason(document: str, kind: PolicyKind, reason: str) -> None:
    with pytest.raises(MalformedPolicyDocumentException) as info:
        parse_policy(document, kind)
    assert reason in info.value.message


def padded_to(size_bytes: int) -> str:
    """A valid document of exactly ``size_bytes`` UTF-8 bytes, padded with two-byte characters."""
    head, tail = '{"Id": "', '", "Statement": [' + json.dumps(GOOD) + "]}"
    padding = size_bytes - len((head + tail).encode())
    return head + "é" * (padding // 2) + "x" * (padding % 2) + tail


def test_policy_of_exactly_32_kib_is_accepted() -> None:
    text = padded_to(MAX_POLICY_BYTES)
    assert len(text.encode()) == MAX_POLICY_BYTES
    assert parse_policy(text).evaluate(ctx()).allow


def test_policy_over_32_kib_in_utf8_bytes_is_rejected() -> None:
    statement = json.dumps(GOOD)
    filler = "é" * (MAX_POLICY_BYTES // 2)  # fewer than 32 KiB characters, more than 32 KiB bytes
    text = '{"Id": "' + filler + '", "Statement": [' + statement + "]}"
    assert len(text) < 2 * MAX_POLICY_BYTES and len(text.encode()) > MAX_POLICY_BYTES
    with pytest.raises(MalformedPolicyDocumentException, match="exceeds 32 KiB"):
        parse_policy(text)


def test_error_messages_do_not_echo_large_input() -> None:
    long_name = "x" * 10_000
    with pytest.raises(MalformedPolicyDocumentException) as info:
        parse_policy(bad_statement(**{long_name: 1}))
    assert len(info.value.message) < 200


@pytest.mark.parametrize(
    "condition",
    [
        {"StringEquals": {"aws:ResourceTag/env": "prod"}},
        {"StringNotEquals": {"aws:ResourceTag/env": "prod"}},
        {"StringEqualsIfExists": {"aws:ResourceTag/env": "prod"}},
        {"Null": {"aws:ResourceTag/env": "true"}},
        {"Null": {"aws:ResourceTag/env": "false"}},
        {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/finance-*"}},
        {"ForAllValues:StringLike": {"kms:ResourceAliases": "alias/finance-*"}},
        {"StringNotLikeIfExists": {"KMS:ResourceAliases": "alias/finance-*"}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_conditions_on_the_key_s_tags_and_aliases_fail_closed_when_unknown(condition: dict[str, Any]) -> None:
    """AWS evaluates aws:ResourceTag/<k> and kms:ResourceAliases on every operation on a key; the
    authorizer does not know a key's tags or aliases, so a condition on them never lets an Allow
    apply and always lets a Deny apply (AWS's ABAC examples: "Deny ... when aws:ResourceTag ...").
    Before, the key read as absent: every such Deny with a positive operator was skipped."""
    assert not evaluate_identity({"Condition": condition}, ctx()).allow
    deny = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:*", "Resource": "*", "Condition": condition}]}), PolicyKind.IDENTITY)
    assert deny.evaluate(ctx()).explicit_deny


def test_a_supplied_tag_or_alias_value_is_evaluated_as_usual() -> None:
    tagged = ctx(values={"aws:resourcetag/env": ("prod",), "kms:resourcealiases": ("alias/finance-a",)})
    assert evaluate_identity({"Condition": {"StringEquals": {"aws:ResourceTag/env": "prod"}}}, tagged).allow
    assert not evaluate_identity({"Condition": {"StringEquals": {"aws:ResourceTag/env": "dev"}}}, tagged).allow
    like = {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/finance-*"}}
    assert evaluate_identity({"Condition": like}, tagged).allow
