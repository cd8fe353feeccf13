"""Grants through boto3 (issue 4): CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
RevokeGrant; encryption-context constraints; grant tokens; a second node of the region."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import botocore.exceptions
import pytest

from regiond.app import LISTENER
from tests.support.aws import aws_call
from tests.support.cluster import ACCOUNT_ID, OTHER_ACCOUNT_ID, NodeFactory

QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600"}


async def _code(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return str(info.value.response["Error"]["Code"])


async def _allowed(fn: Any, **kwargs: Any) -> bool:
    try:
        await asyncio.to_thread(fn, **kwargs)
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDeniedException", exc.response["Error"]
        return False
    return True


async def _becomes(expected: bool, fn: Any, seconds: float = 1.0, **kwargs: Any) -> None:
    deadline = time.monotonic() + seconds
    while await _allowed(fn, **kwargs) != expected:
        assert time.monotonic() < deadline, f"still {'denied' if expected else 'allowed'} after {seconds}s"
        await asyncio.sleep(0.02)


async def test_a_grant_lets_its_grantee_use_the_key_until_it_is_revoked(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")  # no identity policy; the default key policy
    bob_kms = node.client(bob)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    assert not await _allowed(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")

    created = await aws_call(
        kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt", "Decrypt"], Name="app"
    )
    assert len(created["GrantId"]) == 64 and created["GrantToken"]
    blob = (await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p"))["CiphertextBlob"]
    assert (await aws_call(bob_kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"p"
    assert not await _allowed(bob_kms.generate_data_key, KeyId=key["Arn"], KeySpec="AES_256")  # not granted
    assert not await _allowed(bob_kms.describe_key, KeyId=key["Arn"])

    (entry,) = (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"]
    assert entry["KeyId"] == key["Arn"]
    assert entry["GrantId"] == created["GrantId"]
    assert (entry["Name"], entry["GranteePrincipal"]) == ("app", bob.arn)
    assert entry["Operations"] == ["Encrypt", "Decrypt"]
    assert entry["IssuingAccount"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
    assert "CreationDate" in entry and "Constraints" not in entry and "RetiringPrincipal" not in entry

    await aws_call(kms.revoke_grant, KeyId=key["Arn"], GrantId=created["GrantId"])
    assert not await _allowed(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []
    code = await _code(kms.revoke_grant, KeyId=key["KeyId"], GrantId=created["GrantId"])
    assert code == "NotFoundException"


async def test_encryption_context_constraints_of_a_grant(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    carol = await nodes.identity(node, user="carol")
    bob_kms, carol_kms = node.client(bob), node.client(carol)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    ops = ["Encrypt", "Decrypt", "DescribeKey"]
    await aws_call(
        kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=ops,
        Constraints={"EncryptionContextSubset": {"tenant": "blue"}},
    )  # fmt: skip
    await aws_call(
        kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=carol.arn, Operations=ops,
        Constraints={"EncryptionContextEquals": {"tenant": "blue"}},
    )  # fmt: skip

    wider = {"tenant": "blue", "app": "billing"}
    blob = (await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext=wider))[
        "CiphertextBlob"
    ]
    await aws_call(bob_kms.decrypt, CiphertextBlob=blob, EncryptionContext=wider)
    await aws_call(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext={"tenant": "blue"})
    assert not await _allowed(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext={"tenant": "red"})
    assert not await _allowed(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")
    await aws_call(bob_kms.describe_key, KeyId=key["Arn"])  # constraints do not apply to DescribeKey

    await aws_call(carol_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext={"tenant": "blue"})
    assert not await _allowed(carol_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext=wider)

    (grant,) = (await aws_call(kms.list_grants, KeyId=key["KeyId"], GranteePrincipal=bob.arn))["Grants"]
    assert grant["Constraints"] == {"EncryptionContextSubset": {"tenant": "blue"}}


async def test_grant_creation_and_revocation_reach_a_second_node_within_a_second(nodes: NodeFactory) -> None:
    a = await nodes.start(extra=QUIET)
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir, extra=QUIET)
    kms_a = a.client(await nodes.identity(a))
    bob = await nodes.identity(a, user="bob")
    bob_b = b.client(bob)
    key = (await aws_call(kms_a.create_key))["KeyMetadata"]
    assert not await _allowed(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")  # node B caches: no grants

    grant = await aws_call(kms_a.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt"])
    await _becomes(True, bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")
    await aws_call(kms_a.revoke_grant, KeyId=key["KeyId"], GrantId=grant["GrantId"])
    await _becomes(False, bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")


async def test_a_grant_token_works_before_the_grant_reaches_the_cache(nodes: NodeFactory) -> None:
    a = await nodes.start(extra=QUIET)
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir, extra=QUIET)
    kms_a = a.client(await nodes.identity(a))
    bob = await nodes.identity(a, user="bob")
    bob_b = b.client(bob)
    key = (await aws_call(kms_a.create_key))["KeyMetadata"]
    assert not await _allowed(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")
    await b.app[LISTENER].stop()  # node B now never hears of the new grant by itself

    grant = await aws_call(
        kms_a.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt", "DescribeKey"]
    )
    assert not await _allowed(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")  # B's cache is behind
    await aws_call(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p", GrantTokens=[grant["GrantToken"]])
    await aws_call(bob_b.describe_key, KeyId=key["Arn"], GrantTokens=[grant["GrantToken"]])
    await aws_call(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p")  # the token made B reload the grants

    assert await _code(bob_b.encrypt, KeyId=key["Arn"], Plaintext=b"p", GrantTokens=["nope"]) == (
        "InvalidGrantTokenException"
    )
    # A token never widens a grant: Decrypt is not in it.
    blob = (await aws_call(kms_a.encrypt, KeyId=key["Arn"], Plaintext=b"p"))["CiphertextBlob"]
    assert not await _allowed(bob_b.decrypt, CiphertextBlob=blob, GrantTokens=[grant["GrantToken"]])


async def test_retiring_grants_by_token_or_id_and_who_may_retire(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    root = node.client(await nodes.identity(node, user=None))
    bob = await nodes.identity(node, user="bob")
    ops = await nodes.identity(node, user="ops", policy={
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:ListRetirableGrants", "Resource": "*"}],
    })  # fmt: skip
    bob_kms, ops_kms = node.client(bob), node.client(ops)
    key = (await aws_call(kms.create_key))["KeyMetadata"]

    def grant(**kwargs: Any) -> Any:
        return aws_call(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, **kwargs)

    retirable = await grant(Operations=["Encrypt"], RetiringPrincipal=ops.arn)
    self_retiring = await grant(Operations=["Encrypt", "RetireGrant"])
    plain = await grant(Operations=["Decrypt"])

    listed = (await aws_call(ops_kms.list_retirable_grants, RetiringPrincipal=ops.arn))["Grants"]
    assert [g["GrantId"] for g in listed] == [retirable["GrantId"]]
    assert listed[0]["RetiringPrincipal"] == ops.arn and listed[0]["KeyId"] == key["Arn"]
    assert not await _allowed(ops_kms.list_retirable_grants, RetiringPrincipal=f"arn:aws:iam::{OTHER_ACCOUNT_ID}:root")
    assert not await _allowed(bob_kms.list_retirable_grants, RetiringPrincipal=ops.arn)  # no IAM permission

    assert not await _allowed(bob_kms.retire_grant, GrantToken=retirable["GrantToken"])  # lacks RetireGrant
    await aws_call(ops_kms.retire_grant, GrantToken=retirable["GrantToken"])
    # By id too: the retiring principal needs no IAM permission and no grant for RetireGrant.
    by_id = await grant(Operations=["Decrypt"], RetiringPrincipal=ops.arn)
    await aws_call(ops_kms.retire_grant, KeyId=key["Arn"], GrantId=by_id["GrantId"])
    remaining = (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"]
    assert by_id["GrantId"] not in {g["GrantId"] for g in remaining}
    await aws_call(bob_kms.retire_grant, KeyId=key["Arn"], GrantId=self_retiring["GrantId"])
    assert not await _allowed(bob_kms.retire_grant, KeyId=key["Arn"], GrantId=plain["GrantId"])
    assert not await _allowed(kms.retire_grant, KeyId=key["Arn"], GrantId=plain["GrantId"])  # a user, not root
    await aws_call(root.retire_grant, KeyId=key["KeyId"], GrantId=plain["GrantId"])  # the issuing account
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []

    assert await _code(kms.retire_grant, GrantToken=retirable["GrantToken"]) == "NotFoundException"
    assert await _code(kms.retire_grant, GrantToken="not-a-token") == "InvalidGrantTokenException"
    assert await _code(kms.retire_grant, KeyId=key["KeyId"], GrantId="123") == "InvalidGrantIdException"
    assert await _code(kms.retire_grant, KeyId=key["KeyId"]) == "ValidationException"
    assert await _code(kms.revoke_grant, KeyId=key["KeyId"], GrantId="f" * 64) == "NotFoundException"


async def test_create_grant_refuses_bad_requests_and_dry_run_creates_nothing(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    await aws_call(kms.create_alias, AliasName="alias/g", TargetKeyId=key["KeyId"])

    async def code(**kwargs: Any) -> str:
        args = {"KeyId": key["KeyId"], "GranteePrincipal": bob.arn, "Operations": ["Encrypt"], **kwargs}
        return await _code(kms.create_grant, **{k: v for k, v in args.items() if v is not None})

    assert await code(Operations=["Sign"]) == "ValidationException"
    assert await code(Operations=["CreateGrant"]) == "ValidationException"
    assert await code(GranteePrincipal=f"arn:aws:iam::{ACCOUNT_ID}:group/devs") == "InvalidArnException"
    assert await code(GranteePrincipal=f"arn:aws:iam::{ACCOUNT_ID}:user/nobody") == "InvalidArnException"
    assert await code(RetiringPrincipal="bob") == "InvalidArnException"
    assert await code(KeyId="alias/g") == "InvalidArnException"
    assert await code(GranteePrincipal=None, GranteeServicePrincipal="logs.us-east-1.amazonaws.com") == (
        "ValidationException"  # a service grantee needs a SourceArn constraint and a retiring principal
    )
    assert await code(DryRun=True) == "DryRunOperationException"
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []
    await aws_call(kms.disable_key, KeyId=key["KeyId"])
    assert await code() == "DisabledException"


async def test_named_grant_retry_returns_the_same_grant_with_a_new_token(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    args = {"KeyId": key["KeyId"], "GranteePrincipal": bob.arn, "Operations": ["Encrypt"], "Name": "svc"}
    first, again = [await aws_call(kms.create_grant, **args) for _ in range(2)]
    assert first["GrantId"] == again["GrantId"] and first["GrantToken"] != again["GrantToken"]
    changed = await aws_call(kms.create_grant, **{**args, "Operations": ["Encrypt", "Decrypt"]})
    assert changed["GrantId"] != first["GrantId"]
    await aws_call(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Decrypt"])

    page = await aws_call(kms.list_grants, KeyId=key["KeyId"], Limit=2)
    assert page["Truncated"] is True and len(page["Grants"]) == 2
    rest = await aws_call(kms.list_grants, KeyId=key["KeyId"], Limit=2, Marker=page["NextMarker"])
    assert rest["Truncated"] is False and len(rest["Grants"]) == 1
    ids = [g["GrantId"] for g in page["Grants"] + rest["Grants"]]
    assert ids[:2] == [first["GrantId"], changed["GrantId"]] and len(set(ids)) == 3
    assert await _code(kms.list_grants, KeyId=key["KeyId"], Marker="x") == "InvalidMarkerException"
    only = await aws_call(kms.list_grants, KeyId=key["KeyId"], GrantId=first["GrantId"])
    assert [g["GrantId"] for g in only["Grants"]] == [first["GrantId"]]


async def test_a_grant_to_another_account_works_by_key_arn_without_iam(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    carol = await nodes.identity(node, account_id=OTHER_ACCOUNT_ID, user="carol")  # no identity policy
    carol_kms = node.client(carol)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    await aws_call(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=carol.arn, Operations=["GenerateDataKey"])
    data_key = await aws_call(carol_kms.generate_data_key, KeyId=key["Arn"], KeySpec="AES_256")
    assert data_key["KeyId"] == key["Arn"]
    assert await _code(carol_kms.generate_data_key, KeyId=key["KeyId"], KeySpec="AES_256") == "NotFoundException"
    assert not await _allowed(carol_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p")


async def test_a_grant_that_allows_create_grant_cannot_widen_itself(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    dan = await nodes.identity(node, user="dan")
    bob_kms = node.client(bob)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    subset = {"EncryptionContextSubset": {"tenant": "blue"}}
    await aws_call(
        kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt", "CreateGrant"],
        Constraints=subset,
    )  # fmt: skip

    async def bob_grants(operations: list[str], constraints: dict[str, Any] | None) -> bool:
        args: dict[str, Any] = {"KeyId": key["Arn"], "GranteePrincipal": dan.arn, "Operations": operations}
        if constraints is not None:
            args["Constraints"] = constraints
        return await _allowed(bob_kms.create_grant, **args)

    assert await bob_grants(["Encrypt"], {"EncryptionContextSubset": {"tenant": "blue", "app": "x"}})
    assert await bob_grants(["Encrypt"], {"EncryptionContextEquals": {"tenant": "blue"}})
    assert not await bob_grants(["Encrypt"], None)
    assert not await bob_grants(["Encrypt"], {"EncryptionContextSubset": {"app": "x"}})
    assert not await bob_grants(["Decrypt"], subset)
    assert len((await aws_call(kms.list_grants, KeyId=key["KeyId"], GranteePrincipal=dan.arn))["Grants"]) == 2


LOGS = "logs.us-east-1.amazonaws.com"
LOG_GROUP = f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:app"


async def test_grants_to_service_principals_are_kept_listed_retired_and_never_used(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")  # no identity policy
    bob_kms = node.client(bob)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    source = {"SourceArn": LOG_GROUP}
    base = {"KeyId": key["KeyId"], "Operations": ["Encrypt", "Decrypt", "DescribeKey"]}

    async def code(**kwargs: Any) -> str:
        return await _code(kms.create_grant, **{k: v for k, v in {**base, **kwargs}.items() if v is not None})

    # The model's rules for the principal members.
    assert await code(GranteeServicePrincipal=LOGS, RetiringPrincipal=bob.arn) == "ValidationException"  # no SourceArn
    assert await code(GranteeServicePrincipal=LOGS, Constraints=source) == "ValidationException"  # no retiring
    assert await code(GranteeServicePrincipal=LOGS, GranteePrincipal=bob.arn, RetiringPrincipal=bob.arn,
                      Constraints=source) == "ValidationException"  # fmt: skip
    assert await code() == "ValidationException"  # no grantee at all
    assert await code(GranteeServicePrincipal=LOGS, RetiringPrincipal=bob.arn, RetiringServicePrincipal=LOGS,
                      Constraints=source) == "ValidationException"  # fmt: skip
    assert await code(GranteeServicePrincipal="logs", RetiringPrincipal=bob.arn, Constraints=source) == (
        "ValidationException"  # not a service principal (the model's pattern)
    )
    not_an_arn = {"SourceArn": "arn:aws:logs:us-east-1:acct:log-group:x"}  # the model's pattern: 12 digits
    assert await code(GranteePrincipal=bob.arn, Constraints=not_an_arn) == "ValidationException"
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []

    made = await aws_call(kms.create_grant, **base, GranteeServicePrincipal=LOGS, RetiringPrincipal=bob.arn,
                          Constraints=source, Name="logs")  # fmt: skip
    again = await aws_call(kms.create_grant, **base, GranteeServicePrincipal=LOGS, RetiringPrincipal=bob.arn,
                           Constraints=source, Name="logs")  # fmt: skip
    assert again["GrantId"] == made["GrantId"]  # a named retry
    (entry,) = (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"]
    assert entry["GranteeServicePrincipal"] == LOGS and "GranteePrincipal" not in entry
    assert entry["RetiringPrincipal"] == bob.arn and entry["Constraints"] == source
    assert entry["Operations"] == ["Encrypt", "Decrypt", "DescribeKey"]
    # Nobody here is the service: the grant lets no caller use the key, not even with its token.
    token = [made["GrantToken"]]
    assert not await _allowed(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", GrantTokens=token)
    assert not await _allowed(bob_kms.describe_key, KeyId=key["Arn"], GrantTokens=token)
    # AWS: the service-principal filters are only usable by callers in a service principal.
    assert not await _allowed(kms.list_grants, KeyId=key["KeyId"], GranteeServicePrincipal=LOGS)
    assert not await _allowed(kms.list_retirable_grants, RetiringServicePrincipal=LOGS)
    assert await _code(kms.list_retirable_grants, RetiringPrincipal=bob.arn, RetiringServicePrincipal=LOGS) == (
        "ValidationException"
    )
    assert await _code(kms.list_retirable_grants) == "ValidationException"
    listed = await aws_call(kms.list_retirable_grants, RetiringPrincipal=bob.arn)
    assert [g["GrantId"] for g in listed["Grants"]] == [made["GrantId"]]
    await aws_call(bob_kms.retire_grant, GrantToken=made["GrantToken"])  # the retiring principal, no IAM permission
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []

    # Retired by a service principal: nobody here but the issuing account's root may retire it.
    by_service = await aws_call(kms.create_grant, **base, GranteeServicePrincipal=LOGS,
                                RetiringServicePrincipal=LOGS, Constraints=source)  # fmt: skip
    (entry,) = (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"]
    assert entry["RetiringServicePrincipal"] == LOGS and "RetiringPrincipal" not in entry
    assert not await _allowed(bob_kms.retire_grant, GrantToken=by_service["GrantToken"])
    root = node.client(await nodes.identity(node, user=None))
    await aws_call(root.retire_grant, KeyId=key["Arn"], GrantId=by_service["GrantId"])
    assert (await aws_call(kms.list_grants, KeyId=key["KeyId"]))["Grants"] == []


async def test_a_source_arn_constraint_leaves_an_iam_grantee_only_retire_grant(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob, dan = await nodes.identity(node, user="bob"), await nodes.identity(node, user="dan")
    bob_kms = node.client(bob)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    source = {"SourceArn": LOG_GROUP}
    grant = await aws_call(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Constraints=source,
                           Operations=["Encrypt", "DescribeKey", "CreateGrant", "RetireGrant"])  # fmt: skip
    token = [grant["GrantToken"]]
    # No request to regionkms is made on behalf of an AWS resource, so the constraint never holds ...
    assert not await _allowed(bob_kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", GrantTokens=token)
    assert not await _allowed(bob_kms.describe_key, KeyId=key["Arn"], GrantTokens=token)
    assert not await _allowed(bob_kms.create_grant, KeyId=key["Arn"], GranteePrincipal=dan.arn, Operations=["Encrypt"],
                              Constraints=source, GrantTokens=token)  # fmt: skip
    # ... but AWS does not apply it to RetireGrant.
    await aws_call(bob_kms.retire_grant, GrantToken=grant["GrantToken"])
    # Supported on every key type (unlike the encryption-context constraints).
    signer = (await aws_call(kms.create_key, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"))["KeyMetadata"]
    await aws_call(kms.create_grant, KeyId=signer["KeyId"], GranteePrincipal=bob.arn, Operations=["Sign"],
                   Constraints=source)  # fmt: skip
    assert await _code(kms.create_grant, KeyId=signer["KeyId"], GranteePrincipal=bob.arn, Operations=["Sign"],
                       Constraints={"EncryptionContextSubset": {"a": "b"}}) == "ValidationException"  # fmt: skip


async def test_key_policy_conditions_on_service_principal_grants(nodes: NodeFactory) -> None:
    node = await nodes.start(extra=QUIET)
    kms = node.client(await nodes.identity(node))
    bob = await nodes.identity(node, user="bob")
    root = f"arn:aws:iam::{ACCOUNT_ID}:root"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"StringEquals": {"kms:GranteeServicePrincipal": "sns.us-east-1.amazonaws.com"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"StringLike": {"kms:GrantConstraintSourceArn": "arn:aws:logs:*:log-group:secret*"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"StringEquals": {"kms:GrantConstraintType": "SourceArn",
                                        "kms:GranteePrincipal": bob.arn}}},
    ]}  # fmt: skip
    key = (await aws_call(kms.create_key, Policy=json.dumps(policy)))["KeyMetadata"]

    async def allowed(service: str, source_arn: str) -> bool:
        return await _allowed(kms.create_grant, KeyId=key["KeyId"], GranteeServicePrincipal=service,
                              RetiringPrincipal=bob.arn, Operations=["Encrypt"],
                              Constraints={"SourceArn": source_arn})  # fmt: skip

    assert await allowed(LOGS, LOG_GROUP)
    assert not await allowed("sns.us-east-1.amazonaws.com", LOG_GROUP)
    assert not await allowed(LOGS, f"arn:aws:logs:us-east-1:{ACCOUNT_ID}:log-group:secret-app")
    assert not await _allowed(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt"],
                              Constraints={"SourceArn": LOG_GROUP})  # fmt: skip
    await aws_call(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=bob.arn, Operations=["Encrypt"])
