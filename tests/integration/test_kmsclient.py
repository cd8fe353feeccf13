"""The client SDK against a real node: AWS Encryption SDK messages at the frame edges and at 100 MiB
(streamed), refusals with no plaintext released, kmsclient 1 (RKE1) files, and the official
``aws-encryption-sdk`` opening our messages and we theirs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import aws_encryption_sdk
import pytest

import kmsclient
from kmsclient import rke1
from kmsclient.errors import MaterialsError, MessageError, RequiredContextError
from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384, DEFAULT_FRAME_LENGTH, Suite
from tests.support.cluster import Identity, Node, NodeFactory
from tests.support.esdk import OFFICIAL_SUITES, EndpointSession, official_client

SUITES = [COMMIT_KEY, COMMIT_KEY_ECDSA_P384]
OFFICIAL = OFFICIAL_SUITES
CONTEXT = {"app": "orders", "purpose": "interop"}


@pytest.fixture
async def env(nodes: NodeFactory) -> AsyncIterator[tuple[Node, Identity, kmsclient.KmsClient, str]]:
    node = await nodes.start()
    ident = await nodes.identity(node)
    client = kmsclient.KmsClient(
        [kmsclient.Endpoint(node.region, node.endpoint)],
        kmsclient.Credentials(ident.access_key_id, ident.secret_access_key),
    )
    async with client:
        arn = (await client.call("CreateKey", {"Description": "kmsclient"}))["KeyMetadata"]["Arn"]
        yield node, ident, client, arn


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"0x{s.id:04x}")
async def test_round_trips_at_the_frame_edges(
    env: tuple[Node, Identity, kmsclient.KmsClient, str], suite: Suite
) -> None:
    _, _, client, arn = env
    keyring = kmsclient.AwsKmsKeyring(client, arn)
    frame = 1024
    for size in (0, 1, frame - 1, frame, frame + 1):
        data = os.urandom(size)
        blob = await kmsclient.encrypt(keyring, data, encryption_context=CONTEXT, suite=suite, frame_length=frame)
        assert (await kmsclient.decrypt(keyring, blob, encryption_context=CONTEXT)).plaintext == data


class _Pattern(io.RawIOBase):
    """``size`` bytes of a cheap pattern, produced as they are read (never all in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = hashlib.sha512(b"pattern").digest() * 1024

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = (self.block * (n // len(self.block) + 1))[:n]
        self.left -= n
        return out


class _HashSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


async def test_a_100_mib_message_streams_through(
    env: tuple[Node, Identity, kmsclient.KmsClient, str], tmp_path: Any
) -> None:
    _, _, client, arn = env
    keyring = kmsclient.AwsKmsKeyring(client, arn)
    size = 100 * 1024 * 1024
    expected = _HashSink()
    source = _Pattern(size)
    while chunk := source.read(4 * 1024 * 1024):
        expected.write(chunk)
    path = tmp_path / "big.enc"
    with path.open("wb") as out:
        info = await kmsclient.encrypt_stream(keyring, _Pattern(size), out, encryption_context=CONTEXT)
    assert info.plaintext_bytes == size
    sink = _HashSink()
    with path.open("rb") as src:
        await kmsclient.decrypt_stream(keyring, src, sink, encryption_context=CONTEXT, release="streaming")
    assert (sink.size, sink.hash.digest()) == (size, expected.hash.digest())


async def test_refusals_release_no_plaintext(env: tuple[Node, Identity, kmsclient.KmsClient, str]) -> None:
    _, _, client, arn = env
    keyring = kmsclient.AwsKmsKeyring(client, arn)
    data = os.urandom(5000)
    blob = await kmsclient.encrypt(keyring, data, encryption_context=CONTEXT, frame_length=1000)
    cases: dict[str, tuple[bytes, dict[str, str], type[Exception]]] = {
        "truncated": (blob[:-200], CONTEXT, MessageError),
        "wrong context": (blob, {**CONTEXT, "app": "billing"}, MaterialsError),
        "flipped bit": (blob[:-50] + bytes([blob[-50] ^ 1]) + blob[-49:], CONTEXT, MessageError),
    }
    for what, (bad, context, error) in cases.items():
        out = io.BytesIO()
        with pytest.raises(error):
            await kmsclient.decrypt_stream(keyring, io.BytesIO(bad), out, encryption_context=context)
        assert out.getvalue() == b"", what
    required = kmsclient.RequiredEncryptionContextCmm(keyring, ["purpose"])
    blob = await kmsclient.encrypt(required, data, encryption_context=CONTEXT)
    with pytest.raises(RequiredContextError):
        await kmsclient.decrypt(required, blob, encryption_context={"app": "orders"})
    assert (await kmsclient.decrypt(required, blob, encryption_context={"purpose": "interop"})).plaintext == data


async def test_kmsclient_1_files_still_decrypt(env: tuple[Node, Identity, kmsclient.KmsClient, str]) -> None:
    _, _, client, arn = env
    data = os.urandom(3000)
    legacy = await rke1.encrypt(client, arn, data, {"app": "t"})
    assert legacy[:4] == b"RKE1"
    discovery = kmsclient.AwsKmsDiscoveryKeyring(client)
    out = await kmsclient.decrypt(discovery, legacy, encryption_context={"app": "t"}, legacy_client=client)
    assert (out.plaintext, out.info.format) == (data, "rke1")
    with pytest.raises(kmsclient.KmsClientError):
        await kmsclient.decrypt(discovery, legacy, encryption_context={"app": "x"}, legacy_client=client)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"0x{s.id:04x}")
async def test_the_official_sdk_and_kmsclient_open_each_others_messages(
    env: tuple[Node, Identity, kmsclient.KmsClient, str], suite: Suite
) -> None:
    node, ident, client, arn = env
    session = EndpointSession({node.region: node.endpoint}, ident)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[arn], botocore_session=session)
    esdk = official_client()
    keyring = kmsclient.AwsKmsKeyring(client, arn)
    for size in (0, 1, DEFAULT_FRAME_LENGTH + 1, 300_000):
        data = os.urandom(size)
        ours = await kmsclient.encrypt(keyring, data, encryption_context=CONTEXT, suite=suite)
        plain, header = await asyncio.to_thread(esdk.decrypt, source=ours, key_provider=provider)
        assert plain == data
        assert header.algorithm == OFFICIAL[suite.id]
        assert {k: header.encryption_context[k] for k in CONTEXT} == CONTEXT

        theirs, _ = await asyncio.to_thread(
            esdk.encrypt, source=data, key_provider=provider, encryption_context=CONTEXT,
            algorithm=OFFICIAL[suite.id], frame_length=4096,
        )  # fmt: skip
        opened = await kmsclient.decrypt(keyring, theirs, encryption_context=CONTEXT)
        assert opened.plaintext == data
        assert opened.info.suite == suite and opened.info.key_arns == (arn,)
