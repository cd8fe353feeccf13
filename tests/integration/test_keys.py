"""Key lifecycle through boto3: CreateKey, DescribeKey, ListKeys, Enable/DisableKey,
UpdateKeyDescription, GetKeyLastUsage, AWS managed keys (issue 3)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from regiond.app import POOL
from regiond.protocol.routes import SERVICES
from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import ACCOUNT_ID, NodeFactory


async def test_create_key_returns_the_full_key_metadata(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    md = (await aws_call(kms.create_key, Description="payments"))["KeyMetadata"]
    assert md["AWSAccountId"] == ACCOUNT_ID
    assert md["Arn"] == f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/{md['KeyId']}"
    assert md["CreationDate"] >= before
    assert md["Enabled"] is True
    assert md["Description"] == "payments"
    assert (md["KeyUsage"], md["KeySpec"], md["CustomerMasterKeySpec"]) == (
        "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "SYMMETRIC_DEFAULT",
    )  # fmt: skip
    assert (md["KeyState"], md["Origin"], md["KeyManager"]) == ("Enabled", "AWS_KMS", "CUSTOMER")
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert md["MultiRegion"] is False
    for absent in ("DeletionDate", "ValidTo", "ExpirationModel", "SigningAlgorithms", "PendingDeletionWindowInDays"):
        assert absent not in md
    # DescribeKey by key id, key ARN, alias name and alias ARN gives the same metadata
    await aws_call(kms.create_alias, AliasName="alias/payments", TargetKeyId=md["KeyId"])
    alias_arn = f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:alias/payments"
    for ref in (md["KeyId"], md["Arn"], "alias/payments", alias_arn):
        assert (await aws_call(kms.describe_key, KeyId=ref))["KeyMetadata"] == md


async def test_describe_key_errors(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    missing = "11111111-2222-4333-8444-555555555555"
    err = await expect_error(kms.describe_key, KeyId=missing)
    assert error_code(err) == "NotFoundException"
    assert err.response["Error"]["Message"] == f"Key 'arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/{missing}' does not exist"
    err = await expect_error(kms.describe_key, KeyId="alias/nope")
    assert error_code(err) == "NotFoundException"
    assert err.response["Error"]["Message"] == f"Alias arn:aws:kms:us-east-1:{ACCOUNT_ID}:alias/nope is not found."
    assert error_code(await expect_error(kms.describe_key, KeyId="not-a-key")) == "NotFoundException"
    err = await expect_error(kms.describe_key, KeyId=f"arn:aws:kms:eu-west-1:{ACCOUNT_ID}:key/{missing}")
    assert (error_code(err), err.response["Error"]["Message"]) == ("NotFoundException", "Invalid arn eu-west-1")
    assert error_code(await expect_error(kms.describe_key, KeyId="arn:aws:s3:::bucket")) == "InvalidArnException"
    assert error_code(await expect_error(kms.enable_key, KeyId="alias/anything")) == "InvalidArnException"


async def test_create_key_options_and_refusals(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    kms = node.client(ident)
    external = (await aws_call(kms.create_key, Origin="EXTERNAL"))["KeyMetadata"]
    assert (external["Origin"], external["KeyState"], external["Enabled"]) == ("EXTERNAL", "PendingImport", False)
    err = await expect_error(kms.encrypt, KeyId=external["KeyId"], Plaintext=b"p")
    assert error_code(err) == "KMSInvalidStateException"
    assert err.response["Error"]["Message"] == f"{external['Arn']} is pending import."
    mrk = (await aws_call(kms.create_key, MultiRegion=True))["KeyMetadata"]  # replication: tests/cluster/
    assert mrk["KeyId"].startswith("mrk-") and mrk["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
    assert error_code(await expect_error(kms.create_key, KeySpec="SM2", KeyUsage="SIGN_VERIFY")) == (
        "UnsupportedOperationException"
    )
    assert error_code(await expect_error(kms.create_key, Policy="{not json")) == "MalformedPolicyDocumentException"
    # a policy that would lock the caller out is refused unless the check is bypassed
    lockout = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"}, "Action": "kms:*", "Resource": "*"}
    ]})  # fmt: skip
    err = await expect_error(kms.create_key, Policy=lockout)
    assert error_code(err) == "MalformedPolicyDocumentException"
    assert "will not allow you to update the key policy" in err.response["Error"]["Message"]
    bypassed = (await aws_call(kms.create_key, Policy=lockout, BypassPolicyLockoutSafetyCheck=True))["KeyMetadata"]
    # the stored policy is the one given: even the creator's account cannot describe the key now
    assert error_code(await expect_error(kms.describe_key, KeyId=bypassed["KeyId"])) == "AccessDeniedException"
    nobody = await nodes.identity(node, user="nobody")
    assert error_code(await expect_error(node.client(nobody).create_key)) == "AccessDeniedException"


async def test_enable_disable_and_update_description(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key, Description="old"))["KeyMetadata"]["KeyId"]
    await aws_call(kms.disable_key, KeyId=key_id)
    await aws_call(kms.disable_key, KeyId=key_id)  # idempotent, as in AWS
    assert (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]["KeyState"] == "Disabled"
    await aws_call(kms.enable_key, KeyId=key_id)
    await aws_call(kms.update_key_description, KeyId=key_id, Description="new")
    md = (await aws_call(kms.describe_key, KeyId=key_id))["KeyMetadata"]
    assert (md["KeyState"], md["Description"]) == ("Enabled", "new")
    await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
    for call in (kms.enable_key, kms.disable_key):
        err = await expect_error(call, KeyId=key_id)
        assert error_code(err) == "KMSInvalidStateException"
        assert "is pending deletion." in err.response["Error"]["Message"]
    err = await expect_error(kms.update_key_description, KeyId=key_id, Description="x")
    assert error_code(err) == "KMSInvalidStateException"


async def test_list_keys_pages_with_limit_and_marker(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    created = {(await aws_call(kms.create_key))["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen: list[str] = []
    page = await aws_call(kms.list_keys, Limit=2)
    while True:
        assert len(page["Keys"]) <= 2
        for entry in page["Keys"]:
            assert entry["KeyArn"].endswith(f":key/{entry['KeyId']}")
            seen.append(entry["KeyId"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        page = await aws_call(kms.list_keys, Limit=2, Marker=page["NextMarker"])
    assert set(seen) == created and len(seen) == 5
    assert error_code(await expect_error(kms.list_keys, Marker="garbage")) == "InvalidMarkerException"
    # keys of another account are not listed
    other = node.client(await nodes.identity(node, account_id="444455556666"))
    assert (await aws_call(other.list_keys))["Keys"] == []


async def test_aws_managed_key_is_created_on_first_use_and_cannot_be_changed(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    first, second = await asyncio.gather(
        aws_call(kms.describe_key, KeyId="alias/aws/s3"), aws_call(kms.describe_key, KeyId="alias/aws/s3")
    )
    md = first["KeyMetadata"]
    assert second["KeyMetadata"]["KeyId"] == md["KeyId"]  # two racing first uses made one key
    assert (md["KeyManager"], md["KeyState"], md["Origin"]) == ("AWS", "Enabled", "AWS_KMS")
    aliases = (await aws_call(kms.list_aliases, KeyId=md["KeyId"]))["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/aws/s3"]
    for call, extra in (
        (kms.disable_key, {}),
        (kms.schedule_key_deletion, {}),
        (kms.update_key_description, {"Description": "mine"}),
        (kms.tag_resource, {"Tags": [{"TagKey": "a", "TagValue": "b"}]}),
    ):
        assert error_code(await expect_error(call, KeyId=md["KeyId"], **extra)) == "AccessDeniedException"
    # the AWS managed policy allows use only through the service (kms:ViaService)
    assert error_code(await expect_error(kms.encrypt, KeyId="alias/aws/s3", Plaintext=b"p")) == "AccessDeniedException"
    assert error_code(await expect_error(kms.delete_alias, AliasName="alias/aws/s3")) == "AccessDeniedException"
    assert error_code(await expect_error(kms.describe_key, KeyId="alias/aws/Not_A_Service")) == "NotFoundException"


async def test_aws_managed_keys_exist_only_for_predefined_aliases(nodes: NodeFactory) -> None:
    """AWS makes an AWS managed key on first use of a "predefined AWS alias" only. Any other
    ``alias/aws/<name>`` made a key (before authorization) for every name a caller tried, even a
    caller with no permission at all: unbounded keys, material and aliases, none audited as made."""
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    nobody = node.client(await nodes.identity(node, user="nobody", policy={
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}))  # fmt: skip

    async def count() -> int:
        return len((await aws_call(admin.list_keys, Limit=1000))["Keys"])

    before = await count()
    for name in ("made-up-1", "made-up-2", "zz9", "s3x"):
        for kms in (nobody, admin):
            err = await expect_error(kms.describe_key, KeyId=f"alias/aws/{name}")
            assert error_code(err) == "NotFoundException", name
    assert await count() == before
    assert "alias/aws/made-up-1" not in {a["AliasName"] for a in (await aws_call(admin.list_aliases))["Aliases"]}
    # a predefined one is still made on first use
    assert (await aws_call(admin.describe_key, KeyId="alias/aws/ebs"))["KeyMetadata"]["KeyManager"] == "AWS"
    assert await count() == before + 1


async def test_get_key_last_usage_reports_the_last_cryptographic_use(nodes: NodeFactory) -> None:
    node = await nodes.start(extra={"usage_flush_interval_s": "3600"})  # the test flushes by hand
    kms = node.client(await nodes.identity(node))
    md = (await aws_call(kms.create_key))["KeyMetadata"]
    unused = await aws_call(kms.get_key_last_usage, KeyId=md["KeyId"])
    assert unused["KeyLastUsage"] == {}
    assert unused["KeyCreationDate"] == md["CreationDate"]
    enc = await aws_call(kms.encrypt, KeyId=md["KeyId"], Plaintext=b"p")
    used = await aws_call(kms.get_key_last_usage, KeyId=md["Arn"])
    assert used["KeyLastUsage"]["Operation"] == "Encrypt"
    assert used["KeyLastUsage"]["KmsRequestId"] == enc["ResponseMetadata"]["RequestId"]
    # flushed to the database in a batch, and still the answer afterwards
    assert await node.app[SERVICES].keys.usage.flush(node.app[POOL]) == 1
    await aws_call(kms.decrypt, CiphertextBlob=enc["CiphertextBlob"])
    await node.app[SERVICES].keys.usage.flush(node.app[POOL])
    assert (await aws_call(kms.get_key_last_usage, KeyId=md["KeyId"]))["KeyLastUsage"]["Operation"] == "Decrypt"
