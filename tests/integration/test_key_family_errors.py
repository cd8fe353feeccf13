"""Each error code of issue 16, for each key family, through boto3 against a real node.

One row per family: a key of that family and its operations. Every operation of every row is
refused with the code AWS gives for each cause, in the order AWS checks them: the key does not
exist (NotFoundException), the caller may not use it (AccessDeniedException), DryRun
(DryRunOperationException), the operation is not the key's (InvalidKeyUsageException), the key
is disabled (DisabledException) or pending deletion (KMSInvalidStateException).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory

NO_KEY_ACCESS = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}  # fmt: skip
PEER = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)

Call = tuple[str, dict[str, Any]]  # (boto3 method name, arguments but KeyId)


@dataclass(frozen=True)
class Family:
    name: str
    spec: str
    usage: str
    calls: tuple[Call, ...]  # the key's own operations, each valid for it
    foreign: Call  # an operation of another family: InvalidKeyUsageException


def _sign(algorithm: str, message_type: str = "RAW", message: bytes = b"m") -> tuple[Call, Call]:
    args = {"Message": message, "MessageType": message_type, "SigningAlgorithm": algorithm}
    return ("sign", args), ("verify", {**args, "Signature": b"\x30" * 64})


MAC: Call = ("generate_mac", {"Message": b"m", "MacAlgorithm": "HMAC_SHA_256"})
ENCRYPT_OAEP: Call = ("encrypt", {"Plaintext": b"p", "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
FAMILIES = (
    Family("RSA signing", "RSA_2048", "SIGN_VERIFY", _sign("RSASSA_PSS_SHA_256"), ENCRYPT_OAEP),
    Family("RSA encryption", "RSA_3072", "ENCRYPT_DECRYPT", (
        ENCRYPT_OAEP,
        ("decrypt", {"CiphertextBlob": b"c" * 384, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    ), ("sign", {"Message": b"m", "SigningAlgorithm": "RSASSA_PSS_SHA_256"})),
    Family("ECC NIST signing", "ECC_NIST_P384", "SIGN_VERIFY", _sign("ECDSA_SHA_384"), MAC),
    Family("ECC secp256k1", "ECC_SECG_P256K1", "SIGN_VERIFY", _sign("ECDSA_SHA_256"), MAC),
    Family("Ed25519", "ECC_NIST_EDWARDS25519", "SIGN_VERIFY",
           _sign("ED25519_SHA_512") + _sign("ED25519_PH_SHA_512", "DIGEST", hashlib.sha512(b"m").digest()),
           ENCRYPT_OAEP),
    Family("ML-DSA", "ML_DSA_65", "SIGN_VERIFY", _sign("ML_DSA_SHAKE_256") + _sign(
        "ML_DSA_SHAKE_256", "EXTERNAL_MU", b"u" * 64), ("encapsulate", {"EncapsulationAlgorithm": "ML_KEM"})),
    Family("ECC key agreement", "ECC_NIST_P256", "KEY_AGREEMENT", (
        ("derive_shared_secret", {"KeyAgreementAlgorithm": "ECDH", "PublicKey": PEER}),
    ), ("sign", {"Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"})),
    Family("ML-KEM", "ML_KEM_1024", "ENCAPSULATE_DECAPSULATE", (
        ("encapsulate", {"EncapsulationAlgorithm": "ML_KEM"}),
        ("decapsulate", {"EncapsulationAlgorithm": "ML_KEM", "SharedSecretCiphertextBlob": b"c" * 1568}),
    ), ("derive_shared_secret", {"KeyAgreementAlgorithm": "ECDH", "PublicKey": PEER})),
    Family("HMAC", "HMAC_256", "GENERATE_VERIFY_MAC", (
        MAC, ("verify_mac", {**MAC[1], "Mac": b"x" * 32}),
    ), ("sign", {"Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"})),
    Family("symmetric", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", (
        ("encrypt", {"Plaintext": b"p"}),
        ("generate_data_key", {"KeySpec": "AES_256"}),
        ("generate_data_key_pair", {"KeyPairSpec": "ECC_NIST_P256"}),
    ), MAC),
)  # fmt: skip


async def _code(client: Any, call: Call, key_id: str, **extra: Any) -> str:
    method: Callable[..., Any] = getattr(client, call[0])
    return error_code(await expect_error(method, KeyId=key_id, **call[1], **extra))


async def test_each_error_code_for_each_key_family(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    stranger = node.client(await nodes.identity(node, user="stranger", policy=NO_KEY_ACCESS))
    missing = f"arn:aws:kms:us-east-1:111122223333:key/{uuid.uuid4()}"
    keys: dict[str, str] = {}
    for family in FAMILIES:
        meta = (await aws_call(admin.create_key, KeySpec=family.spec, KeyUsage=family.usage))["KeyMetadata"]
        keys[family.name] = meta["Arn"]

    calls = [(f.name, call) for f in FAMILIES for call in f.calls]
    for name, call in calls:
        assert await _code(admin, call, missing) == "NotFoundException", (name, call[0])
    for name, call in calls:
        assert await _code(stranger, call, keys[name]) == "AccessDeniedException", (name, call[0])
    for name, call in calls:
        # Decrypt checks its ciphertext in a dry run too, unless told not to (IGNORE_CIPHERTEXT).
        extra = {"DryRunModifiers": ["IGNORE_CIPHERTEXT"]} if call[0] == "decrypt" else {}
        code = await _code(admin, call, keys[name], DryRun=True, **extra)
        assert code == "DryRunOperationException", (name, call[0])
    for family in FAMILIES:
        code = await _code(admin, family.foreign, keys[family.name])
        assert code == "InvalidKeyUsageException", (family.name, family.foreign[0])
    for family in FAMILIES:
        await aws_call(admin.disable_key, KeyId=keys[family.name])
    for name, call in calls:
        assert await _code(admin, call, keys[name]) == "DisabledException", (name, call[0])
    for family in FAMILIES:
        await aws_call(admin.schedule_key_deletion, KeyId=keys[family.name], PendingWindowInDays=7)
    for name, call in calls:
        assert await _code(admin, call, keys[name]) == "KMSInvalidStateException", (name, call[0])
