"""TLS on the client endpoint (regiond.runtime.client_tls, regiond.runtime.listener): boto3 over it, TLS 1.2+ only,
``aws:SecureTransport``, the handshake bound, the connection limit and header bound under TLS, and a
certificate reload that new connections see and open ones survive. Deadlines are bounds on waiting
for an outcome, never what a test asserts."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from regiond.runtime import metrics
from tests.support.cluster import Identity, Node, NodeFactory
from tests.support.regions import wait_until
from tests.support.sockets import HEALTHZ, RawConnection
from tests.support.tls import TestCa


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path / "ca")


def _client_context(ca: TestCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.bundle))


def _handshakes(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "regionkms_tls_handshakes_total", {"listener": "client", "outcome": outcome}
    ) or 0.0


async def _tls_node(nodes: NodeFactory, ca: TestCa, **settings: Any) -> Node:
    return await nodes.start(ca_bundle=str(ca.bundle), **ca.issue("node").settings(), **settings)


async def test_boto3_speaks_to_the_node_over_tls_verified_with_the_ca_bundle(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca)
    assert node.endpoint.startswith("https://")
    admin = await nodes.identity(node)
    kms = node.client(admin)
    key_id = await asyncio.to_thread(lambda: kms.create_key()["KeyMetadata"]["KeyId"])
    blob = await asyncio.to_thread(lambda: kms.encrypt(KeyId=key_id, Plaintext=b"over tls")["CiphertextBlob"])
    assert await asyncio.to_thread(lambda: kms.decrypt(CiphertextBlob=blob)["Plaintext"]) == b"over tls"
    # A client that trusts only the public CAs refuses the node's certificate.
    untrusting = boto3.client(
        "kms", endpoint_url=node.endpoint, region_name=node.region, aws_access_key_id=admin.access_key_id,
        aws_secret_access_key=admin.secret_access_key, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    with pytest.raises(botocore.exceptions.SSLError):
        await asyncio.to_thread(untrusting.list_keys)
    untrusting.close()


async def test_plain_http_to_a_tls_endpoint_gets_no_answer(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca)
    failed = _handshakes("failed")
    async with await RawConnection.open(node.endpoint.replace("https://", "http://")) as conn:
        await conn.send(HEALTHZ)
        assert await conn.answer() is None
    await wait_until(lambda: _grew(failed, "failed"), what="the refused handshake to be counted")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_tls_before_1_2_is_refused_by_the_server(nodes: NodeFactory, ca: TestCa, version: ssl.TLSVersion) -> None:
    node = await _tls_node(nodes, ca)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(ca.bundle))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old protocol at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of this client
        old.minimum_version = old.maximum_version = version
    if not await _speaks(old, ca, version):
        pytest.skip(f"this machine's OpenSSL cannot speak {version.name} even to a server that allows it")
    failed = _handshakes("failed")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await RawConnection.open(node.endpoint, tls=old)
    assert _handshakes("failed") == failed + 1
    async with await RawConnection.open(node.endpoint, tls=_client_context(ca)) as conn:
        ssl_object = conn.writer.get_extra_info("ssl_object")
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")


async def _speaks(client: ssl.SSLContext, ca: TestCa, version: ssl.TLSVersion) -> bool:
    """Whether ``client`` completes a handshake with a server that allows ``version`` (a control experiment)."""
    files = ca.issue("permissive")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = version
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(files.cert_file, files.key_file)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await RawConnection.open(f"https://127.0.0.1:{port}", tls=client)
    except (ssl.SSLError, ConnectionError):
        return False
    finally:
        server.close()
    await conn.close()
    return True


async def test_tls_1_2_is_served(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca)
    ctx = _client_context(ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with await RawConnection.open(node.endpoint, tls=ctx) as conn:
        assert conn.writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        await conn.send(HEALTHZ)
        answer = await conn.answer()
        assert answer is not None and answer.status == 200


async def test_aws_secure_transport_is_true_over_tls_and_false_over_plain_http(
    nodes: NodeFactory, ca: TestCa
) -> None:
    """An identity policy that denies everything unless ``aws:SecureTransport`` is true (AWS's usual example)."""
    tls_node = await _tls_node(nodes, ca)
    plain_node = await nodes.start(database_url=tls_node.database_url, state_dir=tls_node.state_dir)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:*", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        ],
    }  # fmt: skip
    caller: Identity = await nodes.identity(tls_node, user="tls-only", policy=policy)
    over_tls = tls_node.client(caller)
    key_id = await asyncio.to_thread(lambda: over_tls.create_key()["KeyMetadata"]["KeyId"])
    blob = await asyncio.to_thread(lambda: over_tls.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"])
    over_plain = plain_node.client(caller)
    for call in (lambda: over_plain.encrypt(KeyId=key_id, Plaintext=b"x"), over_plain.create_key,
                 lambda: over_plain.decrypt(CiphertextBlob=blob)):  # fmt: skip
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            await asyncio.to_thread(call)
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    # The cached decision of the TLS call does not answer the plain one, nor the reverse.
    assert await asyncio.to_thread(lambda: over_tls.decrypt(CiphertextBlob=blob)["Plaintext"]) == b"x"


async def test_a_handshake_that_never_comes_is_cut_off(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca, tls_handshake_timeout_s=0.5, http_header_timeout_s=600)
    before = _handshakes("timeout")
    async with await RawConnection.open(node.endpoint) as conn:  # TCP only: no ClientHello
        assert await conn.closed_by_server()
    assert _handshakes("timeout") == before + 1


async def test_half_a_client_hello_is_cut_off_too(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca, tls_handshake_timeout_s=0.5)
    async with await RawConnection.open(node.endpoint) as conn:
        await conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a hello, then silence
        assert await conn.closed_by_server()


async def test_handshakes_in_progress_count_against_the_connection_limit(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca, http_max_connections=2, tls_handshake_timeout_s=600, http_header_timeout_s=600)
    async with contextlib.AsyncExitStack() as stack:
        silent = [await stack.enter_async_context(await RawConnection.open(node.endpoint)) for _ in range(2)]

        async def both_admitted() -> bool:
            return bool(metrics.HTTP_CONNECTIONS._value.get() >= 2)  # the in-process gauge

        await wait_until(both_admitted, what="two connections admitted")
        async with await RawConnection.open(node.endpoint) as extra:  # the third is reset at once
            assert await extra.closed_by_server()
        await silent[0].close()

        async def a_tls_request_is_served() -> bool:
            try:
                async with await RawConnection.open(node.endpoint, tls=_client_context(ca)) as conn:
                    await conn.send(HEALTHZ)
                    answer = await conn.answer()
                    return answer is not None and answer.status == 200
            except (ConnectionError, ssl.SSLError):
                return False

        await wait_until(a_tls_request_is_served, what="a freed slot to admit a TLS connection")


async def test_slow_headers_after_the_handshake_are_cut_off(nodes: NodeFactory, ca: TestCa) -> None:
    node = await _tls_node(nodes, ca, http_header_timeout_s=0.5, http_idle_timeout_s=600)
    async with await RawConnection.open(node.endpoint, tls=_client_context(ca)) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        async with conn.dribbling(b"a"):
            assert await conn.closed_by_server()


async def test_a_reload_serves_new_connections_the_new_certificate_and_keeps_open_ones(
    nodes: NodeFactory, ca: TestCa
) -> None:
    files = ca.issue("node")
    node = await nodes.start(ca_bundle=str(ca.bundle), **files.settings(), http_idle_timeout_s=600)
    assert node.certificate is not None
    ctx = _client_context(ca)
    async with await RawConnection.open(node.endpoint, tls=ctx) as kept:
        await kept.send(HEALTHZ)
        first = await kept.answer()
        assert first is not None and first.status == 200
        old_cert = kept.peer_certificate()
        renewed = ca.issue("node")  # the same files, a new certificate and key in them
        assert renewed == files
        assert node.certificate.reload()
        async with await RawConnection.open(node.endpoint, tls=ctx) as fresh:
            new_cert = fresh.peer_certificate()
        assert new_cert != old_cert
        assert new_cert == ssl.PEM_cert_to_DER_cert(files.cert_file.read_text())
        await kept.send(HEALTHZ)  # the connection opened before the reload still serves
        again = await kept.answer()
        assert again is not None and again.status == 200

        files.key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        failed = metrics.REGISTRY.get_sample_value("regionkms_tls_reloads_total", {"outcome": "failed"}) or 0.0
        assert not node.certificate.reload()  # a broken file is refused; the node keeps the certificate it has
        assert metrics.REGISTRY.get_sample_value("regionkms_tls_reloads_total", {"outcome": "failed"}) == failed + 1
        async with await RawConnection.open(node.endpoint, tls=ctx) as after:
            assert after.peer_certificate() == new_cert
            await after.send(HEALTHZ)
            answer = await after.answer()
            assert answer is not None and answer.status == 200


async def _grew(before: float, outcome: str) -> bool:
    return _handshakes(outcome) > before
