"""What works for symmetric keys works for the other key types: aliases, tags, GetKeyLastUsage, deletion."""

from __future__ import annotations

import pytest

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory


@pytest.mark.parametrize(
    ("create", "use"),
    [
        ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
         ("sign", {"Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"}, "Sign")),
        ({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
         ("generate_mac", {"Message": b"m", "MacAlgorithm": "HMAC_SHA_256"}, "GenerateMac")),
        ({"KeySpec": "ML_KEM_768", "KeyUsage": "ENCAPSULATE_DECAPSULATE"},
         ("encapsulate", {"EncapsulationAlgorithm": "ML_KEM"}, "Encapsulate")),
    ],
)  # fmt: skip
async def test_aliases_tags_last_usage_and_deletion(
    nodes: NodeFactory, create: dict[str, str], use: tuple[str, dict[str, object], str]
) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key, **create, Tags=[{"TagKey": "team", "TagValue": "release"}]))["KeyMetadata"]
    await aws_call(kms.create_alias, AliasName="alias/typed", TargetKeyId=key["KeyId"])
    tags = (await aws_call(kms.list_resource_tags, KeyId=key["KeyId"]))["Tags"]
    assert tags == [{"TagKey": "team", "TagValue": "release"}]
    method, kwargs, operation = use
    out = await aws_call(getattr(kms, method), KeyId="alias/typed", **kwargs)
    assert out["KeyId"] == key["Arn"]
    usage = await aws_call(kms.get_key_last_usage, KeyId=key["KeyId"])
    assert usage["KeyLastUsage"]["Operation"] == operation
    await aws_call(kms.schedule_key_deletion, KeyId=key["KeyId"], PendingWindowInDays=7)
    err = await expect_error(getattr(kms, method), KeyId="alias/typed", **kwargs)
    assert error_code(err) == "KMSInvalidStateException"
    await aws_call(kms.cancel_key_deletion, KeyId=key["KeyId"])
    assert (await aws_call(kms.describe_key, KeyId="alias/typed"))["KeyMetadata"]["KeyState"] == "Disabled"
