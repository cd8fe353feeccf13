"""Aliases through boto3: create, update, delete, list, name rules, races (issue 3)."""

from __future__ import annotations

import asyncio

import botocore.exceptions

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import ACCOUNT_ID, NodeFactory


async def test_alias_lifecycle_create_update_list_delete(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    a = (await aws_call(kms.create_key))["KeyMetadata"]
    b = (await aws_call(kms.create_key))["KeyMetadata"]
    await aws_call(kms.create_alias, AliasName="alias/app", TargetKeyId=a["Arn"])
    listed = (await aws_call(kms.list_aliases))["Aliases"]
    assert len(listed) == 1
    entry = listed[0]
    assert entry["AliasName"] == "alias/app"
    assert entry["AliasArn"] == f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:alias/app"
    assert entry["TargetKeyId"] == a["KeyId"]
    assert entry["CreationDate"] and entry["LastUpdatedDate"]
    blob = (await aws_call(kms.encrypt, KeyId="alias/app", Plaintext=b"p"))["CiphertextBlob"]
    await aws_call(kms.update_alias, AliasName="alias/app", TargetKeyId=b["KeyId"])
    assert (await aws_call(kms.encrypt, KeyId="alias/app", Plaintext=b"p"))["KeyId"] == b["Arn"]
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["KeyId"] == a["Arn"]  # old blobs keep their key
    assert (await aws_call(kms.list_aliases, KeyId=a["KeyId"]))["Aliases"] == []
    assert [x["AliasName"] for x in (await aws_call(kms.list_aliases, KeyId=b["Arn"]))["Aliases"]] == ["alias/app"]
    await aws_call(kms.delete_alias, AliasName="alias/app")
    assert error_code(await expect_error(kms.describe_key, KeyId="alias/app")) == "NotFoundException"
    err = await expect_error(kms.delete_alias, AliasName="alias/app")
    assert error_code(err) == "NotFoundException"
    assert (
        error_code(await expect_error(kms.update_alias, AliasName="alias/app", TargetKeyId=a["KeyId"]))
        == "NotFoundException"
    )


async def test_alias_name_rules(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    err = await expect_error(kms.create_alias, AliasName="alias/aws/mine", TargetKeyId=key_id)
    assert error_code(err) == "InvalidAliasNameException"
    err = await expect_error(kms.create_alias, AliasName="noprefix", TargetKeyId=key_id)
    assert error_code(err) == "ValidationException"
    assert 'must start with the prefix "alias/"' in err.response["Error"]["Message"]
    err = await expect_error(kms.create_alias, AliasName="alias/has:colon", TargetKeyId=key_id)
    assert error_code(err) == "ValidationException"
    err = await expect_error(kms.create_alias, AliasName="alias/" + "x" * 251, TargetKeyId=key_id)
    assert error_code(err) == "ValidationException"
    err = await expect_error(kms.create_alias, AliasName="alias/ok", TargetKeyId="alias/other")
    assert error_code(err) == "InvalidArnException"
    missing = "11111111-2222-4333-8444-555555555555"
    assert (
        error_code(await expect_error(kms.create_alias, AliasName="alias/ok", TargetKeyId=missing))
        == "NotFoundException"
    )
    await aws_call(kms.create_alias, AliasName="alias/Mixed_Case-1/sub", TargetKeyId=key_id)


async def test_duplicate_alias_is_already_exists_even_when_racing(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    keys = [(await aws_call(kms.create_key))["KeyMetadata"]["KeyId"] for _ in range(2)]
    await aws_call(kms.create_alias, AliasName="alias/once", TargetKeyId=keys[0])
    err = await expect_error(kms.create_alias, AliasName="alias/once", TargetKeyId=keys[1])
    assert error_code(err) == "AlreadyExistsException"
    assert err.response["Error"]["Message"] == (
        f"An alias with the name arn:aws:kms:us-east-1:{ACCOUNT_ID}:alias/once already exists"
    )

    async def attempt(key_id: str) -> str:
        try:
            await aws_call(kms.create_alias, AliasName="alias/race", TargetKeyId=key_id)
        except botocore.exceptions.ClientError as exc:
            return error_code(exc)
        return "ok"

    outcomes = await asyncio.gather(*(attempt(keys[i % 2]) for i in range(6)))
    assert sorted(outcomes) == ["AlreadyExistsException"] * 5 + ["ok"]


async def test_list_aliases_pages(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    names = [f"alias/n{i}" for i in range(5)]
    for name in names:
        await aws_call(kms.create_alias, AliasName=name, TargetKeyId=key_id)
    seen: list[str] = []
    page = await aws_call(kms.list_aliases, Limit=2)
    while True:
        seen += [a["AliasName"] for a in page["Aliases"]]
        if not page["Truncated"]:
            break
        page = await aws_call(kms.list_aliases, Limit=2, Marker=page["NextMarker"])
    assert seen == names
    assert error_code(await expect_error(kms.list_aliases, Marker="bogus")) == "InvalidMarkerException"


async def test_alias_of_a_key_pending_deletion(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    live = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.create_alias, AliasName="alias/going", TargetKeyId=key_id)
    await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
    err = await expect_error(kms.create_alias, AliasName="alias/late", TargetKeyId=key_id)
    assert error_code(err) == "KMSInvalidStateException"
    # an alias may move away from a key pending deletion, but not onto one
    err = await expect_error(kms.update_alias, AliasName="alias/going", TargetKeyId=key_id)
    assert error_code(err) == "KMSInvalidStateException"
    await aws_call(kms.update_alias, AliasName="alias/going", TargetKeyId=live)
