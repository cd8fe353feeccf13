"""The hot path (DESIGN section 6): no database round trip in the steady state, and key state
changes reach every node of the region through LISTEN/NOTIFY within a second (issue 3)."""

from __future__ import annotations

import asyncio
import time

import botocore.exceptions
import pytest

from regiond.app import POOL
from regiond.protocol.routes import SERVICES
from tests.support.aws import aws_call
from tests.support.cluster import NodeFactory
from tests.support.pools import counting_acquires

QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600"}
"""Background tasks that use the pool run once at start, then not again during the test."""


async def test_steady_state_cryptographic_operations_make_no_database_round_trip(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await nodes.start(audit=False, extra=QUIET)  # audit's group commit is measured elsewhere
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    other = (await aws_call(kms.create_key))["KeyMetadata"]
    await aws_call(kms.create_alias, AliasName="alias/hot", TargetKeyId=key["KeyId"])
    ctx = {"tenant": "a"}

    async def round_of_operations() -> None:
        blob = (await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext=ctx))[
            "CiphertextBlob"
        ]
        await aws_call(kms.encrypt, KeyId="alias/hot", Plaintext=b"p")
        await aws_call(kms.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
        await aws_call(kms.decrypt, CiphertextBlob=blob, EncryptionContext=ctx, KeyId="alias/hot")
        await aws_call(kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext=ctx, DestinationKeyId=other["Arn"])
        await aws_call(kms.generate_data_key, KeyId=key["Arn"], KeySpec="AES_256", EncryptionContext=ctx)
        await aws_call(kms.generate_data_key_without_plaintext, KeyId="alias/hot", NumberOfBytes=16)
        await aws_call(kms.generate_random, NumberOfBytes=16)

    await round_of_operations()  # warm-up: loads keys, alias, policies, signing keys
    loads = node.app[SERVICES].keys.cache.loads
    with counting_acquires(node.app[POOL], monkeypatch) as acquired:
        for _ in range(5):
            await round_of_operations()
    assert acquired[0] == 0
    assert node.app[SERVICES].keys.cache.loads == loads
    # the counter does see queries: a management call takes a connection
    with counting_acquires(node.app[POOL], monkeypatch) as acquired:
        await aws_call(kms.list_keys)
    assert acquired[0] >= 1


async def test_disable_key_on_one_node_reaches_another_node_within_a_second(nodes: NodeFactory) -> None:
    a = await nodes.start(extra=QUIET)
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir, extra=QUIET)
    ident = await nodes.identity(a)
    kms_a, kms_b = a.client(ident), b.client(ident)
    key_id = (await aws_call(kms_a.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms_b.encrypt, KeyId=key_id, Plaintext=b"p")  # node B has the key cached

    async def b_refuses_within(seconds: float) -> str | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await aws_call(kms_b.encrypt, KeyId=key_id, Plaintext=b"p")
            except botocore.exceptions.ClientError as exc:
                return str(exc.response["Error"]["Code"])
            await asyncio.sleep(0.02)
        return None

    await aws_call(kms_a.disable_key, KeyId=key_id)
    assert await b_refuses_within(1.0) == "DisabledException"
    await aws_call(kms_a.enable_key, KeyId=key_id)
    deadline = time.monotonic() + 1.0
    while True:
        try:
            await aws_call(kms_b.encrypt, KeyId=key_id, Plaintext=b"p")
            break
        except botocore.exceptions.ClientError:
            assert time.monotonic() < deadline, "node B kept refusing a re-enabled key"
            await asyncio.sleep(0.02)
