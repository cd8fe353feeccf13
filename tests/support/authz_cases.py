"""The authorization differential table: requests and the decision AWS KMS documents for them.

Each ``Case`` is one request -- a key policy, the caller's identity policy, grants, an
encryption context, a caller, an operation -- with the decision AWS would make and the AWS
rule that makes it (``rule``, quoting or naming the developer guide or API reference). The
same rows run against the pure decision (``tests/unit/test_authz_differential.py``, every row)
and, for rows marked ``e2e``, end to end through boto3 against a real node
(``tests/integration/test_authz_differential.py``). The multi-Region operations' rows are in
``MULTI_REGION_CASES`` (their permissions span regions; see ``regiond.domain.permissions``).

Principals are ARNs of the fixed accounts below; the end-to-end runner replaces them with the
users it makes for each row. The key is a symmetric key of ``ACCOUNT`` in ``REGION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "111122223333"
OTHER = "444455556666"
REGION = "us-east-1"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
CAROL = f"arn:aws:iam::{OTHER}:user/carol"
SERVICE = "logs.amazonaws.com"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
OTHER_KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/ffffffff-12ab-34cd-56ef-1234567890ab"
SOURCE_IP = "127.0.0.1"  # what the end-to-end runner's requests come from
ALIAS = "alias/row"  # the alias of the alias operations' rows (the end-to-end runner's is per row)
ALIAS_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:{ALIAS}"
ANY_ALIAS = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/*"

Statement = dict[str, Any]


@dataclass(frozen=True)
class Grant:
    grantee: str
    operations: tuple[str, ...]
    equals: dict[str, str] | None = None
    subset: dict[str, str] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    rule: str  # the AWS rule the row encodes, in short
    allowed: bool
    action: str = "kms:Decrypt"
    caller: str = ALICE
    key_policy: tuple[Statement, ...] | None = None  # None: the default key policy
    iam: tuple[Statement, ...] = ()  # the caller's identity policy (none if empty)
    grants: tuple[Grant, ...] = ()
    context: dict[str, str] = field(default_factory=dict)
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # beyond the runner's own
    # the operation's own parameters: CreateKey's (MultiRegion, Tags, ...), TagResource's Tags,
    # UntagResource's TagKeys (the runners derive aws:RequestTag/<k> and aws:TagKeys from them)
    create: dict[str, Any] = field(default_factory=dict)
    by_alias: bool = False  # the request names the key by ALIAS (kms:RequestAlias)
    e2e: bool = False


def allow(principal: Any, *actions: str, **condition: Any) -> Statement:
    statement: Statement = {"Effect": "Allow", "Principal": principal, "Action": list(actions) or "kms:*",
                            "Resource": "*"}  # fmt: skip
    if condition:
        statement["Condition"] = condition
    return statement


def deny(principal: Any, *actions: str, **condition: Any) -> Statement:
    return {**allow(principal, *actions, **condition), "Effect": "Deny"}


def aws(*arns: str) -> dict[str, Any]:
    return {"AWS": list(arns) if len(arns) > 1 else arns[0]}


def iam_allow(*actions: str, resource: Any = "*", **condition: Any) -> Statement:
    statement: Statement = {"Effect": "Allow", "Action": list(actions) or "kms:*", "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def iam_deny(*actions: str, resource: Any = "*", **condition: Any) -> Statement:
    return {**iam_allow(*actions, resource=resource, **condition), "Effect": "Deny"}


ROOT_STATEMENT = allow(aws(ROOT))  # the default key policy's "Enable IAM User Permissions"
TWO_TENANTS = {"tenant": "red", "Tenant": "blue"}

DEFAULT_POLICY = "key-policy-default: the account root statement 'enables IAM policies'; an IAM policy must allow"
ROOT_DELEGATION = "key-policy-default-allow-root-enable-iam: without the root statement IAM policies have no effect"
DIRECT = "key-policies: a key policy statement naming the principal allows it by itself (same account)"
EXPLICIT_DENY = "policy-evaluation: an explicit deny in any policy overrides every allow, grants included"
CROSS_ACCOUNT = ("key-policy-modifying-external-accounts: the key policy must allow the external account "
                 "and an IAM policy in that account must delegate the permission")  # fmt: skip
CROSS_OPS = "kms-api-permissions-reference: operations with 'Cross-account use: No' are refused for other accounts"
GRANTS = "grants: a grant allows its grantee the listed operations, without key policy or IAM permission"
EQUALS = "create-grant-overview: EncryptionContextEquals is 'an exact, case-sensitive match'"
SUBSET = "create-grant-overview: EncryptionContextSubset: all pairs 'an exact, case-sensitive match', more allowed"
CONSTRAINT_FREE = "create-grant-overview: 'The encryption context constraint is ignored for DescribeKey'"
CONTEXT_KEY = ("conditions-kms-encryption-context-case: the condition key kms:EncryptionContext:<k> is not "
               "case sensitive; the value's case is the operator's")  # fmt: skip
AMBIGUOUS = ("kms:EncryptionContext:<k> is single-valued, context keys are case-sensitive: two keys equal but "
             "for case are undefined in AWS, and fail closed (issue 13, finding 3)")  # fmt: skip
NEGATED = "IAM reference_policies_elements_condition_operators: a negated operator matches when the key is absent"
IF_EXISTS = "IAM ...IfExists: 'If the policy key is present ... evaluate; if not present, evaluates to true'"
FOR_ALL = "IAM reference_policies_condition-single-vs-multi-valued: ForAllValues is true for a missing key"
FOR_ANY = "IAM ForAnyValue: false when the key is missing or empty"
NULL = "IAM Null condition operator: true means the key is absent"
ACTIONS = "IAM reference_policies_elements_action: action names are case-insensitive and take * and ? wildcards"
NOT_ACTION = "IAM NotAction: the statement applies to every action except the listed ones"
NOT_PRINCIPAL = ("IAM NotPrincipal with Deny: a principal is excluded only if it and its account are both "
                 "listed")  # fmt: skip
RESOURCE = "cmks-in-iam-policies: an IAM statement applies only to the KMS keys its Resource names"
SERVICE_RULE = "key-policy-services: a service principal is allowed only by a statement naming that service"
CREATE_KEY = "API CreateKey Required permissions: kms:CreateKey (IAM policy); the account root needs none"
CREATE_TAGS = "API CreateKey Required permissions: to use the Tags parameter, kms:TagResource (IAM policy)"
CREATE_RESOURCE = ("kms-api-permissions-reference: for kms:CreateKey the Resource may be * or an "
                   "account-specific variation such as arn:aws:kms:region:account:*")  # fmt: skip
MULTI_REGION = "conditions-kms-multiregion: kms:MultiRegion on CreateKey (AWS's Deny example)"
BYPASS = "conditions-kms-bypass-policy-lockout-safety-check: present only when the request sends the parameter"
KEY_CONDITIONS = ("conditions-kms: kms:KeySpec, kms:KeyOrigin, kms:MultiRegion, kms:MultiRegionKeyType describe "
                  "the KMS key of any operation on an existing key")  # fmt: skip
REQUESTED_REGION = "multi-region-keys-auth: IAM policies apply in every Region unless aws:RequestedRegion limits them"
ALIASES = ("alias-access: to create, update or delete an alias the principal needs the alias permission 'for the "
           "alias' in an IAM policy and on every affected KMS key (key policy, or IAM through it)")  # fmt: skip
REQUEST_CONDITION = ("conditions-kms: a request condition key 'works even when the parameter doesn't appear in the "
                     "request, such as when you use the parameter's default value'")  # fmt: skip
PENDING_WINDOW = ("conditions-kms-schedule-key-deletion-pending-window-in-days: AWS's Deny NumericLessThan 30 "
                  "example refuses a shorter waiting period")  # fmt: skip
SAME_KEY = "conditions-kms-reencrypt-on-same-key: kms:ReEncryptOnSameKey is true when source and destination match"
PAIR_SPEC = "conditions-kms-data-key-pair-spec: kms:DataKeyPairSpec is the KeyPairSpec of GenerateDataKeyPair*"
ALGORITHM = ("conditions-kms-encryption-algorithm: kms:EncryptionAlgorithm is the request's algorithm, "
             "SYMMETRIC_DEFAULT for a symmetric key when the request names none")  # fmt: skip
TAGS = ("ABAC for AWS KMS (abac): aws:RequestTag/<key> and aws:TagKeys control CreateKey, ReplicateKey, "
        "TagResource and UntagResource by the tags in the request")  # fmt: skip
REQUEST_ALIAS = ("alias-authorization: kms:RequestAlias 'allows or denies access to a KMS key based on the alias "
                 "in a request' (crypto operations, DescribeKey, GetPublicKey); absent for a key id")  # fmt: skip
NOT_VIA_ALIAS = iam_deny("kms:Encrypt", "kms:Decrypt", StringEquals={"kms:RequestAlias": ALIAS})
TAG_CASE = ("aws:RequestTag/<k> is single-valued and tag keys are case-sensitive: two request tags equal but "
            "for case are undefined in AWS, and fail closed as encryption context keys do")  # fmt: skip
TEAM_RED = {"Tags": [{"TagKey": "team", "TagValue": "red"}]}
USER_KEY = allow(aws(ALICE))  # a key policy statement naming the caller: kms:* on the key, without IAM

CASES: tuple[Case, ...] = (
    # --- key policy first; the account root delegates to IAM ---------------------------------------
    Case("default_policy_and_iam_allow", DEFAULT_POLICY, True, iam=(iam_allow("kms:Decrypt"),), e2e=True),
    Case("default_policy_without_iam", DEFAULT_POLICY, False, e2e=True),
    Case("default_policy_iam_allows_other_action", DEFAULT_POLICY, False, iam=(iam_allow("kms:Encrypt"),), e2e=True),
    Case("no_root_statement_iam_allow_has_no_effect", ROOT_DELEGATION, False,
         key_policy=(allow(aws(BOB)),), iam=(iam_allow(),), e2e=True),
    Case("key_policy_names_the_caller", DIRECT, True, key_policy=(allow(aws(ALICE), "kms:Decrypt"),), e2e=True),
    Case("key_policy_names_another_user", DIRECT, False, key_policy=(ROOT_STATEMENT, allow(aws(BOB))), e2e=True),
    Case("key_policy_principal_star", DIRECT, True, key_policy=(allow("*", "kms:Decrypt"),), e2e=True),
    Case("iam_allow_names_another_key", RESOURCE, False, iam=(iam_allow(resource=OTHER_KEY_ARN),), e2e=True),
    Case("iam_allow_key_arn_with_region_wildcard", RESOURCE, True,
         iam=(iam_allow(resource=f"arn:aws:kms:*:{ACCOUNT}:key/*"),), e2e=True),
    Case("iam_allow_for_another_account_keys", RESOURCE, False,
         iam=(iam_allow(resource=f"arn:aws:kms:*:{OTHER}:key/*"),)),
    Case("root_caller_under_the_root_statement", DIRECT, True, caller=ROOT, e2e=True),
    Case("root_caller_not_named", "key-policy-default: the root has no access the key policy does not give", False,
         caller=ROOT, key_policy=(allow(aws(ALICE)),), e2e=True),
    # --- explicit deny wins -------------------------------------------------------------------
    Case("key_policy_deny_beats_its_allow", EXPLICIT_DENY, False,
         key_policy=(allow(aws(ALICE)), deny(aws(ALICE), "kms:Decrypt")), e2e=True),
    Case("iam_deny_beats_a_direct_key_policy_allow", EXPLICIT_DENY, False,
         key_policy=(allow(aws(ALICE)),), iam=(iam_deny("kms:Decrypt"),), e2e=True),
    Case("iam_deny_beats_iam_allow", EXPLICIT_DENY, False, iam=(iam_allow(), iam_deny("kms:Decrypt")), e2e=True),
    Case("key_policy_deny_beats_a_grant", EXPLICIT_DENY, False,
         key_policy=(ROOT_STATEMENT, deny(aws(ALICE), "kms:Decrypt")), grants=(Grant(ALICE, ("Decrypt",)),),
         e2e=True),
    Case("iam_deny_beats_a_grant", EXPLICIT_DENY, False, iam=(iam_deny("kms:Decrypt"),),
         grants=(Grant(ALICE, ("Decrypt",)),), e2e=True),
    Case("deny_for_another_action_does_not_apply", EXPLICIT_DENY, True,
         iam=(iam_allow(), iam_deny("kms:Encrypt")), e2e=True),
    # --- actions, NotAction, NotPrincipal ---------------------------------------------------------
    Case("action_names_are_case_insensitive", ACTIONS, True, key_policy=(allow(aws(ALICE), "KMS:dEcRyPt"),),
         e2e=True),
    Case("action_wildcard_star", ACTIONS, True, action="kms:ReEncryptFrom",
         key_policy=(allow(aws(ALICE), "kms:ReEncrypt*"),)),
    Case("action_wildcard_question_mark", ACTIONS, True, action="kms:GenerateDataKey",
         key_policy=(allow(aws(ALICE), "kms:Gen?rateDataKey"),), e2e=True),
    Case("action_wildcard_does_not_overreach", ACTIONS, False, action="kms:GenerateDataKeyPair",
         key_policy=(allow(aws(ALICE), "kms:GenerateDataKey"),)),
    Case("not_action_allow_excludes_the_listed", NOT_ACTION, False,
         key_policy=(ROOT_STATEMENT, {**allow(aws(ALICE)), "NotAction": "kms:Decrypt", "Action": None}), e2e=True),
    Case("not_action_allow_covers_the_rest", NOT_ACTION, True, action="kms:Encrypt",
         key_policy=(ROOT_STATEMENT, {**allow(aws(ALICE)), "NotAction": "kms:Decrypt", "Action": None}), e2e=True),
    Case("not_action_deny_spares_the_listed", NOT_ACTION, True,
         key_policy=(allow(aws(ALICE)), {**deny(aws(ALICE)), "NotAction": ["kms:Decrypt"], "Action": None}),
         e2e=True),
    Case("not_action_deny_refuses_the_rest", NOT_ACTION, False, action="kms:Encrypt",
         key_policy=(allow(aws(ALICE)), {**deny(aws(ALICE)), "NotAction": ["kms:Decrypt"], "Action": None}),
         e2e=True),
    Case("not_principal_deny_spares_user_and_account_listed", NOT_PRINCIPAL, True,
         key_policy=(allow(aws(ALICE)), {**deny("*"), "NotPrincipal": aws(ALICE, ROOT), "Principal": None}),
         e2e=True),
    Case("not_principal_deny_without_the_account_refuses_the_user", NOT_PRINCIPAL, False,
         key_policy=(allow(aws(ALICE)), {**deny("*"), "NotPrincipal": aws(ALICE), "Principal": None}), e2e=True),
    Case("not_principal_deny_refuses_others", NOT_PRINCIPAL, False, caller=BOB,
         key_policy=(allow(aws(BOB)), {**deny("*"), "NotPrincipal": aws(ALICE, ROOT), "Principal": None}),
         e2e=True),
    # --- cross-account ------------------------------------------------------------------------
    Case("cross_account_key_policy_and_iam", CROSS_ACCOUNT, True, caller=CAROL,
         key_policy=(ROOT_STATEMENT, allow(aws(OTHER_ROOT), "kms:Decrypt")),
         iam=(iam_allow("kms:Decrypt", resource=KEY_ARN),), e2e=True),
    Case("cross_account_key_policy_only", CROSS_ACCOUNT, False, caller=CAROL,
         key_policy=(ROOT_STATEMENT, allow(aws(OTHER_ROOT), "kms:Decrypt")), e2e=True),
    Case("cross_account_iam_only", CROSS_ACCOUNT, False, caller=CAROL,
         iam=(iam_allow("kms:Decrypt", resource=KEY_ARN),), e2e=True),
    Case("cross_account_user_named_still_needs_its_iam", CROSS_ACCOUNT, False, caller=CAROL,
         key_policy=(ROOT_STATEMENT, allow(aws(CAROL), "kms:Decrypt")), e2e=True),
    Case("cross_account_user_named_and_its_iam", CROSS_ACCOUNT, True, caller=CAROL,
         key_policy=(ROOT_STATEMENT, allow(aws(CAROL), "kms:Decrypt")), iam=(iam_allow("kms:Decrypt"),), e2e=True),
    Case("cross_account_root_needs_no_iam", CROSS_ACCOUNT, True, caller=OTHER_ROOT, action="kms:DescribeKey",
         key_policy=(ROOT_STATEMENT, allow(aws(OTHER_ROOT), "kms:DescribeKey"))),
    Case("cross_account_management_is_refused", CROSS_OPS, False, caller=CAROL, action="kms:ScheduleKeyDeletion",
         key_policy=(ROOT_STATEMENT, allow(aws(OTHER_ROOT))), iam=(iam_allow(),), e2e=True),
    Case("cross_account_put_key_policy_is_refused", CROSS_OPS, False, caller=CAROL, action="kms:PutKeyPolicy",
         key_policy=(ROOT_STATEMENT, allow(aws(OTHER_ROOT))), iam=(iam_allow(),)),
    Case("cross_account_grant_needs_no_iam", GRANTS, True, caller=CAROL, grants=(Grant(CAROL, ("Decrypt",)),),
         e2e=True),
    # --- grants ---------------------------------------------------------------------------------
    Case("grant_allows_its_grantee", GRANTS, True, key_policy=(ROOT_STATEMENT,), grants=(Grant(ALICE, ("Decrypt",)),),
         e2e=True),
    Case("grant_for_another_operation", GRANTS, False, grants=(Grant(ALICE, ("Encrypt",)),), e2e=True),
    Case("grant_to_another_principal", GRANTS, False, grants=(Grant(BOB, ("Decrypt",)),), e2e=True),
    Case("grant_equals_exact_context", EQUALS, True, grants=(Grant(ALICE, ("Decrypt",), equals={"app": "x"}),),
         context={"app": "x"}, e2e=True),
    Case("grant_equals_extra_pair", EQUALS, False, grants=(Grant(ALICE, ("Decrypt",), equals={"app": "x"}),),
         context={"app": "x", "more": "y"}, e2e=True),
    Case("grant_equals_key_case_differs", EQUALS, False, grants=(Grant(ALICE, ("Decrypt",), equals={"app": "x"}),),
         context={"App": "x"}, e2e=True),
    Case("grant_equals_value_case_differs", EQUALS, False,
         grants=(Grant(ALICE, ("Decrypt",), equals={"app": "x"}),), context={"app": "X"}),
    Case("grant_equals_without_context", EQUALS, False, grants=(Grant(ALICE, ("Decrypt",), equals={"app": "x"}),)),
    Case("grant_subset_with_more_pairs", SUBSET, True, grants=(Grant(ALICE, ("Decrypt",), subset={"app": "x"}),),
         context={"app": "x", "more": "y"}, e2e=True),
    Case("grant_subset_missing_pair", SUBSET, False, grants=(Grant(ALICE, ("Decrypt",), subset={"app": "x"}),),
         context={"more": "y"}, e2e=True),
    Case("grant_subset_key_case_differs", SUBSET, False, grants=(Grant(ALICE, ("Decrypt",), subset={"app": "x"}),),
         context={"APP": "x"}),
    Case("grant_subset_two_case_variants", SUBSET, True, grants=(Grant(ALICE, ("Decrypt",), subset={"app": "x"}),),
         context={"app": "x", "App": "y"}),
    Case("grant_constraint_ignored_for_describe_key", CONSTRAINT_FREE, True, action="kms:DescribeKey",
         grants=(Grant(ALICE, ("DescribeKey",), equals={"app": "x"}),), e2e=True),
    # --- encryption context conditions ---------------------------------------------------------------
    Case("context_condition_matches", CONTEXT_KEY, True,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:EncryptionContext:tenant": "blue"}),),
         context={"tenant": "blue"}, e2e=True),
    Case("context_condition_key_in_other_case_matches", CONTEXT_KEY, True,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:EncryptionContext:Tenant": "blue"}),),
         context={"TENANT": "blue"}, e2e=True),
    Case("context_condition_value_case_matters", CONTEXT_KEY, False,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:EncryptionContext:tenant": "blue"}),),
         context={"tenant": "Blue"}, e2e=True),
    Case("context_condition_ignore_case_operator", CONTEXT_KEY, True,
         key_policy=(allow(aws(ALICE), StringEqualsIgnoreCase={"kms:EncryptionContext:tenant": "blue"}),),
         context={"tenant": "BLUE"}),
    Case("context_condition_name_prefix_in_any_case", CONTEXT_KEY, True,
         key_policy=(allow(aws(ALICE), StringEquals={"KMS:ENCRYPTIONCONTEXT:TENANT": "blue"}),),
         context={"tenant": "blue"}),
    Case("attack_allow_defeated_by_a_case_variant", AMBIGUOUS, False,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:EncryptionContext:tenant": "blue"}),),
         context=TWO_TENANTS, e2e=True),
    Case("attack_deny_not_equals_defeated_by_a_case_variant", AMBIGUOUS, False,
         key_policy=(allow(aws(ALICE)), deny(aws(ALICE), StringNotEquals={"kms:EncryptionContext:tenant": "red"})),
         context=TWO_TENANTS, e2e=True),
    Case("case_variant_of_an_unrelated_key_is_harmless", AMBIGUOUS, True,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:EncryptionContext:app": "x"}),),
         context={**TWO_TENANTS, "app": "x"}),
    Case("context_keys_case_sensitive_check", "conditions-kms-encryption-context-case: kms:EncryptionContextKeys "
         "with StringEquals is case sensitive", False,
         key_policy=(allow(aws(ALICE), **{"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "AppName"}}),),
         context={"appname": "x"}, e2e=True),
    Case("for_all_values_allows_no_context", FOR_ALL, True,
         key_policy=(allow(aws(ALICE), **{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": "app"}}),),
         e2e=True),
    Case("for_all_values_refuses_another_key", FOR_ALL, False,
         key_policy=(allow(aws(ALICE), **{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": "app"}}),),
         context={"app": "x", "other": "y"}, e2e=True),
    Case("for_any_value_refuses_no_context", FOR_ANY, False,
         key_policy=(allow(aws(ALICE), **{"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "app"}}),),
         e2e=True),
    Case("if_exists_true_when_absent", IF_EXISTS, True,
         key_policy=(allow(aws(ALICE), StringEqualsIfExists={"kms:EncryptionContext:app": "x"}),), e2e=True),
    Case("if_exists_checks_when_present", IF_EXISTS, False,
         key_policy=(allow(aws(ALICE), StringEqualsIfExists={"kms:EncryptionContext:app": "x"}),),
         context={"app": "y"}, e2e=True),
    Case("null_false_requires_a_context", NULL, False,
         key_policy=(allow(aws(ALICE), Null={"kms:EncryptionContextKeys": "false"}),), e2e=True),
    Case("null_false_with_a_context", NULL, True,
         key_policy=(allow(aws(ALICE), Null={"kms:EncryptionContextKeys": "false"}),), context={"a": "b"}, e2e=True),
    Case("negated_deny_applies_without_the_key", NEGATED, False,
         key_policy=(allow(aws(ALICE)), deny(aws(ALICE), StringNotEquals={"kms:EncryptionContext:tenant": "red"})),
         e2e=True),
    # --- global condition keys --------------------------------------------------------------------
    Case("source_ip_in_range", "IAM aws:SourceIp with IpAddress", True,
         key_policy=(allow(aws(ALICE), IpAddress={"aws:SourceIp": "127.0.0.0/8"}),), e2e=True),
    Case("source_ip_out_of_range", "IAM aws:SourceIp with IpAddress", False,
         key_policy=(allow(aws(ALICE), IpAddress={"aws:SourceIp": "10.0.0.0/8"}),), e2e=True),
    Case("requested_region_matches", REQUESTED_REGION, True,
         iam=(iam_allow(StringEquals={"aws:RequestedRegion": REGION}),), e2e=True),
    Case("requested_region_elsewhere", REQUESTED_REGION, False,
         iam=(iam_allow(StringEquals={"aws:RequestedRegion": "eu-west-1"}),), e2e=True),
    Case("caller_account_condition", "conditions-kms-caller-account", True, caller=CAROL,
         key_policy=(ROOT_STATEMENT, allow("*", "kms:Decrypt", StringEquals={"kms:CallerAccount": OTHER})),
         iam=(iam_allow("kms:Decrypt"),), e2e=True),
    Case("principal_arn_condition", "IAM aws:PrincipalArn with ArnLike", False, caller=BOB,
         key_policy=(allow("*", ArnLike={"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/a*"}),), e2e=True),
    # --- condition keys describing the key (conditions-kms: "Conditions for KMS keys used in API operations")
    Case("key_spec_condition", KEY_CONDITIONS, True,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:KeySpec": "SYMMETRIC_DEFAULT"}),), e2e=True),
    Case("key_origin_condition", KEY_CONDITIONS, False,
         key_policy=(allow(aws(ALICE), StringEquals={"kms:KeyOrigin": "EXTERNAL"}),), e2e=True),
    Case("deny_of_multi_region_keys_spares_a_single_region_key", KEY_CONDITIONS, True,
         key_policy=(allow(aws(ALICE)), deny(aws(ALICE), Bool={"kms:MultiRegion": "true"})), e2e=True),
    Case("allow_of_multi_region_keys_only", KEY_CONDITIONS, False,
         iam=(iam_allow(Bool={"kms:MultiRegion": "true"}),), e2e=True),
    # --- service principals ---------------------------------------------------------------------------
    Case("service_principal_named", SERVICE_RULE, True, caller=SERVICE, action="kms:Encrypt",
         key_policy=(allow({"Service": SERVICE}, "kms:Encrypt"),)),
    Case("service_principal_not_named", SERVICE_RULE, False, caller=SERVICE, action="kms:Encrypt",
         key_policy=(ROOT_STATEMENT, allow(aws(ALICE))),),
    Case("service_principal_star", SERVICE_RULE, True, caller=SERVICE, action="kms:Encrypt",
         key_policy=(allow("*", "kms:Encrypt"),)),
    # --- operations without a key: IAM alone ------------------------------------------------------------
    Case("create_key_with_iam", CREATE_KEY, True, action="kms:CreateKey", iam=(iam_allow("kms:CreateKey"),),
         e2e=True),
    Case("create_key_without_iam", CREATE_KEY, False, action="kms:CreateKey", e2e=True),
    Case("create_key_root", CREATE_KEY, True, action="kms:CreateKey", caller=ROOT, e2e=True),
    Case("create_key_account_region_resource", CREATE_RESOURCE, True, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey", resource=f"arn:aws:kms:{REGION}:{ACCOUNT}:*"),), e2e=True),
    Case("create_key_denied_in_this_region", CREATE_RESOURCE, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"), iam_deny("kms:CreateKey", resource=f"arn:aws:kms:{REGION}:{ACCOUNT}:*")),
         e2e=True),
    Case("create_key_resource_of_another_region", CREATE_RESOURCE, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey", resource=f"arn:aws:kms:eu-west-1:{ACCOUNT}:*"),), e2e=True),
    Case("create_key_multi_region_denied", MULTI_REGION, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"), iam_deny("kms:CreateKey", Bool={"kms:MultiRegion": "true"})),
         create={"MultiRegion": True}, e2e=True),
    Case("create_key_single_region_under_that_deny", MULTI_REGION, True, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"), iam_deny("kms:CreateKey", Bool={"kms:MultiRegion": "true"})), e2e=True),
    Case("create_key_multi_region_primary_type", "conditions-kms-multiregion-key-type on CreateKey", True,
         action="kms:CreateKey", iam=(iam_allow("kms:CreateKey", StringEquals={"kms:MultiRegionKeyType": "PRIMARY"}),),
         create={"MultiRegion": True}, e2e=True),
    Case("create_key_spec_condition_with_the_default", "conditions-kms: 'works even when the parameter doesn't "
         "appear in the request'", True, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey", StringEquals={"kms:KeySpec": "SYMMETRIC_DEFAULT"}),), e2e=True),
    Case("create_key_bypass_denied", BYPASS, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"), iam_deny("kms:CreateKey", Bool={"kms:BypassPolicyLockoutSafetyCheck": True})),
         create={"BypassPolicyLockoutSafetyCheck": True}, e2e=True),
    Case("create_key_null_bypass_allows_without_the_parameter", BYPASS, True, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey", Null={"kms:BypassPolicyLockoutSafetyCheck": "true"}),), e2e=True),
    Case("create_key_null_bypass_refuses_the_parameter_sent", BYPASS, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey", Null={"kms:BypassPolicyLockoutSafetyCheck": "true"}),),
         create={"BypassPolicyLockoutSafetyCheck": False}, e2e=True),
    Case("create_key_tags_without_tag_resource", CREATE_TAGS, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"),), create={"Tags": [{"TagKey": "team", "TagValue": "red"}]}, e2e=True),
    Case("create_key_tags_with_tag_resource", CREATE_TAGS, True, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"),
              iam_allow("kms:TagResource", resource=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/*")),
         create={"Tags": [{"TagKey": "team", "TagValue": "red"}]}, e2e=True),
    Case("create_key_tags_root", CREATE_TAGS, True, action="kms:CreateKey", caller=ROOT,
         create={"Tags": [{"TagKey": "team", "TagValue": "red"}]}, e2e=True),
    Case("list_keys_with_iam", "API ListKeys Required permissions: kms:ListKeys (IAM policy)", True,
         action="kms:ListKeys", iam=(iam_allow("kms:ListKeys"),), e2e=True),
    Case("list_keys_iam_deny", EXPLICIT_DENY, False, action="kms:ListKeys",
         iam=(iam_allow(), iam_deny("kms:ListKeys")), e2e=True),
    # --- aliases: the alias in IAM, every affected key by its policy -----------------------------
    Case("create_alias_key_policy_alone", ALIASES, False, action="kms:CreateAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY), e2e=True),
    Case("create_alias_key_policy_and_iam_on_the_alias", ALIASES, True, action="kms:CreateAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY), iam=(iam_allow("kms:CreateAlias", resource=ALIAS_ARN),), e2e=True),
    Case("create_alias_iam_on_another_alias", ALIASES, False, action="kms:CreateAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY),
         iam=(iam_allow("kms:CreateAlias", resource=f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/other"),), e2e=True),
    Case("create_alias_iam_deny_on_aliases", EXPLICIT_DENY, False, action="kms:CreateAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY),
         iam=(iam_allow("kms:CreateAlias"), iam_deny("kms:CreateAlias", resource=ANY_ALIAS)), e2e=True),
    Case("create_alias_iam_through_the_root_statement", ALIASES, True, action="kms:CreateAlias",
         iam=(iam_allow("kms:CreateAlias"),), e2e=True),
    Case("create_alias_iam_but_not_the_key", ALIASES, False, action="kms:CreateAlias",
         key_policy=(allow(aws(BOB)),), iam=(iam_allow("kms:CreateAlias"),), e2e=True),
    Case("create_alias_root", ALIASES, True, action="kms:CreateAlias", caller=ROOT, e2e=True),
    Case("delete_alias_key_policy_alone", ALIASES, False, action="kms:DeleteAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY), e2e=True),
    Case("delete_alias_with_iam_on_the_alias", ALIASES, True, action="kms:DeleteAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY), iam=(iam_allow("kms:DeleteAlias", resource=ANY_ALIAS),), e2e=True),
    Case("delete_alias_iam_deny_on_aliases", EXPLICIT_DENY, False, action="kms:DeleteAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY),
         iam=(iam_allow("kms:DeleteAlias"), iam_deny("kms:DeleteAlias", resource=ANY_ALIAS)), e2e=True),
    Case("update_alias_key_policy_alone", ALIASES, False, action="kms:UpdateAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY), e2e=True),
    Case("update_alias_with_iam_on_the_alias", ALIASES, True, action="kms:UpdateAlias",
         key_policy=(ROOT_STATEMENT, USER_KEY), iam=(iam_allow("kms:UpdateAlias", resource=ALIAS_ARN),), e2e=True),
    # --- condition keys of the request's own parameters ------------------------------------------
    Case("schedule_deletion_shorter_window_denied", PENDING_WINDOW, False, action="kms:ScheduleKeyDeletion",
         iam=(iam_allow(), iam_deny("kms:ScheduleKeyDeletion",
                                    NumericLessThan={"kms:ScheduleKeyDeletionPendingWindowInDays": "30"})),
         values={"kms:ScheduleKeyDeletionPendingWindowInDays": ("7",)}, e2e=True),
    Case("schedule_deletion_allowed_window", REQUEST_CONDITION, True, action="kms:ScheduleKeyDeletion",
         iam=(iam_allow("kms:ScheduleKeyDeletion",
                        NumericLessThanEquals={"kms:ScheduleKeyDeletionPendingWindowInDays": "7"}),),
         values={"kms:ScheduleKeyDeletionPendingWindowInDays": ("7",)}, e2e=True),
    Case("re_encrypt_on_the_same_key_denied", SAME_KEY, False, action="kms:ReEncryptFrom",
         iam=(iam_allow(), iam_deny("kms:ReEncrypt*", Bool={"kms:ReEncryptOnSameKey": "true"})),
         values={"kms:ReEncryptOnSameKey": ("true",)}, e2e=True),
    Case("re_encrypt_only_on_the_same_key", SAME_KEY, True, action="kms:ReEncryptFrom",
         iam=(iam_allow("kms:ReEncrypt*", Bool={"kms:ReEncryptOnSameKey": "true"}),),
         values={"kms:ReEncryptOnSameKey": ("true",)}, e2e=True),
    Case("encrypt_algorithm_allowed", ALGORITHM, True, action="kms:Encrypt",
         iam=(iam_allow("kms:Encrypt", StringEquals={"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}),),
         values={"kms:EncryptionAlgorithm": ("SYMMETRIC_DEFAULT",)}, e2e=True),
    Case("decrypt_algorithm_denied", ALGORITHM, False,
         iam=(iam_allow(), iam_deny("kms:Decrypt", StringEquals={"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})),
         values={"kms:EncryptionAlgorithm": ("SYMMETRIC_DEFAULT",)}, e2e=True),
    Case("create_key_request_tag_denied", TAGS, False, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey", "kms:TagResource"),
              iam_deny("kms:CreateKey", StringEquals={"aws:RequestTag/team": "red"})), create=TEAM_RED, e2e=True),
    Case("create_key_request_tag_allowed", TAGS, True, action="kms:CreateKey",
         iam=(iam_allow("kms:CreateKey"),
              iam_allow("kms:TagResource", StringEquals={"aws:RequestTag/team": "red"})), create=TEAM_RED, e2e=True),
    Case("tag_resource_tag_keys_denied", TAGS, False, action="kms:TagResource",
         iam=(iam_allow(), iam_deny("kms:TagResource", **{"ForAnyValue:StringEquals": {"aws:TagKeys": "team"}})),
         create=TEAM_RED, e2e=True),
    Case("tag_resource_tags_equal_but_for_case_fail_closed", TAG_CASE, False, action="kms:TagResource",
         iam=(iam_allow(), iam_deny("kms:TagResource", StringEquals={"aws:RequestTag/team": "red"})),
         create={"Tags": [{"TagKey": "team", "TagValue": "blue"}, {"TagKey": "Team", "TagValue": "red"}]},
         e2e=True),
    Case("untag_resource_tag_keys_denied", TAGS, False, action="kms:UntagResource",
         iam=(iam_allow(), iam_deny("kms:UntagResource", **{"ForAnyValue:StringEquals": {"aws:TagKeys": "team"}})),
         create={"TagKeys": ["team"]}, e2e=True),
    Case("encrypt_through_a_denied_alias", REQUEST_ALIAS, False, action="kms:Encrypt",
         iam=(iam_allow(), NOT_VIA_ALIAS), by_alias=True, e2e=True),
    Case("decrypt_through_a_denied_alias", REQUEST_ALIAS, False, iam=(iam_allow(), NOT_VIA_ALIAS), by_alias=True,
         e2e=True),
    Case("encrypt_by_key_id_has_no_request_alias", REQUEST_ALIAS, True, action="kms:Encrypt",
         iam=(iam_allow(), NOT_VIA_ALIAS), e2e=True),
    Case("describe_key_only_through_the_alias", REQUEST_ALIAS, True, action="kms:DescribeKey",
         iam=(iam_allow("kms:DescribeKey", StringEquals={"kms:RequestAlias": ALIAS}),), by_alias=True, e2e=True),
    Case("generate_data_key_only_through_the_alias_by_key_id", REQUEST_ALIAS, False, action="kms:GenerateDataKey",
         iam=(iam_allow("kms:GenerateDataKey", StringEquals={"kms:RequestAlias": ALIAS}),), e2e=True),
    Case("data_key_pair_spec_denied", PAIR_SPEC, False, action="kms:GenerateDataKeyPairWithoutPlaintext",
         iam=(iam_allow(), iam_deny("kms:GenerateDataKeyPair*", StringEquals={"kms:DataKeyPairSpec": "ECC_NIST_P256"})),
         values={"kms:DataKeyPairSpec": ("ECC_NIST_P256",)}, e2e=True),
    Case("data_key_pair_spec_allowed", PAIR_SPEC, True, action="kms:GenerateDataKeyPairWithoutPlaintext",
         iam=(iam_allow("kms:GenerateDataKeyPair*", StringEquals={"kms:DataKeyPairSpec": "ECC_NIST_P256"}),),
         values={"kms:DataKeyPairSpec": ("ECC_NIST_P256",)}, e2e=True),
)  # fmt: skip
"""Every row; ``[c for c in CASES if c.e2e]`` also run end to end."""


@dataclass(frozen=True)
class MultiRegionCase:
    """A multi-Region operation (or a key operation on a multi-Region key) and AWS's decision.

    ``policies`` are the key policies per region (``None``: the default one); ``iam`` the caller's
    identity policy (IAM is global); the operation runs in ``PRIMARY`` on a key whose replica is in
    ``REPLICA``. ``target``: ``"replica"`` for an operation called in the replica's region."""

    name: str
    rule: str
    allowed: bool
    operation: str
    primary_policy: tuple[Statement, ...] | None = None
    replica_policy: tuple[Statement, ...] | None = None
    iam: tuple[Statement, ...] = ()
    tags: bool = False
    target: str = "primary"
    caller: str = ALICE


