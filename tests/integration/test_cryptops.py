"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, GenerateRandom through boto3 (issue 3)."""

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


async def test_encrypt_then_decrypt_without_key_id_round_trips(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await _call(kms.create_key, Description="orders"))["KeyMetadata"]
    enc = await _call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"hello", EncryptionContext={"a": "1", "b": "2"})
    assert enc["KeyId"] == key["Arn"]
    assert enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    dec = await _call(kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"b": "2", "a": "1"})
    assert dec["Plaintext"] == b"hello"
    assert dec["KeyId"] == key["Arn"]
