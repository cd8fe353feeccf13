"""The wire protocol and SigV4 as boto3 and raw clients see them (issue: platform)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import botocore.exceptions
import pytest

from tests.support.cluster import Identity, NodeFactory
from tests.support.raw import signed_post

KMS = "TrentService"


def _code(exc: BaseException) -> str:
    assert isinstance(exc, botocore.exceptions.ClientError)
    return str(exc.response["Error"]["Code"])


async def _call_error(fn, **kwargs) -> botocore.exceptions.ClientError:  # type: ignore[no-untyped-def]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return info.value


async def test_wrong_secret_is_invalid_signature(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    bad = Identity(ident.arn, ident.access_key_id, "x" * 40)
    err = await _call_error(node.client(bad).list_keys)
    assert _code(err) == "InvalidSignatureException"


async def test_unknown_access_key_is_unrecognized_client(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    stranger = Identity(ident.arn, "AKIAAAAAAAAAAAAAAAAA", ident.secret_access_key)
    err = await _call_error(node.client(stranger).list_keys)
    assert _code(err) == "UnrecognizedClientException"


async def test_wrong_region_in_scope_is_invalid_signature(nodes: NodeFactory) -> None:
    node = await nodes.start("us-east-1")
    ident = await nodes.identity(node)
    err = await _call_error(node.client(ident, region="eu-west-1").list_keys)
    assert _code(err) == "InvalidSignatureException"
    assert "region" in err.response["Error"]["Message"]


async def test_timestamp_sixteen_minutes_old_is_rejected(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    status, body, _ = await signed_post(node.endpoint, node.region, ident, f"{KMS}.ListKeys", b"{}", now=old)
    assert status == 400
    assert body["__type"] == "InvalidSignatureException"
    assert "Signature expired" in body["message"]


async def test_timestamp_fourteen_minutes_old_is_accepted(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=14)
    _status, body, _ = await signed_post(
        node.endpoint, node.region, ident, f"{KMS}.GenerateRandom", b'{"NumberOfBytes": 8}', now=old
    )
    assert body.get("__type") != "InvalidSignatureException"


async def test_missing_authorization_is_missing_token(nodes: NodeFactory) -> None:
    node = await nodes.start()
    status, body, headers = await signed_post(node.endpoint, node.region, None, f"{KMS}.ListKeys", b"{}")
    assert status == 400
    assert body["__type"] == "MissingAuthenticationTokenException"
    assert headers.get("x-amzn-RequestId")


async def test_bad_json_is_serialization_exception(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    status, body, headers = await signed_post(node.endpoint, node.region, ident, f"{KMS}.ListKeys", b"{not json")
    assert (status, body["__type"]) == (400, "SerializationException")
    assert headers.get("x-amzn-RequestId")


async def test_unknown_operation(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    status, body, _ = await signed_post(node.endpoint, node.region, ident, f"{KMS}.MakeCoffee", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, body, _ = await signed_post(node.endpoint, node.region, ident, "Nope.ListKeys", b"{}")
    assert body["__type"] == "UnknownOperationException"


async def test_missing_required_member_names_the_field(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    status, body, _ = await signed_post(node.endpoint, node.region, ident, f"{KMS}.DescribeKey", b"{}")
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "keyId" in body["message"]


async def test_overlong_description_is_validation_error(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    err = await _call_error(node.client(ident).create_key, Description="d" * 8193)
    assert _code(err) == "ValidationException"
    assert "description" in err.response["Error"]["Message"]


async def test_body_over_one_mebibyte_is_rejected(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    body = json.dumps({"Description": "x" * (1024 * 1024 + 10)}).encode()
    status, payload, headers = await signed_post(node.endpoint, node.region, ident, f"{KMS}.CreateKey", body)
    assert status == 413
    assert payload["__type"] == "RequestEntityTooLargeException"
    assert headers.get("x-amzn-RequestId")


async def test_every_response_has_a_request_id(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    resp = await asyncio.to_thread(node.client(ident).generate_random, NumberOfBytes=16)
    assert resp["ResponseMetadata"]["RequestId"]


async def test_iam_admin_api_creates_user_and_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    root = await nodes.identity(node, user=None)
    status, body, _ = await signed_post(
        node.endpoint, node.region, root, "RegionKmsIam.CreateUser", b'{"UserName": "alice"}'
    )
    assert status == 200, body
    assert body["User"]["Arn"] == "arn:aws:iam::111122223333:user/alice"
    status, body, _ = await signed_post(
        node.endpoint, node.region, root, "RegionKmsIam.CreateAccessKey", b'{"UserName": "alice"}'
    )
    alice = Identity(
        "arn:aws:iam::111122223333:user/alice", body["AccessKey"]["AccessKeyId"], body["AccessKey"]["SecretAccessKey"]
    )
    status, body, _ = await signed_post(node.endpoint, node.region, alice, "RegionKmsIam.GetCallerIdentity", b"{}")
    assert body["Arn"] == alice.arn
    # alice has no identity policy: she may not create users
    status, body, _ = await signed_post(
        node.endpoint, node.region, alice, "RegionKmsIam.CreateUser", b'{"UserName": "mallory"}'
    )
    assert body["__type"] == "AccessDeniedException"


async def test_inactive_access_key_is_refused_at_once(nodes: NodeFactory) -> None:
    node = await nodes.start()
    root = await nodes.identity(node, user=None)
    admin = await nodes.identity(node)
    await asyncio.to_thread(node.client(admin).generate_random, NumberOfBytes=8)  # warm the cache
    body = json.dumps({"UserName": "admin", "AccessKeyId": admin.access_key_id, "Status": "Inactive"}).encode()
    status, _, _ = await signed_post(node.endpoint, node.region, root, "RegionKmsIam.UpdateAccessKey", body)
    assert status == 200
    for _ in range(50):  # LISTEN/NOTIFY reaches the cache within a second
        try:
            await asyncio.to_thread(node.client(admin).generate_random, NumberOfBytes=8)
        except botocore.exceptions.ClientError as exc:
            assert _code(exc) == "UnrecognizedClientException"
            return
        await asyncio.sleep(0.05)
    pytest.fail("an inactive access key kept working")