PRIMARY, REPLICA = "us-east-1", "eu-west-1"
REPLICATE = ("API ReplicateKey Required permissions: kms:ReplicateKey on the primary key (its key policy), "
             "kms:CreateKey in an IAM policy in the replica Region, kms:TagResource (IAM, replica Region) for Tags")
UPDATE = ("API UpdatePrimaryRegion Required permissions: kms:UpdatePrimaryRegion on the current primary key (in "
          "its Region) and on the current replica key (in the replica key's Region, its key policy)")
DELETE = "multi-region-keys-delete: 'you need only ... kms:ScheduleKeyDeletion', on that key, in its Region"
CAN_REPLICATE = allow(aws(ALICE), "kms:ReplicateKey")
CAN_MOVE = allow(aws(ALICE), "kms:UpdatePrimaryRegion")
CAN_DELETE = allow(aws(ALICE), "kms:ScheduleKeyDeletion")
ONLY_ROOT = (ROOT_STATEMENT,)

MULTI_REGION_CASES: tuple[MultiRegionCase, ...] = (
    MultiRegionCase("replicate_with_replicate_key_only", REPLICATE, False, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE)),
    MultiRegionCase("replicate_with_create_key_too", REPLICATE, True, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE), iam=(iam_allow("kms:CreateKey"),)),
    MultiRegionCase("replicate_create_key_only_in_another_region", REPLICATE, False, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey", StringEquals={"aws:RequestedRegion": PRIMARY}),)),
    MultiRegionCase("replicate_create_key_in_the_replica_region", REPLICATE, True, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey", StringEquals={"aws:RequestedRegion": REPLICA}),)),
    MultiRegionCase("replicate_create_key_resource_of_the_replica_region", REPLICATE, True, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey", resource=f"arn:aws:kms:{REPLICA}:{ACCOUNT}:*"),)),
    MultiRegionCase("replicate_create_key_resource_of_the_primary_region", REPLICATE, False, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey", resource=f"arn:aws:kms:{PRIMARY}:{ACCOUNT}:*"),)),
    MultiRegionCase("replicate_iam_only_needs_the_root_statement", REPLICATE, True, "ReplicateKey",
                    iam=(iam_allow("kms:ReplicateKey", "kms:CreateKey"),)),
    MultiRegionCase("replicate_create_key_without_replicate_key", REPLICATE, False, "ReplicateKey",
                    primary_policy=ONLY_ROOT, iam=(iam_allow("kms:CreateKey"),)),
    MultiRegionCase("replicate_replica_type_denied", "conditions-kms-multiregion-key-type on kms:CreateKey", False,
                    "ReplicateKey", primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey"),
                         iam_deny("kms:CreateKey", StringEquals={"kms:MultiRegionKeyType": "REPLICA"}))),
    MultiRegionCase("replicate_to_an_allowed_replica_region", "conditions-kms-replica-region", True, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, allow(aws(ALICE), "kms:ReplicateKey",
                                                          StringEquals={"kms:ReplicaRegion": REPLICA})),
                    iam=(iam_allow("kms:CreateKey"),)),
    MultiRegionCase("replicate_to_another_replica_region", "conditions-kms-replica-region", False, "ReplicateKey",
                    primary_policy=(ROOT_STATEMENT, allow(aws(ALICE), "kms:ReplicateKey",
                                                          StringEquals={"kms:ReplicaRegion": "ap-southeast-2"})),
                    iam=(iam_allow("kms:CreateKey"),)),
    MultiRegionCase("replicate_tags_without_tag_resource", REPLICATE, False, "ReplicateKey", tags=True,
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE), iam=(iam_allow("kms:CreateKey"),)),
    MultiRegionCase("replicate_tags_with_tag_resource_on_the_replica", REPLICATE, True, "ReplicateKey", tags=True,
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey"),
                         iam_allow("kms:TagResource", resource=f"arn:aws:kms:{REPLICA}:{ACCOUNT}:key/*"))),
    MultiRegionCase("replicate_tags_tag_resource_only_on_the_primary", REPLICATE, False, "ReplicateKey", tags=True,
                    primary_policy=(ROOT_STATEMENT, CAN_REPLICATE),
                    iam=(iam_allow("kms:CreateKey"),
                         iam_allow("kms:TagResource", resource=f"arn:aws:kms:{PRIMARY}:{ACCOUNT}:key/*"))),
    MultiRegionCase("replicate_by_another_account", "API ReplicateKey: Cross-account use: No", False,
                    "ReplicateKey", caller=CAROL, primary_policy=(ROOT_STATEMENT, allow(aws(OTHER_ROOT))),
                    iam=(iam_allow(),)),
    MultiRegionCase("move_primary_policy_only", UPDATE, False, "UpdatePrimaryRegion",
                    primary_policy=(ROOT_STATEMENT, CAN_MOVE), replica_policy=ONLY_ROOT),
    MultiRegionCase("move_replica_policy_only", UPDATE, False, "UpdatePrimaryRegion",
                    primary_policy=ONLY_ROOT, replica_policy=(ROOT_STATEMENT, CAN_MOVE)),
    MultiRegionCase("move_both_policies", UPDATE, True, "UpdatePrimaryRegion",
                    primary_policy=(ROOT_STATEMENT, CAN_MOVE), replica_policy=(ROOT_STATEMENT, CAN_MOVE)),
    MultiRegionCase("move_iam_through_both_root_statements", UPDATE, True, "UpdatePrimaryRegion",
                    iam=(iam_allow("kms:UpdatePrimaryRegion"),)),
    MultiRegionCase("move_iam_but_replica_without_root_statement", UPDATE, False, "UpdatePrimaryRegion",
                    replica_policy=(allow(aws(BOB)),), iam=(iam_allow("kms:UpdatePrimaryRegion"),)),
    MultiRegionCase("move_replica_denies", UPDATE, False, "UpdatePrimaryRegion",
                    primary_policy=(ROOT_STATEMENT, CAN_MOVE),
                    replica_policy=(ROOT_STATEMENT, CAN_MOVE, deny(aws(ALICE), "kms:UpdatePrimaryRegion"))),
    MultiRegionCase("move_to_an_allowed_primary_region", "conditions-kms-primary-region", True,
                    "UpdatePrimaryRegion", iam=(iam_allow("kms:UpdatePrimaryRegion",
                                                          StringEquals={"kms:PrimaryRegion": REPLICA}),)),
    MultiRegionCase("move_to_another_primary_region", "conditions-kms-primary-region", False,
                    "UpdatePrimaryRegion", iam=(iam_allow("kms:UpdatePrimaryRegion",
                                                          StringEquals={"kms:PrimaryRegion": "ap-southeast-2"}),)),
    MultiRegionCase("delete_replica_by_its_own_policy", DELETE, True, "ScheduleKeyDeletion", target="replica",
                    primary_policy=ONLY_ROOT, replica_policy=(ROOT_STATEMENT, CAN_DELETE)),
    MultiRegionCase("delete_replica_primary_policy_does_not_count", DELETE, False, "ScheduleKeyDeletion",
                    target="replica", primary_policy=(ROOT_STATEMENT, CAN_DELETE), replica_policy=ONLY_ROOT),
    MultiRegionCase("delete_primary_by_its_own_policy", DELETE, True, "ScheduleKeyDeletion",
                    primary_policy=(ROOT_STATEMENT, CAN_DELETE), replica_policy=ONLY_ROOT),
    MultiRegionCase("delete_primary_replica_policy_does_not_count", DELETE, False, "ScheduleKeyDeletion",
                    primary_policy=ONLY_ROOT, replica_policy=(ROOT_STATEMENT, CAN_DELETE)),
    MultiRegionCase("deny_every_use_of_multi_region_keys", "multi-region-keys-auth: AWS's Deny kms:* example with "
                    "kms:MultiRegion", False, "ScheduleKeyDeletion",
                    primary_policy=(ROOT_STATEMENT, CAN_DELETE),
                    iam=(iam_deny(Bool={"kms:MultiRegion": "true"}),)),
    MultiRegionCase("delete_only_replicas", "conditions-kms-multiregion-key-type: AWS's REPLICA-only example", False,
                    "ScheduleKeyDeletion", iam=(iam_allow("kms:ScheduleKeyDeletion",
                                                          StringEquals={"kms:MultiRegionKeyType": "REPLICA"}),)),
    MultiRegionCase("delete_only_replicas_on_a_replica", "conditions-kms-multiregion-key-type", True,
                    "ScheduleKeyDeletion", target="replica",
                    iam=(iam_allow("kms:ScheduleKeyDeletion", StringEquals={"kms:MultiRegionKeyType": "REPLICA"}),)),
)  # fmt: skip
