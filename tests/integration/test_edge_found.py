"""Defects the edge audit and the property suite (test_edge_fuzz.py) found, one test each (issue 13)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory
from tests.support.raw import raw_request, sign_pairs

CT = ("Content-Type", "application/x-amz-json-1.1")


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler, root = Keep(level=logging.DEBUG), logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield kept
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def test_x_forwarded_for_is_read_whole_so_a_client_s_own_header_cannot_pick_its_address(
    nodes: NodeFactory,
) -> None:
    """Behind a trusted proxy that adds its own X-Forwarded-For line, the client's address is the
    nearest untrusted hop of all of them; reading only the first header let the client choose
    ``aws:SourceIp``, and so pass a policy's IP condition."""
    node = await nodes.start(trusted_proxies=("127.0.0.1",))
    admin = await nodes.identity(node)
    kms = node.client(admin)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*",
             "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*",
             "Condition": {"NotIpAddress": {"aws:SourceIp": "203.0.113.7/32"}}},
        ],
    }  # fmt: skip
    key_id = (await aws_call(kms.create_key, Policy=json.dumps(policy)))["KeyMetadata"]["KeyId"]
    body = json.dumps({"KeyId": key_id, "Plaintext": "AAAA"}).encode()
    target = ("X-Amz-Target", "TrentService.Encrypt")

    head, _ = sign_pairs(node, admin, [target, CT], body)
    allowed = await raw_request(node.endpoint, [*head, (b"X-Forwarded-For", b"203.0.113.7")], body)
    assert allowed.status == 200, allowed.body

    # The client sends its own line; the proxy appends the address it saw as a second line.
    forged = [*head, (b"X-Forwarded-For", b"203.0.113.7"), (b"X-Forwarded-For", b"198.51.100.9")]
    refused = await raw_request(node.endpoint, forged, body)
    assert refused.status == 400, refused.body
    assert refused.json()["__type"] == "AccessDeniedException"

    garbage = await raw_request(node.endpoint, [*head, (b"X-Forwarded-For", b"203.0.113.7, not-an-ip")], body)
    assert garbage.json()["__type"] == "ValidationException"


async def test_delete_alias_of_the_bare_prefix_is_not_found(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    err = await expect_error(node.client(admin).delete_alias, AliasName="alias/")
    assert error_code(err) == "NotFoundException"
    assert err.response["Error"]["Message"] == "Alias arn:aws:kms:us-east-1:111122223333:alias/ is not found."


async def test_iam_access_key_id_of_another_shape_is_a_validation_error(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    for value in ("\u0000", "AKIA\u0000AAAAAAAAAAAAAAA", "short", "x" * 129):
        body = json.dumps({"AccessKeyId": value}).encode()
        head, _ = sign_pairs(node, admin, [("X-Amz-Target", "RegionKmsIam.DeleteAccessKey"), CT], body)
        resp = await raw_request(node.endpoint, head, body)
        assert resp.status == 400, resp.body
        assert resp.json()["__type"] == "ValidationException"


async def test_expect_header_never_costs_the_aws_answer(nodes: NodeFactory) -> None:
    """aiohttp answered an unknown Expect with 417 (no request id) and one that is not UTF-8 with a
    500; regiond ignores expectations other than 100-continue, as RFC 9110 allows."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [("X-Amz-Target", "TrentService.ListKeys"), CT], b"{}")
    for expect in (b"\xffcontinue", b"something-else", b""):
        resp = await raw_request(node.endpoint, [*head, (b"Expect", expect)], body)
        assert resp.status == 200, (expect, resp.status, resp.body)
        assert resp.headers.get("x-amzn-requestid")


async def test_expect_100_continue_still_gets_its_interim_answer(nodes: NodeFactory) -> None:
    import asyncio
    import urllib.parse

    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [("X-Amz-Target", "TrentService.ListKeys"), CT], b"{}")
    url = urllib.parse.urlsplit(node.endpoint)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        lines = [b"POST / HTTP/1.1", *(n + b": " + v for n, v in head), b"Expect: 100-continue",
                 b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]  # fmt: skip
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(body)
        await writer.drain()
        final = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert final.startswith(b"HTTP/1.1 200"), final[:200]


async def test_http_the_parser_refuses_is_logged_without_a_traceback(
    nodes: NodeFactory, records: list[logging.LogRecord]
) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [("X-Amz-Target", "TrentService.ListKeys"), CT], b"{}")
    for extra in ([(b"X-Custom", b"a\x00b")], [(b"Content-Length", b"2"), (b"Content-Length", b"2")],
                  [(b"Content-Length", b"abc")]):  # fmt: skip
        resp = await raw_request(node.endpoint, [*head, *extra], body)
        assert resp.status == 400
    refused = [r for r in records if r.name == "aiohttp.server"]
    assert refused, "aiohttp logs each refusal"
    assert all(r.exc_info is None and r.levelno == logging.INFO for r in refused), [r.getMessage() for r in refused]
    assert all("http.refused" in r.getMessage() for r in refused)


async def test_compressed_request_bodies_are_refused_before_they_are_inflated(
    nodes: NodeFactory, records: list[logging.LogRecord]
) -> None:
    """KMS takes no compressed requests. aiohttp inflates a Content-Encoding body before the
    handler reads it, so the bytes hashed would not be the bytes signed, and bytes that do not
    inflate failed the read with a 500 and a traceback."""
    import gzip

    node = await nodes.start()
    admin = await nodes.identity(node)
    for encoding, body in ((b"gzip", gzip.compress(b"{}")), (b"gzip", b"not gzip at all"), (b"deflate", b"x"),
                           (b"GZIP", b"x"), (b"x-made-up", b"{}")):  # fmt: skip
        head, _ = sign_pairs(node, admin, [("X-Amz-Target", "TrentService.ListKeys"), CT,
                                           ("Content-Encoding", encoding.decode())], body)  # fmt: skip
        resp = await raw_request(node.endpoint, head, body)
        assert resp.status == 400, (encoding, resp.status, resp.body)
        assert resp.json()["__type"] == "SerializationException"
        assert resp.headers.get("x-amzn-requestid")
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    head, body = sign_pairs(node, admin, [("X-Amz-Target", "TrentService.ListKeys"), CT,
                                          ("Content-Encoding", "identity")], b"{}")  # fmt: skip
    assert (await raw_request(node.endpoint, head, body)).status == 200


async def test_key_reference_of_the_bare_alias_prefix_is_not_found(nodes: NodeFactory) -> None:
    """``alias/`` names no alias: every operation taking a KeyId answered it with a 500."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    kms = node.client(admin)
    for call, kwargs in ((kms.describe_key, {}), (kms.encrypt, {"Plaintext": b"x"}), (kms.get_public_key, {})):
        err = await expect_error(call, KeyId="alias/", **kwargs)
        assert error_code(err) == "NotFoundException"
        assert err.response["Error"]["Message"] == "Alias arn:aws:kms:us-east-1:111122223333:alias/ is not found."
