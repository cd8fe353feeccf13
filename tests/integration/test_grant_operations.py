"""Grants on every key family, one grant operation at a time (issue 16 item 3).

Two tables, each against a real node with boto3, for a grantee whose identity policy allows no use
of any key (so every allow below comes from the grant):

* which grant operations CreateGrant accepts for each key type (AWS's "grant operations" table in
  the developer guide: an operation the key cannot perform is refused with ValidationException);
* for each accepted operation, a grant of that operation alone allows exactly that operation and
  denies every other one the key supports. A wrong allow is the defect this file exists to catch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory

NO_KEY_ACCESS = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}  # fmt: skip
ALWAYS = frozenset({"CreateGrant", "RetireGrant", "DescribeKey"})
EVERY_GRANT_OPERATION = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo",
    "Sign", "Verify", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey", "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac", "DeriveSharedSecret", "Encapsulate",
    "Decapsulate",
})  # fmt: skip
MESSAGE = b"grant-scoped message"


@dataclass(frozen=True)
class Family:
    spec: str
    usage: str | None
    grantable: frozenset[str]  # besides ALWAYS


FAMILIES = {
    "symmetric": Family("SYMMETRIC_DEFAULT", None, frozenset({
        "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo",
        "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"})),
    "rsa-encryption": Family("RSA_2048", "ENCRYPT_DECRYPT", frozenset({
        "Decrypt", "Encrypt", "GetPublicKey", "ReEncryptFrom", "ReEncryptTo"})),
    "ecc-signing": Family("ECC_NIST_P256", "SIGN_VERIFY", frozenset({"Sign", "Verify", "GetPublicKey"})),
    "hmac": Family("HMAC_256", "GENERATE_VERIFY_MAC", frozenset({"GenerateMac", "VerifyMac"})),
    "key-agreement": Family("ECC_NIST_P256", "KEY_AGREEMENT", frozenset({"DeriveSharedSecret", "GetPublicKey"})),
    "ml-kem": Family("ML_KEM_768", "ENCAPSULATE_DECAPSULATE", frozenset({"Encapsulate", "Decapsulate",
                                                                        "GetPublicKey"})),
}  # fmt: skip

Probe = Callable[[list[str]], Awaitable[Any]]


async def _probes(family: str, admin: Any, kms: Any, key: dict[str, Any]) -> dict[str, Probe]:
    """Each operation the key supports, as the grantee calls it with a grant token; the inputs that
    need the key (a ciphertext, a signature, a MAC) are made by the key's administrator."""
    arn = key["Arn"]

    def call(fn: Any, **kwargs: Any) -> Probe:
        return lambda token: aws_call(fn, KeyId=arn, **_tokens(token), **kwargs)

    probes: dict[str, Probe] = {"DescribeKey": call(kms.describe_key)}
    if family == "symmetric":
        blob = (await aws_call(admin.encrypt, KeyId=arn, Plaintext=MESSAGE))["CiphertextBlob"]
        probes |= {
            "Encrypt": call(kms.encrypt, Plaintext=MESSAGE),
            "Decrypt": call(kms.decrypt, CiphertextBlob=blob),
            "GenerateDataKey": call(kms.generate_data_key, KeySpec="AES_256"),
            "GenerateDataKeyWithoutPlaintext": call(kms.generate_data_key_without_plaintext, KeySpec="AES_256"),
            "GenerateDataKeyPair": call(kms.generate_data_key_pair, KeyPairSpec="ECC_NIST_P256"),
            "GenerateDataKeyPairWithoutPlaintext": call(kms.generate_data_key_pair_without_plaintext,
                                                        KeyPairSpec="ECC_NIST_P256"),
            "ReEncrypt": lambda token: aws_call(kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=arn,
                                                **_tokens(token)),
        }  # fmt: skip
    elif family == "rsa-encryption":
        oaep = {"EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
        blob = (await aws_call(admin.encrypt, KeyId=arn, Plaintext=MESSAGE, **oaep))["CiphertextBlob"]
        probes |= {
            "Encrypt": call(kms.encrypt, Plaintext=MESSAGE, **oaep),
            "Decrypt": call(kms.decrypt, CiphertextBlob=blob, **oaep),
            "GetPublicKey": call(kms.get_public_key),
            "ReEncrypt": lambda token: aws_call(
                kms.re_encrypt, CiphertextBlob=blob, SourceKeyId=arn, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                DestinationKeyId=arn, DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256", **_tokens(token)),
        }  # fmt: skip
    elif family == "ecc-signing":
        sig = {"Message": MESSAGE, "SigningAlgorithm": "ECDSA_SHA_256"}
        signature = (await aws_call(admin.sign, KeyId=arn, **sig))["Signature"]
        probes |= {"Sign": call(kms.sign, **sig), "Verify": call(kms.verify, Signature=signature, **sig),
                   "GetPublicKey": call(kms.get_public_key)}  # fmt: skip
    elif family == "hmac":
        mac = {"Message": MESSAGE, "MacAlgorithm": "HMAC_SHA_256"}
        tag = (await aws_call(admin.generate_mac, KeyId=arn, **mac))["Mac"]
        probes |= {"GenerateMac": call(kms.generate_mac, **mac), "VerifyMac": call(kms.verify_mac, Mac=tag, **mac)}
    elif family == "key-agreement":
        peer = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        probes |= {"DeriveSharedSecret": call(kms.derive_shared_secret, KeyAgreementAlgorithm="ECDH", PublicKey=peer),
                   "GetPublicKey": call(kms.get_public_key)}  # fmt: skip
    elif family == "ml-kem":
        out = await aws_call(admin.encapsulate, KeyId=arn, EncapsulationAlgorithm="ML_KEM")
        probes |= {
            "Encapsulate": call(kms.encapsulate, EncapsulationAlgorithm="ML_KEM"),
            "Decapsulate": call(kms.decapsulate, EncapsulationAlgorithm="ML_KEM",
                                SharedSecretCiphertextBlob=out["SharedSecretCiphertextBlob"]),
            "GetPublicKey": call(kms.get_public_key),
        }  # fmt: skip
    return probes


def _tokens(token: list[str]) -> dict[str, list[str]]:
    return {"GrantTokens": token} if token else {}  # the model refuses an empty list


def _needs(probe: str) -> frozenset[str]:
    """The grant operations a call needs: ReEncrypt needs both halves, on the source and the destination."""
    return frozenset({"ReEncryptFrom", "ReEncryptTo"}) if probe == "ReEncrypt" else frozenset({probe})


async def _allowed(probe: Probe, token: list[str]) -> bool:
    try:
        await probe(token)
    except botocore.exceptions.ClientError as exc:
        assert error_code(exc) == "AccessDeniedException", exc.response["Error"]
        return False
    return True


async def _key(admin: Any, family: Family) -> dict[str, Any]:
    kwargs = {"KeySpec": family.spec} | ({"KeyUsage": family.usage} if family.usage else {})
    return (await aws_call(admin.create_key, **kwargs))["KeyMetadata"]  # type: ignore[no-any-return]


async def test_create_grant_accepts_exactly_the_operations_each_key_type_supports(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    grantee = await nodes.identity(node, user="grantee", policy=NO_KEY_ACCESS)
    for name, family in FAMILIES.items():
        key = await _key(admin, family)
        for operation in sorted(EVERY_GRANT_OPERATION):
            # AWS refuses a grant of CreateGrant alone (it could only make more such grants).
            operations = [operation, "DescribeKey"] if operation == "CreateGrant" else [operation]
            kwargs = {"KeyId": key["KeyId"], "GranteePrincipal": grantee.arn, "Operations": operations}
            if operation in family.grantable | ALWAYS:
                await aws_call(admin.create_grant, **kwargs)
            else:
                err = await expect_error(admin.create_grant, **kwargs)
                assert error_code(err) == "ValidationException", (name, operation)


async def test_a_grant_of_one_operation_allows_that_operation_and_no_other(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    for name, family in FAMILIES.items():
        key = await _key(admin, family)
        grant_sets = [frozenset({op}) for op in sorted(family.grantable | {"DescribeKey"})]
        if "ReEncryptFrom" in family.grantable:
            grant_sets.append(frozenset({"ReEncryptFrom", "ReEncryptTo"}))
        for i, granted in enumerate(grant_sets):
            # A grantee of its own per grant: no earlier grant (revoked or not) can take part in a decision.
            grantee = await nodes.identity(node, user=f"{name}-{i}", policy=NO_KEY_ACCESS)
            probes = await _probes(name, admin, node.client(grantee), key)
            if i == 0:
                assert not any([await _allowed(p, []) for p in probes.values()]), name  # nothing without a grant
            grant = await aws_call(admin.create_grant, KeyId=key["KeyId"], GranteePrincipal=grantee.arn,
                                   Operations=sorted(granted))  # fmt: skip
            token = [grant["GrantToken"]]
            decisions = {probe: await _allowed(fn, token) for probe, fn in probes.items()}
            expected = {probe: _needs(probe) <= granted for probe in probes}
            assert decisions == expected, (name, sorted(granted))
