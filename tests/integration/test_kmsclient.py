"""The client SDK against real nodes: envelope round trips, tampering, and region failover."""

from __future__ import annotations

import io
import os

import pytest

from kmsclient import Credentials, Endpoint, EnvelopeError, KmsClient, KmsClientError, decrypt, encrypt, envelope
from tests.support.cluster import NodeFactory


async def _client(endpoints: list[Endpoint], ident) -> KmsClient:  # type: ignore[no-untyped-def]
    return KmsClient(endpoints, Credentials(ident.access_key_id, ident.secret_access_key))


async def test_envelope_round_trip_with_context_and_many_segments(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    async with await _client([Endpoint(node.region, node.endpoint)], ident) as client:
        key = await client.call("CreateKey", {"Description": "envelope"})
        key_id = key["KeyMetadata"]["KeyId"]
        data = os.urandom(3 * 1000 + 17)
        src, out = io.BytesIO(data), io.BytesIO()
        await envelope.encrypt_stream(client, key_id, src, out, context={"app": "t"}, segment_bytes=1000)
        message = out.getvalue()
        assert data not in message
        assert await decrypt(client, message, {"app": "t"}) == data
        with pytest.raises(KmsClientError) as wrong_context:
            await decrypt(client, message, {"app": "other"})
        assert wrong_context.value.code == "InvalidCiphertextException"


async def test_envelope_detects_tampering_truncation_and_reordering(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    async with await _client([Endpoint(node.region, node.endpoint)], ident) as client:
        key_id = (await client.call("CreateKey", {}))["KeyMetadata"]["KeyId"]
        data = os.urandom(2500)
        out = io.BytesIO()
        await envelope.encrypt_stream(client, key_id, io.BytesIO(data), out, segment_bytes=1000)
        message = out.getvalue()
        seg = 1000 + 16
        body_start = len(message) - (2 * seg + 500 + 16)
        flipped = bytearray(message)
        flipped[-1] ^= 1
        truncated = message[: body_start + 2 * seg]  # drop the final segment
        swapped = (
            message[:body_start]
            + message[body_start + seg : body_start + 2 * seg]
            + message[body_start : body_start + seg]
            + message[body_start + 2 * seg :]
        )
        for bad in (bytes(flipped), truncated, swapped):
            with pytest.raises(EnvelopeError):
                await decrypt(client, bad)
        assert await decrypt(client, message) == data


async def test_client_fails_over_to_the_next_region(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    dead = Endpoint("us-west-2", "http://127.0.0.1:9")  # discard port: nothing listens
    async with await _client([dead, Endpoint(node.region, node.endpoint)], ident) as client:
        await client.router.refresh(force=True)
        assert (await client.router.ordered())[0].region == node.region
        key_id = (await client.call("CreateKey", {}))["KeyMetadata"]["KeyId"]
        assert await decrypt(client, await encrypt(client, key_id, b"hello")) == b"hello"
