"""Tags through boto3: TagResource, UntagResource, ListResourceTags and AWS's limits (issue 3)."""

from __future__ import annotations

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory


def _tags(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in pairs.items()]


async def test_tag_untag_and_list(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key, Tags=_tags({"team": "pay", "env": "prod"})))["KeyMetadata"]["KeyId"]
    listed = await aws_call(kms.list_resource_tags, KeyId=key_id)
    assert listed["Tags"] == _tags({"env": "prod", "team": "pay"})
    assert listed["Truncated"] is False
    await aws_call(kms.tag_resource, KeyId=key_id, Tags=_tags({"env": "dev", "cost": ""}))  # replaces env
    await aws_call(kms.untag_resource, KeyId=key_id, TagKeys=["team", "absent"])
    assert (await aws_call(kms.list_resource_tags, KeyId=key_id))["Tags"] == _tags({"cost": "", "env": "dev"})
    page = await aws_call(kms.list_resource_tags, KeyId=key_id, Limit=1)
    assert (page["Tags"], page["Truncated"]) == (_tags({"cost": ""}), True)
    rest = await aws_call(kms.list_resource_tags, KeyId=key_id, Limit=1, Marker=page["NextMarker"])
    assert (rest["Tags"], rest["Truncated"]) == (_tags({"env": "dev"}), False)
    assert error_code(await expect_error(kms.list_resource_tags, KeyId="alias/x")) == "InvalidArnException"


async def test_tag_limits_are_tag_exceptions(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    fifty = {f"k{i:02}": "v" for i in range(50)}
    await aws_call(kms.tag_resource, KeyId=key_id, Tags=_tags(fifty))
    err = await expect_error(kms.tag_resource, KeyId=key_id, Tags=_tags({"one-more": "v"}))
    assert error_code(err) == "TagException"
    await aws_call(kms.tag_resource, KeyId=key_id, Tags=_tags({"k00": "replaced"}))  # replacing stays at 50
    assert (
        error_code(await expect_error(kms.create_key, Tags=_tags({f"t{i}": "v" for i in range(51)}))) == "TagException"
    )
    assert error_code(await expect_error(kms.tag_resource, KeyId=key_id, Tags=_tags({"aws:x": "v"}))) == "TagException"
    assert (
        error_code(await expect_error(kms.tag_resource, KeyId=key_id, Tags=_tags({"bad#char": "v"}))) == "TagException"
    )
    assert (
        error_code(await expect_error(kms.tag_resource, KeyId=key_id, Tags=_tags({"k" * 129: "v"})))
        == "ValidationException"
    )
    assert (
        error_code(await expect_error(kms.tag_resource, KeyId=key_id, Tags=_tags({"k": "v" * 257})))
        == "ValidationException"
    )
    assert len((await aws_call(kms.list_resource_tags, KeyId=key_id, Limit=100))["Tags"]) == 50


async def test_tags_of_a_key_pending_deletion_are_frozen_but_listable(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key, Tags=_tags({"a": "b"})))["KeyMetadata"]["KeyId"]
    await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
    assert (
        error_code(await expect_error(kms.tag_resource, KeyId=key_id, Tags=_tags({"c": "d"})))
        == "KMSInvalidStateException"
    )
    assert error_code(await expect_error(kms.untag_resource, KeyId=key_id, TagKeys=["a"])) == "KMSInvalidStateException"
    assert (await aws_call(kms.list_resource_tags, KeyId=key_id))["Tags"] == _tags({"a": "b"})
