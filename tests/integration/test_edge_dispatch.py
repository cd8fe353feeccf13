"""A request is dispatched on exactly what its signature covers (issue 13, finding 1).

The attack: capture a request a client really signed, add a second ``X-Amz-Target`` naming
another operation, and replay it byte for byte over raw HTTP. SigV4 canonicalises repeated
headers as their values joined with commas, so the captured signature no longer covers the
request (InvalidSignatureException); and even a client that signs both values gets the joined
value dispatched, which names no operation (UnknownOperationException).
"""

from __future__ import annotations

import asyncio
import urllib.parse

from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.store.pool import create_pool
from tests.support.aws import aws_call
from tests.support.cluster import ACCOUNT_ID, Node, NodeFactory
from tests.support.raw import capture_boto3_request, raw_request, sign_pairs


def _with_host(node: Node, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    if any(name.lower() == b"host" for name, _ in headers):
        return headers
    return [(b"Host", urllib.parse.urlsplit(node.endpoint).netloc.encode()), *headers]


async def _access_keys(node: Node, arn: str) -> list[tuple[str, str]]:
    pool = await create_pool(node.database_url, min_size=1, max_size=1)
    try:
        return await IamService(pool, node.keyring).list_access_keys(arn)
    finally:
        await pool.close()


async def test_replayed_list_keys_with_a_second_target_creates_no_access_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)  # kms:* and iam:* on *: the attack's prize if dispatch is wrong
    root = principal_arn(ACCOUNT_ID, PrincipalKind.ROOT, "")
    before = await _access_keys(node, root)
    client = node.client(admin)
    captured = capture_boto3_request(client, "ListKeys")
    await aws_call(client.list_keys)
    headers = _with_host(node, captured["headers"])
    assert any(name.lower() == b"x-amz-target" for name, _ in headers)

    forged = [(b"X-Amz-Target", b"RegionKmsIam.CreateAccessKey"), *headers]
    resp = await raw_request(node.endpoint, forged, captured["body"])

    assert resp.status == 400, resp.body
    assert resp.json()["__type"] == "InvalidSignatureException"
    assert b"SecretAccessKey" not in resp.body
    assert resp.headers.get("x-amzn-requestid")
    assert await _access_keys(node, root) == before
    assert len(await _access_keys(node, admin.arn)) == 1
    # The capture itself is sound: replayed unchanged, it is served.
    resp = await raw_request(node.endpoint, headers, captured["body"])
    assert resp.status == 200, resp.body


async def test_second_target_appended_after_the_signed_one_is_refused(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    client = node.client(admin)
    captured = capture_boto3_request(client, "ListKeys")
    await aws_call(client.list_keys)
    forged = [*_with_host(node, captured["headers"]), (b"X-Amz-Target", b"RegionKmsIam.CreateAccessKey")]
    resp = await raw_request(node.endpoint, forged, captured["body"])
    assert resp.status == 400
    assert resp.json()["__type"] == "InvalidSignatureException"
    assert len(await _access_keys(node, admin.arn)) == 1


async def test_replayed_describe_key_cannot_disable_the_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    client = node.client(admin)
    key_id = (await aws_call(client.create_key))["KeyMetadata"]["KeyId"]
    captured = capture_boto3_request(client, "DescribeKey")
    await aws_call(client.describe_key, KeyId=key_id)

    for target in (b"TrentService.DisableKey", b"TrentService.ScheduleKeyDeletion"):
        forged = [(b"X-Amz-Target", target), *_with_host(node, captured["headers"])]
        resp = await raw_request(node.endpoint, forged, captured["body"])
        assert resp.status == 400, resp.body
        assert resp.json()["__type"] == "InvalidSignatureException"

    meta = (await aws_call(client.describe_key, KeyId=key_id))["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True


async def test_mixed_case_second_target_is_the_same_header(nodes: NodeFactory) -> None:
    """Header names are case-insensitive: ``x-amz-TARGET`` repeats ``X-Amz-Target``."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    client = node.client(admin)
    key_id = (await aws_call(client.create_key))["KeyMetadata"]["KeyId"]
    captured = capture_boto3_request(client, "DescribeKey")
    await aws_call(client.describe_key, KeyId=key_id)
    forged = [(b"x-amz-TARGET", b"TrentService.DisableKey"), *_with_host(node, captured["headers"])]
    resp = await raw_request(node.endpoint, forged, captured["body"])
    assert resp.json()["__type"] == "InvalidSignatureException"
    meta = (await aws_call(client.describe_key, KeyId=key_id))["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"


async def test_unsigned_target_is_refused(nodes: NodeFactory) -> None:
    """A signature whose SignedHeaders leave out X-Amz-Target covers no operation: refused."""
    from tests.support.raw import signed_post

    node = await nodes.start()
    admin = await nodes.identity(node)
    status, body, headers = await signed_post(
        node.endpoint, node.region, admin, None, b"{}", unsigned_headers={"X-Amz-Target": "TrentService.ListKeys"}
    )
    assert status == 400
    assert body["__type"] == "InvalidSignatureException"
    assert "X-Amz-Target" in body["message"]
    assert headers.get("x-amzn-RequestId")


async def test_concurrent_replays_never_create_a_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    client = node.client(admin)
    captured = capture_boto3_request(client, "ListKeys")
    await aws_call(client.list_keys)
    headers = _with_host(node, captured["headers"])
    forged = [(b"X-Amz-Target", b"RegionKmsIam.CreateAccessKey"), *headers]
    responses = await asyncio.gather(*(raw_request(node.endpoint, forged, captured["body"]) for _ in range(8)))
    assert {r.json()["__type"] for r in responses} == {"InvalidSignatureException"}
    assert len(await _access_keys(node, admin.arn)) == 1


async def test_a_signed_repeated_target_is_dispatched_joined_and_names_no_operation(nodes: NodeFactory) -> None:
    """A client that signs both values (SigV4: ``x-amz-target:A,B``) gets ``A,B`` dispatched: no operation."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    pairs = [
        ("X-Amz-Target", "RegionKmsIam.CreateAccessKey"),
        ("X-Amz-Target", "TrentService.ListKeys"),
        ("Content-Type", "application/x-amz-json-1.1"),
    ]
    head, body = sign_pairs(node, admin, pairs, b"{}")
    resp = await raw_request(node.endpoint, head, body)
    assert resp.status == 400, resp.body
    assert resp.json()["__type"] == "UnknownOperationException"
    assert "RegionKmsIam.CreateAccessKey,TrentService.ListKeys" in resp.json()["message"]
    assert len(await _access_keys(node, admin.arn)) == 1
    # The same signer with one target is served: the refusal is the repetition, not the signing.
    head, body = sign_pairs(node, admin, [("X-Amz-Target", "TrentService.ListKeys"), *pairs[2:]], b"{}")
    resp = await raw_request(node.endpoint, head, body)
    assert resp.status == 200, resp.body
