"""Authorization through boto3 (issue 4), with three principals: the account admin, a second user
of the same account (bob) and users of a second account (carol, dave). Key policy + IAM +
cross-account rules, conditions, the administrators/users templates, that a denied call
changes nothing and runs no cryptography, IAM changes reaching another node's cached decisions,
and the ``regiond policy simulate`` command."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from typing import Any

import asyncpg
import botocore.exceptions
import pytest

from regiond.__main__ import parser
from regiond.crypto import wrap
from regiond.domain.decision import (
    enable_iam_statement,
    key_administrators_statement,
    key_users_statement,
    policy_document,
)
from regiond.errors import MalformedPolicyDocumentException
from regiond.protocol.routes import SERVICES
from tests.support.aws import aws_call
from tests.support.cluster import ACCOUNT_ID, OTHER_ACCOUNT_ID, Identity, Node, NodeFactory

QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600"}


async def _denied(fn: Any, **kwargs: Any) -> str:
    """Assert the call is refused with AccessDeniedException; return the message."""
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    error = info.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", error
    return str(error["Message"])


async def _code(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return str(info.value.response["Error"]["Code"])


def iam_allow(*actions: str, resource: str = "*") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": resource}]}


def statement(effect: str, principal: str | list[str], *actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Principal": {"AWS": principal}, "Action": list(actions), "Resource": "*", **extra}


async def _new_key(kms: Any, *statements: dict[str, Any]) -> dict[str, Any]:
    """A key whose policy is the default delegation to IAM plus ``statements``."""
    document = policy_document([enable_iam_statement(ACCOUNT_ID), *statements])
    return dict((await aws_call(kms.create_key, Policy=document))["KeyMetadata"])


async def _eventually_allowed(fn: Any, seconds: float = 1.0, **kwargs: Any) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await aws_call(fn, **kwargs)
        except botocore.exceptions.ClientError:
            assert time.monotonic() < deadline, "the change did not take effect in time"
            await asyncio.sleep(0.02)


async def test_default_policy_denies_a_user_until_its_iam_allows_and_the_change_reaches_another_node(
    nodes: NodeFactory,
) -> None:
    a = await nodes.start(extra=QUIET)
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir, extra=QUIET)
    kms = a.client(await nodes.identity(a))
    bob = await nodes.identity(a, user="bob")
    key = dict((await aws_call(kms.create_key))["KeyMetadata"])

    message = await _denied(b.client(bob).encrypt, KeyId=key["Arn"], Plaintext=b"p")
    assert bob.arn in message and "kms:Encrypt" in message and key["Arn"] in message
    assert "Enable IAM" not in message and "Statement" not in message  # nothing of the policy

    # The default key policy delegates to IAM: an identity policy for Encrypt on this key is enough.
    await nodes.identity(a, user="bob", policy=iam_allow("kms:Encrypt", resource=key["Arn"]))
    await _eventually_allowed(b.client(bob).encrypt, KeyId=key["Arn"], Plaintext=b"p")
    blob = (await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p"))["CiphertextBlob"]
    await _denied(b.client(bob).decrypt, CiphertextBlob=blob)  # IAM allows Encrypt only


async def test_key_policy_allowing_encrypt_only_leaves_decrypt_denied(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")  # no identity policy: the key policy alone decides
    key = await _new_key(kms, statement("Allow", bob.arn, "kms:Encrypt"))
    bob_kms = node.client(bob)
    blob = (await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p"))["CiphertextBlob"]
    await _denied(bob_kms.decrypt, CiphertextBlob=blob)
    await _denied(bob_kms.describe_key, KeyId=key["Arn"])
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"p"


async def test_explicit_deny_beats_an_iam_allow_and_a_key_policy_allow(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob", policy=iam_allow("kms:*"))
    key = await _new_key(kms, statement("Deny", bob.arn, "kms:Decrypt"))
    bob_kms = node.client(bob)
    blob = (await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p"))["CiphertextBlob"]
    await _denied(bob_kms.decrypt, CiphertextBlob=blob)

    # A Deny in an identity policy wins over a key policy that names the user directly.
    deny_encrypt = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:Encrypt", "Resource": key["Arn"]},
        ],
    }
    await nodes.identity(node, user="bob", policy=deny_encrypt)
    other = await _new_key(kms, statement("Allow", bob.arn, "kms:*"))
    await aws_call(bob_kms.encrypt, KeyId=other["Arn"], Plaintext=b"p")
    deadline = time.monotonic() + 1.0
    while True:  # the IAM change reaches this node's cached identity policies by NOTIFY
        try:
            await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")
        except botocore.exceptions.ClientError:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await _denied(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")


async def test_cross_account_use_needs_both_policies_and_the_key_arn(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    use = ("kms:Encrypt", "kms:Decrypt", "kms:DescribeKey")
    carol = await nodes.identity(node, account_id=OTHER_ACCOUNT_ID, user="carol", policy=iam_allow(*use))
    dave = await nodes.identity(node, account_id=OTHER_ACCOUNT_ID, user="dave")  # no IAM policy
    carol_kms, dave_kms = node.client(carol), node.client(dave)
    key = dict((await aws_call(kms.create_key))["KeyMetadata"])

    await _denied(carol_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")  # IAM alone: no

    other_root = f"arn:aws:iam::{OTHER_ACCOUNT_ID}:root"
    document = policy_document(
        [enable_iam_statement(ACCOUNT_ID), statement("Allow", other_root, *use, "kms:DisableKey")]
    )
    await aws_call(kms.put_key_policy, KeyId=key["KeyId"], Policy=document)
    blob = (await aws_call(carol_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p"))["CiphertextBlob"]
    assert (await aws_call(carol_kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"p"
    assert (await aws_call(carol_kms.describe_key, KeyId=key["Arn"]))["KeyMetadata"]["KeyId"] == key["KeyId"]
    # Only by key ARN: a bare key id names a key of the caller's own account.
    assert await _code(carol_kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p") == "NotFoundException"
    # Key policy alone: no (dave's account is named, but dave's IAM allows nothing).
    await _denied(dave_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")
    # Management is never cross-account, whatever the policies say.
    await nodes.identity(node, account_id=OTHER_ACCOUNT_ID, user="carol", policy=iam_allow("kms:*"))
    await _denied(carol_kms.disable_key, KeyId=key["Arn"])
    assert (await aws_call(kms.describe_key, KeyId=key["KeyId"]))["KeyMetadata"]["Enabled"] is True


async def test_encryption_context_condition_allows_one_context_and_denies_another(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    condition = {"StringEquals": {"kms:EncryptionContext:tenant": "blue"}}
    key = await _new_key(kms, statement("Allow", bob.arn, "kms:Encrypt", "kms:Decrypt", Condition=condition))
    bob_kms = node.client(bob)
    authz = node.app[SERVICES].authz
    blue, red = {"tenant": "blue"}, {"tenant": "red"}
    evaluations = []
    for _round in range(2):  # the second round is served from the decision cache, with the same answers
        blob = (await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext=blue))[
            "CiphertextBlob"
        ]
        await aws_call(bob_kms.decrypt, CiphertextBlob=blob, EncryptionContext=blue)
        await _denied(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext=red)
        await _denied(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")
        evaluations.append(authz.evaluations)
    assert evaluations[0] == evaluations[1]


async def test_key_administrators_cannot_use_the_key_and_key_users_cannot_manage_it(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    ops = await nodes.identity(node, user="ops")  # neither has an identity policy
    bob = await nodes.identity(node, user="bob")
    key = await _new_key(kms, key_administrators_statement([ops.arn]), key_users_statement([bob.arn]))
    ops_kms, bob_kms = node.client(ops), node.client(bob)

    await aws_call(ops_kms.describe_key, KeyId=key["KeyId"])
    await aws_call(ops_kms.disable_key, KeyId=key["KeyId"])
    await aws_call(ops_kms.enable_key, KeyId=key["KeyId"])
    await aws_call(ops_kms.tag_resource, KeyId=key["KeyId"], Tags=[{"TagKey": "team", "TagValue": "a"}])
    policy = (await aws_call(ops_kms.get_key_policy, KeyId=key["KeyId"]))["Policy"]
    await _denied(ops_kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p")
    await _denied(ops_kms.generate_data_key, KeyId=key["KeyId"], KeySpec="AES_256")

    blob = (await aws_call(bob_kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p"))["CiphertextBlob"]
    await aws_call(bob_kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=key["KeyId"])
    await aws_call(bob_kms.generate_data_key_without_plaintext, KeyId=key["KeyId"], KeySpec="AES_256")
    await aws_call(bob_kms.describe_key, KeyId=key["KeyId"])
    await _denied(bob_kms.put_key_policy, KeyId=key["KeyId"], Policy=policy)
    await _denied(bob_kms.disable_key, KeyId=key["KeyId"])
    await _denied(bob_kms.schedule_key_deletion, KeyId=key["KeyId"])


async def test_a_denied_call_changes_nothing_and_runs_no_cryptography(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    bob_kms = node.client(bob)
    key = dict((await aws_call(kms.create_key))["KeyMetadata"])
    blob = (await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p"))["CiphertextBlob"]  # key now cached
    policy = (await aws_call(kms.get_key_policy, KeyId=key["KeyId"]))["Policy"]

    used: list[str] = []
    def counting(name: str, original: Any) -> Any:
        def call(*args: Any) -> Any:
            used.append(name)
            return original(*args)

        return call

    for name in ("seal", "unseal"):
        monkeypatch.setattr(wrap, name, counting(name, getattr(wrap, name)))
    await _denied(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")
    await _denied(bob_kms.decrypt, CiphertextBlob=blob)
    await _denied(bob_kms.generate_data_key, KeyId=key["Arn"], KeySpec="AES_256")
    await _denied(bob_kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=key["Arn"])
    assert used == []

    await _denied(bob_kms.create_alias, AliasName="alias/bob", TargetKeyId=key["KeyId"])
    await _denied(bob_kms.put_key_policy, KeyId=key["KeyId"], Policy=policy.replace("kms:*", "kms:Encrypt"))
    await _denied(bob_kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt"])
    await _denied(bob_kms.schedule_key_deletion, KeyId=key["KeyId"])
    await _denied(bob_kms.tag_resource, KeyId=key["KeyId"], Tags=[{"TagKey": "k", "TagValue": "v"}])
    assert (await aws_call(kms.list_aliases, KeyId=key["KeyId"]))["Aliases"] == []
    assert (await aws_call(kms.get_key_policy, KeyId=key["KeyId"]))["Policy"] == policy
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []
    assert (await aws_call(kms.describe_key, KeyId=key["KeyId"]))["KeyMetadata"]["KeyState"] == "Enabled"
    assert (await aws_call(kms.list_resource_tags, KeyId=key["KeyId"]))["Tags"] == []
    await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p")
    assert used == ["seal"]  # the patch does count a permitted call


def _simulate(node: Node, *argv: str) -> tuple[int, str]:
    args = parser().parse_args(["policy", "simulate", "--database-url", node.database_url, *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = int(args.func(args))
    return code, out.getvalue()


async def test_policy_simulate_prints_the_decision_and_the_statements_that_decided(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    admin: Identity = await nodes.identity(node)
    kms = node.client(admin)
    bob = await nodes.identity(node, user="bob", policy=iam_allow("kms:*"))
    condition = {"StringEquals": {"kms:EncryptionContext:tenant": "red"}}
    key = await _new_key(kms, {**statement("Deny", bob.arn, "kms:Decrypt", Condition=condition), "Sid": "NoRed"})

    code, text = await asyncio.to_thread(
        _simulate, node, "--principal", bob.arn, "--action", "kms:Decrypt", "--key", key["Arn"],
        "--context", "tenant=blue",
    )  # fmt: skip
    assert code == 0
    assert text.splitlines()[0] == "ALLOW kms:Decrypt"
    assert "allowed-by-key-policy-and-iam" in text
    assert "key policy statement 0 (Enable IAM User Permissions)" in text
    assert "identity policy 'inline' statement 0" in text

    code, out = await asyncio.to_thread(
        _simulate, node, "--principal", bob.arn, "--action", "kms:Decrypt", "--key", key["KeyId"],
        "--context", "tenant=red", "--format", "json",
    )  # fmt: skip
    result = json.loads(out)
    assert code == 1
    assert (result["decision"], result["reason"]) == ("deny", "explicit-deny")
    assert result["statements"] == [{"source": "key-policy", "policy": "default", "index": 1, "sid": "NoRed"}]

    carol = await nodes.identity(node, account_id=OTHER_ACCOUNT_ID, user="carol", policy=iam_allow("kms:*"))
    code, text = await asyncio.to_thread(
        _simulate, node, "--principal", carol.arn, "--action", "kms:ScheduleKeyDeletion", "--key", key["Arn"]
    )
    assert code == 1 and "cannot be used on a key of another account" in text
    with contextlib.redirect_stderr(io.StringIO()):
        code, _ = await asyncio.to_thread(
            _simulate, node, "--principal", bob.arn, "--action", "kms:Decrypt", "--key", "alias/none"
        )
    assert code == 2


async def test_an_identity_policy_is_checked_when_written_and_a_stored_unreadable_one_denies(
    nodes: NodeFactory,
) -> None:
    """A stored identity policy that no longer parses must not be skipped: skipping it dropped its Deny
    statements (a wrong allow). Writes check the whole grammar; an unreadable stored one denies all."""
    node = await nodes.start(extra=QUIET)
    admin = await nodes.identity(node)
    iam = node.app[SERVICES].iam
    bob = await nodes.identity(node, user="bob", policy=iam_allow("kms:*"))
    key_id = (await _new_key(node.client(admin)))["KeyId"]
    blob = (await aws_call(node.client(admin).encrypt, KeyId=key_id, Plaintext=b"x"))["CiphertextBlob"]
    assert (await aws_call(node.client(bob).decrypt, CiphertextBlob=blob))["Plaintext"] == b"x"

    unreadable = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*", "Condition": {"BinaryEquals": {"a:b": "x"}}},
    ]})  # fmt: skip
    with pytest.raises(MalformedPolicyDocumentException, match="unknown condition operator"):
        await iam.put_identity_policy(bob.arn, "deny-decrypt", unreadable)
    # as if stored by an older release whose grammar accepted it
    con = await asyncpg.connect(node.database_url)
    try:
        await con.execute(
            "INSERT INTO identity_policies (principal_arn, policy_name, document) VALUES ($1, $2, $3)",
            bob.arn, "deny-decrypt", unreadable,
        )  # fmt: skip
    finally:
        await con.close()
    node.app[SERVICES].iam_authz.invalidate()
    await _denied(node.client(bob).decrypt, CiphertextBlob=blob)
    await _denied(node.client(bob).encrypt, KeyId=key_id, Plaintext=b"y")
