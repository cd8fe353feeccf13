"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, GenerateRandom through boto3 (issue 3)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regiond.app import POOL
from regiond.crypto import wrap
from regiond.domain.decision import default_key_policy
from regiond.domain.key import Key, KeyState
from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import AccessDeniedException, InvalidCiphertextException
from regiond.protocol.routes import SERVICES
from regiond.service.authz import Requester
from regiond.store import keys as key_store
from regiond.store.pool import transaction
from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import ACCOUNT_ID, OTHER_ACCOUNT_ID, Identity, Node, NodeFactory

KEY_ID_BYTES = range(1, 18)
AWS_KEY_NOT_HERE = (
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
    "or you are not allowed to access."
)
"""Blob bytes 1-17: the key id type and the key id (docs/CIPHERTEXT.md)."""


def unchecked(node: Node, ident: Identity) -> Any:
    """A boto3 client that sends out-of-range values, so the server's validation is what answers."""
    return boto3.client(
        "kms", endpoint_url=node.endpoint, region_name=node.region,
        aws_access_key_id=ident.access_key_id, aws_secret_access_key=ident.secret_access_key,
        config=Config(parameter_validation=False, retries={"max_attempts": 1, "mode": "standard"}),
    )  # fmt: skip


async def test_encrypt_then_decrypt_without_key_id_round_trips(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key, Description="orders"))["KeyMetadata"]
    enc = await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"hello", EncryptionContext={"a": "1", "b": "2"})
    assert enc["KeyId"] == key["Arn"]
    assert enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert len(enc["CiphertextBlob"]) == 50 + len(b"hello")
    dec = await aws_call(kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"b": "2", "a": "1"})
    assert dec["Plaintext"] == b"hello"
    assert dec["KeyId"] == key["Arn"]
    assert dec["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    # KeyId given as the key id, the ARN or an alias: all name the blob's key
    await aws_call(kms.create_alias, AliasName="alias/orders", TargetKeyId=key["KeyId"])
    for key_id in (key["KeyId"], key["Arn"], "alias/orders", key["Arn"].replace(f"key/{key['KeyId']}", "alias/orders")):
        dec = await aws_call(kms.decrypt, CiphertextBlob=enc["CiphertextBlob"], KeyId=key_id,
                          EncryptionContext={"a": "1", "b": "2"})  # fmt: skip
        assert dec["Plaintext"] == b"hello"


async def test_decrypt_refuses_wrong_key_changed_context_and_flipped_byte(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    other = (await aws_call(kms.create_key))["KeyMetadata"]
    blob = (await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"secret", EncryptionContext={"k": "v"}))[
        "CiphertextBlob"
    ]
    err = await expect_error(kms.decrypt, CiphertextBlob=blob, KeyId=other["KeyId"], EncryptionContext={"k": "v"})
    assert error_code(err) == "IncorrectKeyException"
    for context in ({"k": "w"}, {}, {"k": "v", "x": "y"}):
        err = await expect_error(kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)
        assert error_code(err) == "InvalidCiphertextException"
    for position in (0, 5, 21, 22, 40, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        err = await expect_error(kms.decrypt, CiphertextBlob=bytes(tampered), EncryptionContext={"k": "v"})
        expected = "AccessDeniedException" if position in KEY_ID_BYTES else "InvalidCiphertextException"
        assert error_code(err) == expected
        if position in KEY_ID_BYTES:  # no such key in this region: AWS's answer, word for word
            assert err.response["Error"]["Message"] == AWS_KEY_NOT_HERE
    err = await expect_error(kms.decrypt, CiphertextBlob=b"short", EncryptionContext={"k": "v"})
    assert error_code(err) == "InvalidCiphertextException"


async def test_plaintext_of_zero_or_4097_bytes_is_a_validation_error(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = unchecked(node, await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    for size in (0, 4097):
        err = await expect_error(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x" * size)
        assert error_code(err) == "ValidationException"
    assert (await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x" * 4096))["CiphertextBlob"]


async def test_disabled_key_refuses_encrypt_but_describes(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    blob = (await aws_call(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p"))["CiphertextBlob"]
    await aws_call(kms.disable_key, KeyId=key["KeyId"])
    err = await expect_error(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p")
    assert error_code(err) == "DisabledException"
    assert err.response["Error"]["Message"] == f"{key['Arn']} is disabled."
    assert error_code(await expect_error(kms.decrypt, CiphertextBlob=blob)) == "DisabledException"
    assert (
        error_code(await expect_error(kms.generate_data_key, KeyId=key["KeyId"], KeySpec="AES_256"))
        == "DisabledException"
    )
    described = (await aws_call(kms.describe_key, KeyId=key["KeyId"]))["KeyMetadata"]
    assert (described["KeyState"], described["Enabled"]) == ("Disabled", False)
    await aws_call(kms.enable_key, KeyId=key["KeyId"])
    assert (await aws_call(kms.decrypt, CiphertextBlob=blob))["Plaintext"] == b"p"


async def test_generate_data_key_shapes_and_limits(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = unchecked(node, await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    ctx = {"purpose": "test"}
    for spec, size in (("AES_256", 32), ("AES_128", 16)):
        out = await aws_call(kms.generate_data_key, KeyId=key["KeyId"], KeySpec=spec, EncryptionContext=ctx)
        assert len(out["Plaintext"]) == size
        assert out["KeyId"] == key["Arn"]
        back = await aws_call(kms.decrypt, CiphertextBlob=out["CiphertextBlob"], EncryptionContext=ctx)
        assert back["Plaintext"] == out["Plaintext"]
    out = await aws_call(kms.generate_data_key, KeyId=key["KeyId"], NumberOfBytes=1024)
    assert len(out["Plaintext"]) == 1024
    quiet = await aws_call(kms.generate_data_key_without_plaintext, KeyId=key["KeyId"], NumberOfBytes=7)
    assert "Plaintext" not in quiet
    assert len((await aws_call(kms.decrypt, CiphertextBlob=quiet["CiphertextBlob"]))["Plaintext"]) == 7
    for bad in ({}, {"KeySpec": "AES_256", "NumberOfBytes": 32}, {"NumberOfBytes": 0}, {"NumberOfBytes": 1025}):
        err = await expect_error(kms.generate_data_key, KeyId=key["KeyId"], **bad)
        assert error_code(err) == "ValidationException", bad
    err = await expect_error(kms.generate_data_key, KeyId=key["KeyId"], KeySpec="AES_512")
    assert error_code(err) == "ValidationException"


async def test_generate_random_sizes(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = unchecked(node, await nodes.identity(node))
    first = (await aws_call(kms.generate_random, NumberOfBytes=1024))["Plaintext"]
    second = (await aws_call(kms.generate_random, NumberOfBytes=1024))["Plaintext"]
    assert len(first) == 1024 and first != second
    assert len((await aws_call(kms.generate_random, NumberOfBytes=1))["Plaintext"]) == 1
    for size in (0, 1025):
        assert error_code(await expect_error(kms.generate_random, NumberOfBytes=size)) == "ValidationException"
    assert error_code(await expect_error(kms.generate_random)) == "ValidationException"


async def test_re_encrypt_moves_a_blob_to_another_key_and_context(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    source = (await aws_call(kms.create_key))["KeyMetadata"]
    dest = (await aws_call(kms.create_key))["KeyMetadata"]
    blob = (await aws_call(kms.encrypt, KeyId=source["KeyId"], Plaintext=b"move me", EncryptionContext={"a": "1"}))[
        "CiphertextBlob"
    ]
    out = await aws_call(
        kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
        DestinationKeyId=dest["KeyId"], DestinationEncryptionContext={"b": "2"},
    )  # fmt: skip
    assert (out["SourceKeyId"], out["KeyId"]) == (source["Arn"], dest["Arn"])
    assert out["SourceEncryptionAlgorithm"] == out["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    dec = await aws_call(kms.decrypt, CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"b": "2"})
    assert (dec["Plaintext"], dec["KeyId"]) == (b"move me", dest["Arn"])
    err = await expect_error(kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"a": "2"},
                       DestinationKeyId=dest["KeyId"])  # fmt: skip
    assert error_code(err) == "InvalidCiphertextException"
    err = await expect_error(kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
                       SourceKeyId=dest["KeyId"], DestinationKeyId=dest["KeyId"])  # fmt: skip
    assert error_code(err) == "IncorrectKeyException"
    await aws_call(kms.disable_key, KeyId=dest["KeyId"])
    err = await expect_error(kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
                       DestinationKeyId=dest["KeyId"])  # fmt: skip
    assert error_code(err) == "DisabledException"


async def test_dry_run_answers_dry_run_exception(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    err = await expect_error(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"p", DryRun=True)
    assert error_code(err) == "DryRunOperationException"


async def test_user_without_permission_is_denied_in_aws_wording(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    key = (await aws_call(admin.create_key))["KeyMetadata"]
    nobody = await nodes.identity(node, user="nobody")
    err = await expect_error(node.client(nobody).encrypt, KeyId=key["KeyId"], Plaintext=b"p")
    assert error_code(err) == "AccessDeniedException"
    assert err.response["Error"]["Message"] == (
        f"User: {nobody.arn} is not authorized to perform: kms:Encrypt on resource: {key['Arn']} "
        "because no identity-based policy allows the kms:Encrypt action"
    )
    err = await expect_error(node.client(nobody).generate_random, NumberOfBytes=8)
    assert error_code(err) == "AccessDeniedException"
    # a condition on the encryption context: allowed only with tenant=a
    scoped = await nodes.identity(node, user="scoped", policy={
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": key["Arn"],
                       "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "a"}}}],
    })  # fmt: skip
    kms = node.client(scoped)
    await aws_call(kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext={"tenant": "a"})
    err = await expect_error(kms.encrypt, KeyId=key["Arn"], Plaintext=b"p", EncryptionContext={"tenant": "b"})
    assert error_code(err) == "AccessDeniedException"


async def test_other_account_needs_the_key_policy_to_allow_it(nodes: NodeFactory) -> None:
    node = await nodes.start()
    owner = node.client(await nodes.identity(node))
    stranger_id = await nodes.identity(node, account_id=OTHER_ACCOUNT_ID)
    stranger = node.client(stranger_id)
    private = (await aws_call(owner.create_key))["KeyMetadata"]
    blob = (await aws_call(owner.encrypt, KeyId=private["KeyId"], Plaintext=b"p"))["CiphertextBlob"]
    assert (
        error_code(await expect_error(stranger.encrypt, KeyId=private["Arn"], Plaintext=b"p"))
        == "AccessDeniedException"
    )
    assert error_code(await expect_error(stranger.decrypt, CiphertextBlob=blob)) == "AccessDeniedException"
    # a bare key id names a key of the caller's own account only
    assert (
        error_code(await expect_error(stranger.encrypt, KeyId=private["KeyId"], Plaintext=b"p")) == "NotFoundException"
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "owner", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "partner", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT_ID}:root"},
             "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"},
        ],
    }  # fmt: skip
    shared = (await aws_call(owner.create_key, Policy=json.dumps(policy)))["KeyMetadata"]
    enc = await aws_call(stranger.encrypt, KeyId=shared["Arn"], Plaintext=b"shared")
    assert enc["KeyId"] == shared["Arn"]
    assert (await aws_call(stranger.decrypt, CiphertextBlob=enc["CiphertextBlob"]))["Plaintext"] == b"shared"
    assert (await aws_call(owner.decrypt, CiphertextBlob=enc["CiphertextBlob"]))["Plaintext"] == b"shared"


async def test_aws_cli_encrypts_and_decrypts_by_alias(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    kms = node.client(ident)
    key = (await aws_call(kms.create_key))["KeyMetadata"]
    await aws_call(kms.create_alias, AliasName="alias/cli", TargetKeyId=key["KeyId"])
    (tmp_path / "plain.txt").write_bytes(b"from the aws cli")
    env = {
        "AWS_ACCESS_KEY_ID": ident.access_key_id, "AWS_SECRET_ACCESS_KEY": ident.secret_access_key,
        "AWS_DEFAULT_REGION": node.region, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
    }  # fmt: skip
    aws = [sys.executable, "-m", "awscli", "kms", "--endpoint-url", node.endpoint]

    def run(*args: str) -> dict[str, Any]:
        out = subprocess.run([*aws, *args, "--output", "json"], env=env, capture_output=True, timeout=60, check=True)
        return dict(json.loads(out.stdout))

    enc = await asyncio.to_thread(
        run, "encrypt", "--key-id", "alias/cli", "--plaintext", f"fileb://{tmp_path / 'plain.txt'}"
    )
    assert enc["KeyId"] == key["Arn"]
    (tmp_path / "blob").write_bytes(base64.b64decode(enc["CiphertextBlob"]))
    dec = await asyncio.to_thread(run, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}")
    assert base64.b64decode(dec["Plaintext"]) == b"from the aws cli"


async def test_round_trip_and_every_single_byte_change_is_rejected(nodes: NodeFactory) -> None:
    """Property: random plaintexts and contexts round-trip; changing any one byte of the blob fails.

    Runs against the node's CryptoService in process (no HTTP), so hypothesis can afford one
    Decrypt per byte position of every example. Hypothesis drives a sync function in a worker
    thread, which submits coroutines to this test's event loop.
    """
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    cryptops = node.app[SERVICES].cryptops
    admin = Requester(Principal(f"arn:aws:iam::{ACCOUNT_ID}:user/admin", ACCOUNT_ID, PrincipalKind.USER, "admin", "x"))
    loop = asyncio.get_running_loop()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    text = st.text(min_size=0, max_size=12)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        plaintext=st.binary(min_size=1, max_size=64),
        context=st.dictionaries(text, text, max_size=4),
        deltas=st.lists(st.integers(1, 255), min_size=1, max_size=1),
    )
    def check(plaintext: bytes, context: dict[str, str], deltas: list[int]) -> None:
        blob = run(cryptops.encrypt(admin, key_id, plaintext, context)).blob
        assert run(cryptops.decrypt(admin, blob, dict(reversed(list(context.items()))))).plaintext == plaintext
        for position in range(len(blob)):
            tampered = bytearray(blob)
            tampered[position] ^= deltas[0]
            # A changed key id (or id type) names a key this Region does not hold: AWS's
            # AccessDeniedException; any other change fails to authenticate.
            expected = (AccessDeniedException, InvalidCiphertextException) if position in KEY_ID_BYTES else (
                InvalidCiphertextException
            )
            with pytest.raises(expected):
                run(cryptops.decrypt(admin, bytes(tampered), context))

    await asyncio.to_thread(check)


async def test_service_decrypts_the_documented_known_answer_vector(nodes: NodeFactory) -> None:
    """docs/CIPHERTEXT.md's vector, with its backing key installed as version 3 of its key id."""
    vectors = json.loads((Path(__file__).parents[1] / "vectors" / "ciphertext_v1.json").read_text())
    vector = next(v for v in vectors["vectors"] if not v["key_id"].startswith("mrk-"))
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = Key(vector["key_id"], ACCOUNT_ID, node.region, node.clock.now(), KeyState.ENABLED)
    material = wrap.UnwrappedKey(bytes.fromhex(vectors["backing_key_hex"]))
    async with transaction(node.app[POOL]) as con:
        await key_store.insert_key(con, key, policy=default_key_policy(ACCOUNT_ID), current_version=3)
        version = vector["backing_version"]
        await key_store.insert_version(con, key.key_id, version, wrap.wrap(node.keyring, key.key_id, version, material),
                                       node.clock.now())  # fmt: skip
    out = await aws_call(kms.decrypt, CiphertextBlob=bytes.fromhex(vector["blob_hex"]),
                      EncryptionContext=vector["encryption_context"])  # fmt: skip
    assert out["Plaintext"] == bytes.fromhex(vector["plaintext_hex"])
    assert out["KeyId"] == key.arn
