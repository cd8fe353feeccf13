"""Bytes that are not UTF-8, odd access key ids and session tokens at the edge (issue 13,
findings 6 and 11): each gets its AWS error and a request id, never a 500 or a traceback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import Identity, NodeFactory
from tests.support.raw import raw_request, sign_pairs

CT = ("Content-Type", "application/x-amz-json-1.1")
LIST_KEYS = ("X-Amz-Target", "TrentService.ListKeys")


def _no_traceback(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    out = capsys.readouterr()
    logged = out.out + out.err + caplog.text
    assert "Traceback" not in logged
    assert "KMSInternalException" not in logged


def _replace(head: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [(n, value if n.lower() == name.lower() else v) for n, v in head]


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        # The access key id, inside the Authorization header.
        (lambda auth: auth.replace(b"Credential=AKIA", b"Credential=AK\xff\xfe"), "IncompleteSignatureException"),
        # A lone surrogate spelt in UTF-8 (not UTF-8 at all).
        (lambda auth: auth.replace(b"Credential=AKIA", b"Credential=\xed\xa0\x80KIA"), "IncompleteSignatureException"),
        (lambda auth: auth + b"\xff", "IncompleteSignatureException"),
        (lambda auth: auth.replace(b"SignedHeaders=", b"SignedHeaders=\xc3("), "IncompleteSignatureException"),
    ],
)
async def test_authorization_that_is_not_utf8_is_an_incomplete_signature(
    nodes: NodeFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    mangle: Callable[[bytes], bytes],
    expected: str,
) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [LIST_KEYS, CT], b"{}")
    auth = next(v for n, v in head if n == b"Authorization")
    resp = await raw_request(node.endpoint, _replace(head, b"Authorization", mangle(auth)), body)
    assert resp.status == 400, resp.body
    assert resp.json()["__type"] == expected
    assert resp.headers.get("x-amzn-requestid")
    _no_traceback(capsys, caplog)


@pytest.mark.parametrize(
    "pairs",
    [
        [("X-Amz-Target", "TrentService.ListKeys\udcff"), CT],  # the target itself
        [LIST_KEYS, CT, ("X-Custom", "caf\udce9")],  # any signed header (latin-1 bytes)
        [LIST_KEYS, ("Content-Type", "application/x-amz-json-1.1\udcc3")],
    ],
)
async def test_signed_header_that_is_not_utf8_is_an_invalid_signature(
    nodes: NodeFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    pairs: list[tuple[str, str]],
) -> None:
    """The signer signed those very bytes (``surrogateescape``): only their not being UTF-8 is wrong."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, pairs, b"{}")
    resp = await raw_request(node.endpoint, head, body)
    assert resp.status == 400, resp.body
    assert resp.json()["__type"] == "InvalidSignatureException"
    assert "not valid UTF-8" in resp.json()["message"]
    assert resp.headers.get("x-amzn-requestid")
    _no_traceback(capsys, caplog)


async def test_unsigned_target_that_is_not_utf8_is_refused(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [CT], b"{}")
    resp = await raw_request(node.endpoint, [*head, (b"X-Amz-Target", b"TrentService.\xffListKeys")], body)
    assert resp.status == 400
    assert resp.json()["__type"] == "InvalidSignatureException"
    _no_traceback(capsys, caplog)


async def test_amz_date_that_is_not_utf8_is_an_incomplete_signature(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [LIST_KEYS, CT], b"{}")
    head = [(n, v + b"\xff" if n == b"X-Amz-Date" else v) for n, v in head]
    resp = await raw_request(node.endpoint, head, body)
    assert resp.status == 400
    assert resp.json()["__type"] == "IncompleteSignatureException"
    _no_traceback(capsys, caplog)


async def test_user_agent_that_is_not_utf8_is_served(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """User-Agent is only recorded (unsigned by every SDK): its odd bytes are replaced, the call is served."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [LIST_KEYS, CT], b"{}")
    resp = await raw_request(node.endpoint, [*head, (b"User-Agent", b"app/\xff\xfe 1.0")], body)
    assert resp.status == 200, resp.body
    _no_traceback(capsys, caplog)


@pytest.mark.parametrize(
    "access_key_id",
    [
        "AKIAÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ",  # UTF-8, but not IAM's AccessKeyId shape
        "AKIA",  # too short
        "A" * 129,  # too long
        "AKIA-AAAAAAAAAAAAAAAA",
        "AKIA AAAAAAAAAAAAAAAA",
    ],
)
async def test_access_key_id_of_another_shape_is_an_unrecognized_client(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, access_key_id: str
) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    stranger = Identity(admin.arn, access_key_id, admin.secret_access_key)
    head, body = sign_pairs(node, stranger, [LIST_KEYS, CT], b"{}")
    resp = await raw_request(node.endpoint, head, body)
    assert resp.status == 400, resp.body
    assert resp.json()["__type"] == "UnrecognizedClientException"
    _no_traceback(capsys, caplog)


async def test_session_token_beside_a_long_term_key_is_refused(nodes: NodeFactory) -> None:
    """AWS refuses an X-Amz-Security-Token it did not issue with UnrecognizedClientException; a
    long-term access key takes none, so any token is refused rather than ignored."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    with_token = node.client(admin)
    with_token._request_signer._credentials.token = "FwoGZXIvYXdzEXAMPLETOKEN"  # boto3 signs and sends it
    err = await expect_error(with_token.list_keys)
    assert error_code(err) == "UnrecognizedClientException"
    assert err.response["Error"]["Message"] == "The security token included in the request is invalid."
    await aws_call(node.client(admin).list_keys)  # the same key without a token works


async def test_unsigned_session_token_is_refused_too(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    head, body = sign_pairs(node, admin, [LIST_KEYS, CT], b"{}")
    resp = await raw_request(node.endpoint, [*head, (b"X-Amz-Security-Token", b"anything")], body)
    assert resp.json()["__type"] == "UnrecognizedClientException"
    resp = await raw_request(node.endpoint, [*head, (b"X-Amz-Security-Token", b"")], body)
    assert resp.json()["__type"] == "UnrecognizedClientException"
