"""GetKeyPolicy, PutKeyPolicy, ListKeyPolicies through boto3 (issue 4): the default policy, strict
parsing, the lockout safety check, AWS managed keys, and a policy change reaching another node."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import botocore.exceptions
import pytest

from regiond.domain.decision import default_key_policy, enable_iam_statement, policy_document
from regiond.service.keys import LOCKOUT_MESSAGE
from tests.support.aws import aws_call
from tests.support.cluster import ACCOUNT_ID, NodeFactory

QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600"}


async def _error(fn: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    error = info.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def allow(principal: str, *actions: str, sid: str | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": "Allow", "Principal": {"AWS": principal}, "Action": list(actions), "Resource": "*",
    }  # fmt: skip
    if sid:
        statement["Sid"] = sid
    return statement


async def test_a_new_key_has_the_default_policy_under_the_only_name_default(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]

    got = await aws_call(kms.get_key_policy, KeyId=key["KeyId"], PolicyName="default")
    assert got["PolicyName"] == "default"
    assert json.loads(got["Policy"]) == json.loads(default_key_policy(ACCOUNT_ID))
    assert (await aws_call(kms.get_key_policy, KeyId=key["Arn"]))["Policy"] == got["Policy"]  # name defaults

    listed = await aws_call(kms.list_key_policies, KeyId=key["KeyId"])
    assert (listed["PolicyNames"], listed["Truncated"]) == (["default"], False)

    assert (await _error(kms.get_key_policy, KeyId=key["KeyId"], PolicyName="other"))[0] == "NotFoundException"
    document = policy_document([enable_iam_statement(ACCOUNT_ID)])
    assert (await _error(kms.put_key_policy, KeyId=key["KeyId"], PolicyName="other", Policy=document))[
        0
    ] == "NotFoundException"
    await aws_call(kms.create_alias, AliasName="alias/p", TargetKeyId=key["KeyId"])
    assert (await _error(kms.get_key_policy, KeyId="alias/p"))[0] == "InvalidArnException"
    assert (await _error(kms.list_key_policies, KeyId=key["KeyId"], Marker="x"))[0] == "InvalidMarkerException"


async def test_put_key_policy_stores_the_text_and_reaches_another_node_within_a_second(nodes: NodeFactory) -> None:
    a = await nodes.start(extra=QUIET)
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir, extra=QUIET)
    admin = await nodes.identity(a)
    bob = await nodes.identity(a, user="bob")  # no identity policy at all
    kms_a, bob_b = a.client(admin), b.client(bob)
    key = (await aws_call(kms_a.create_key))["KeyMetadata"]
    assert (await _error(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p"))[0] == "AccessDeniedException"

    document = policy_document(
        [enable_iam_statement(ACCOUNT_ID), allow(bob.arn, "kms:Encrypt", sid="Bob encrypts")], policy_id="mine"
    )
    await aws_call(kms_a.put_key_policy, KeyId=key["KeyId"], Policy=document)
    assert (await aws_call(kms_a.get_key_policy, KeyId=key["KeyId"]))["Policy"] == document  # byte for byte

    deadline = time.monotonic() + 1.0
    while True:  # node B cached bob's denial; the key's NOTIFY must make it decide again
        try:
            await aws_call(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")
            break
        except botocore.exceptions.ClientError:
            assert time.monotonic() < deadline, "node B kept the old key policy"
            await asyncio.sleep(0.02)


async def test_malformed_policies_are_refused_with_the_reason_and_change_nothing(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    before = (await aws_call(kms.get_key_policy, KeyId=key_id))["Policy"]
    good = allow(f"arn:aws:iam::{ACCOUNT_ID}:root", "kms:*")
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({"Statement": [{**good, "Condition": {"StringEqualz": {"a:b": "x"}}}]}), "unknown condition"),
        (json.dumps({"Statement": [{k: v for k, v in good.items() if k != "Principal"}]}), "Principal"),
        (json.dumps({"Version": "2012-10-17", "Statement": [good], "Id": "x" * 40_000}), "exceeds 32 KiB"),
    ]
    for document, reason in cases:
        code, message = await _error(kms.put_key_policy, KeyId=key_id, Policy=document)
        assert code == "MalformedPolicyDocumentException"
        assert reason in message
        code, message = await _error(kms.create_key, Policy=document)
        assert (code, reason in message) == ("MalformedPolicyDocumentException", True)
    assert (await aws_call(kms.get_key_policy, KeyId=key_id))["Policy"] == before


async def test_lockout_safety_check_refuses_a_policy_that_locks_the_caller_out(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    admin = await nodes.identity(node)
    bob = await nodes.identity(node, user="bob")
    kms = node.client(admin)
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    only_bob = policy_document([allow(bob.arn, "kms:*")])

    assert await _error(kms.put_key_policy, KeyId=key_id, Policy=only_bob) == (
        "MalformedPolicyDocumentException", LOCKOUT_MESSAGE,
    )  # fmt: skip
    assert await _error(kms.create_key, Policy=only_bob) == ("MalformedPolicyDocumentException", LOCKOUT_MESSAGE)
    # A policy that still lets the caller (here via its account's IAM) manage the key is fine.
    await aws_call(kms.put_key_policy, KeyId=key_id, Policy=policy_document([enable_iam_statement(ACCOUNT_ID)]))

    await aws_call(kms.put_key_policy, KeyId=key_id, Policy=only_bob, BypassPolicyLockoutSafetyCheck=True)
    assert (await _error(kms.get_key_policy, KeyId=key_id))[0] == "AccessDeniedException"  # locked out
    assert (await aws_call(node.client(bob).get_key_policy, KeyId=key_id))["Policy"] == only_bob
    created = await aws_call(kms.create_key, Policy=only_bob, BypassPolicyLockoutSafetyCheck=True)
    assert created["KeyMetadata"]["KeyState"] == "Enabled"


async def test_lockout_safety_check_counts_the_account_root_only_with_the_callers_iam(nodes: NodeFactory) -> None:
    """Issue 13, finding 11. AWS: the caller "can get kms:PutKeyPolicy permission for the KMS key from
    an IAM policy or they can include this permission in the key policy". A policy that keeps only
    the account-root statement delegates to IAM, so it passes only if the caller's IAM allows."""
    node = await nodes.start(extra=QUIET)
    admin = await nodes.identity(node)
    no_iam = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}
    carol = await nodes.identity(node, user="carol", policy=no_iam)
    key_id = (await aws_call(node.client(admin).create_key))["KeyMetadata"]["KeyId"]
    root_only = policy_document([enable_iam_statement(ACCOUNT_ID)])
    await aws_call(
        node.client(admin).put_key_policy, KeyId=key_id,
        Policy=policy_document([enable_iam_statement(ACCOUNT_ID), allow(carol.arn, "kms:PutKeyPolicy")]),
    )  # fmt: skip
    as_carol = node.client(carol)
    assert await _error(as_carol.put_key_policy, KeyId=key_id, Policy=root_only) == (
        "MalformedPolicyDocumentException", LOCKOUT_MESSAGE,
    )  # fmt: skip
    creator = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:CreateKey", "Resource": "*"}]}
    dave = await nodes.identity(node, user="dave", policy=creator)
    assert await _error(node.client(dave).create_key, Policy=root_only) == (
        "MalformedPolicyDocumentException", LOCKOUT_MESSAGE,
    )  # fmt: skip
    # the admin's IAM allows kms:*, so for the admin the same policy passes
    await aws_call(node.client(admin).put_key_policy, KeyId=key_id, Policy=root_only)


async def test_aws_managed_key_policy_is_readable_but_cannot_be_changed(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    managed = (await aws_call(kms.describe_key, KeyId="alias/aws/s3"))["KeyMetadata"]
    policy = json.loads((await aws_call(kms.get_key_policy, KeyId=managed["KeyId"]))["Policy"])
    assert policy["Id"] == "auto-s3-1"
    code, _ = await _error(
        kms.put_key_policy, KeyId=managed["KeyId"], Policy=policy_document([enable_iam_statement(ACCOUNT_ID)])
    )
    assert code == "AccessDeniedException"
