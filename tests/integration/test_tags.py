"""Tags through boto3: TagResource, UntagResource, ListResourceTags and AWS's limits (issue 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.exceptions
import pytest

from tests.support.cluster import NodeFactory


def _code(exc: BaseException) -> str:
    assert isinstance(exc, botocore.exceptions.ClientError)
    return str(exc.response["Error"]["Code"])


async def _call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def _error(fn: Any, **kwargs: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return info.value


def _tags(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in pairs.items()]


async def test_tag_untag_and_list(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await _call(kms.create_key, Tags=_tags({"team": "pay", "env": "prod"})))["KeyMetadata"]["KeyId"]
    listed = await _call(kms.list_resource_tags, KeyId=key_id)
    assert listed["Tags"] == _tags({"env": "prod", "team": "pay"})
    assert listed["Truncated"] is False
    await _call(kms.tag_resource, KeyId=key_id, Tags=_tags({"env": "dev", "cost": ""}))  # replaces env
    await _call(kms.untag_resource, KeyId=key_id, TagKeys=["team", "absent"])
    assert (await _call(kms.list_resource_tags, KeyId=key_id))["Tags"] == _tags({"cost": "", "env": "dev"})
    page = await _call(kms.list_resource_tags, KeyId=key_id, Limit=1)
    assert (page["Tags"], page["Truncated"]) == (_tags({"cost": ""}), True)
    rest = await _call(kms.list_resource_tags, KeyId=key_id, Limit=1, Marker=page["NextMarker"])
    assert (rest["Tags"], rest["Truncated"]) == (_tags({"env": "dev"}), False)
    assert _code(await _error(kms.list_resource_tags, KeyId="alias/x")) == "InvalidArnException"


async def test_tag_limits_are_tag_exceptions(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await _call(kms.create_key))["KeyMetadata"]["KeyId"]
    fifty = {f"k{i:02}": "v" for i in range(50)}
    await _call(kms.tag_resource, KeyId=key_id, Tags=_tags(fifty))
    err = await _error(kms.tag_resource, KeyId=key_id, Tags=_tags({"one-more": "v"}))
    assert _code(err) == "TagException"
    await _call(kms.tag_resource, KeyId=key_id, Tags=_tags({"k00": "replaced"}))  # replacing stays at 50
    assert _code(await _error(kms.create_key, Tags=_tags({f"t{i}": "v" for i in range(51)}))) == "TagException"
    assert _code(await _error(kms.tag_resource, KeyId=key_id, Tags=_tags({"aws:x": "v"}))) == "TagException"
    assert _code(await _error(kms.tag_resource, KeyId=key_id, Tags=_tags({"bad#char": "v"}))) == "TagException"
    assert _code(await _error(kms.tag_resource, KeyId=key_id, Tags=_tags({"k" * 129: "v"}))) == "ValidationException"
    assert _code(await _error(kms.tag_resource, KeyId=key_id, Tags=_tags({"k": "v" * 257}))) == "ValidationException"
    assert len((await _call(kms.list_resource_tags, KeyId=key_id, Limit=100))["Tags"]) == 50


async def test_tags_of_a_key_pending_deletion_are_frozen_but_listable(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await _call(kms.create_key, Tags=_tags({"a": "b"})))["KeyMetadata"]["KeyId"]
    await _call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
    assert _code(await _error(kms.tag_resource, KeyId=key_id, Tags=_tags({"c": "d"}))) == "KMSInvalidStateException"
    assert _code(await _error(kms.untag_resource, KeyId=key_id, TagKeys=["a"])) == "KMSInvalidStateException"
    assert (await _call(kms.list_resource_tags, KeyId=key_id))["Tags"] == _tags({"a": "b"})
