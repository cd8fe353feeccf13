"""A failed authentication leaves an attributable trace and is throttled per source (issue 13,
finding 10). It is not audited, as AWS records no event for a call without an identity."""

from __future__ import annotations

import re
import secrets
from collections.abc import MutableMapping
from typing import Any

import aiohttp
import structlog

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import Identity, Node, NodeFactory
from tests.support.raw import capture_boto3_request, signed_post


async def _metrics(node: Node) -> str:
    async with aiohttp.ClientSession() as session, session.get(node.endpoint + "/metrics") as resp:
        return await resp.text()


def _failures(text: str, access_key_id: str, error: str) -> float:
    pattern = (
        r'^regionkms_auth_failures_total\{access_key_id="' + re.escape(access_key_id) + r'",error="' + error
        + r'"\} ([0-9.e+]+)$'
    )  # fmt: skip
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _auth_failed(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "auth.failed"]


async def test_failure_log_names_source_and_access_key_never_the_signature(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    wrong = node.client(Identity(admin.arn, admin.access_key_id, "x" * 40))
    captured = capture_boto3_request(wrong, "ListKeys")
    with structlog.testing.capture_logs() as logs:
        err = await expect_error(wrong.list_keys)
    assert error_code(err) == "InvalidSignatureException"
    (line,) = _auth_failed(logs)
    assert line["source_ip"] == "127.0.0.1"
    assert line["access_key_id"] == admin.access_key_id
    assert line["error"] == "InvalidSignatureException"
    authorization = dict(captured["headers"])[b"Authorization"].decode()
    signature = authorization.rpartition("Signature=")[2]
    assert len(signature) == 64
    text = repr(logs)
    assert signature not in text and admin.secret_access_key not in text
    assert not any(e.get("exc_info") for e in logs)


async def test_failures_are_counted_per_existing_access_key_with_bounded_labels(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    before = await _metrics(node)
    await expect_error(node.client(Identity(admin.arn, admin.access_key_id, "x" * 40)).list_keys)
    made_up = [f"AKIA{secrets.token_hex(8).upper()}" for _ in range(5)]
    for key_id in made_up:  # ids an attacker invents never become label values
        await expect_error(node.client(Identity(admin.arn, key_id, "x" * 40)).list_keys)
    await expect_error(node.client(Identity(admin.arn, "AKIA-not-a-key-id!", "x" * 40)).list_keys)
    after = await _metrics(node)
    assert _failures(after, admin.access_key_id, "InvalidSignatureException") == (
        _failures(before, admin.access_key_id, "InvalidSignatureException") + 1
    )
    assert _failures(after, "unknown", "UnrecognizedClientException") >= (
        _failures(before, "unknown", "UnrecognizedClientException") + 5
    )
    assert _failures(after, "malformed", "UnrecognizedClientException") >= 1
    assert not any(key_id in after for key_id in made_up)


async def test_repeated_failures_from_one_source_are_throttled_and_its_good_requests_served(
    nodes: NodeFactory,
) -> None:
    node = await nodes.start(auth_failure_burst=3, auth_failure_refill_per_s=0.001)
    admin = await nodes.identity(node)
    await aws_call(node.client(admin).list_keys)  # the key is in this worker's cache
    wrong = node.client(Identity(admin.arn, admin.access_key_id, "x" * 40))
    stranger = node.client(Identity(admin.arn, "AKIAAAAAAAAAAAAAAAAA", "x" * 40))
    with structlog.testing.capture_logs() as logs:
        codes = [error_code(await expect_error(wrong.list_keys)) for _ in range(3)]
        assert codes == ["InvalidSignatureException"] * 3
        # Now every failure from 127.0.0.1 is ThrottlingException: no tell which key ids exist.
        assert error_code(await expect_error(wrong.list_keys)) == "ThrottlingException"
        assert error_code(await expect_error(stranger.list_keys)) == "ThrottlingException"
        # A neighbour behind the same address with a good signature is not locked out.
        await aws_call(node.client(admin).list_keys)
    assert len(_auth_failed(logs)) == 3  # throttled failures are counted, not logged one by one
    assert [e["source_ip"] for e in logs if e.get("event") == "auth.throttling_source"] == ["127.0.0.1"]
    assert "regionkms_auth_throttled_total" in await _metrics(node)


async def test_signed_post_failure_is_not_audited(nodes: NodeFactory) -> None:
    """AWS: a call that fails authentication has no identity and no CloudTrail event; nor here."""
    node = await nodes.start()
    admin = await nodes.identity(node)
    with structlog.testing.capture_logs() as logs:
        status, body, _ = await signed_post(
            node.endpoint, node.region, admin, "TrentService.ListKeys", b"{}", secret="y" * 40
        )
    assert status == 400 and body["__type"] == "InvalidSignatureException"
    assert not [e for e in logs if str(e.get("event", "")).startswith("audit.")]


async def test_unsigned_and_malformed_requests_are_not_throttled(nodes: NodeFactory) -> None:
    """They reveal nothing and cost no lookup: a flood of them keeps its own errors."""
    node = await nodes.start(auth_failure_burst=2, auth_failure_refill_per_s=0.001)
    admin = await nodes.identity(node)
    for _ in range(6):
        status, body, _ = await signed_post(node.endpoint, node.region, None, "TrentService.ListKeys", b"{}")
        assert body["__type"] == "MissingAuthenticationTokenException"
        status, body, _ = await signed_post(
            node.endpoint, node.region, admin, "TrentService.ListKeys", b"{}", scope_region="eu-west-1"
        )
        assert body["__type"] == "InvalidSignatureException"  # a scope error: before any lookup
    assert status == 400
    await aws_call(node.client(admin).list_keys)


async def test_a_credential_lookup_the_database_cannot_answer_is_a_server_fault_not_a_failed_authentication(
    nodes: NodeFactory,
) -> None:
    """During a database failover every cache is emptied (its LISTEN connection dropped) and each
    caller's next lookup fails: those callers must not get their source throttled for it."""
    from regiond.devtools.postgres import free_port
    from regiond.protocol.routes import SERVICES
    from regiond.store.pool import create_pool

    node = await nodes.start(auth_failure_burst=1, auth_failure_refill_per_s=0.001)
    admin = await nodes.identity(node)
    authn = node.app[SERVICES].authn
    working = authn._pool  # white box: the lookup's pool, swapped for one whose database is gone
    gone = await create_pool(f"postgresql://postgres:x@127.0.0.1:{free_port()}/db", min_size=0, max_size=1)
    try:
        authn._pool = gone
        with structlog.testing.capture_logs() as logs:
            codes = [error_code(await expect_error(node.client(admin).list_keys)) for _ in range(3)]
        assert codes == ["KMSInternalException"] * 3
        assert not _auth_failed(logs)
    finally:
        authn._pool = working
        await gone.close()
    await aws_call(node.client(admin).list_keys)  # not throttled, served
