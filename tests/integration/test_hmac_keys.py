"""HMAC KMS keys through boto3 against a real node: CreateKey, GenerateMac, VerifyMac, and every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import ACCOUNT_ID, NodeFactory

NO_KEY_ACCESS = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}
"""An identity policy that allows no use of any key: access must come from a grant."""

HMAC_SPECS = {"HMAC_224": "HMAC_SHA_224", "HMAC_256": "HMAC_SHA_256", "HMAC_384": "HMAC_SHA_384",
              "HMAC_512": "HMAC_SHA_512"}  # fmt: skip
MAC_BYTES = {"HMAC_SHA_224": 28, "HMAC_SHA_256": 32, "HMAC_SHA_384": 48, "HMAC_SHA_512": 64}


async def test_every_hmac_spec_makes_a_key_that_macs_and_verifies(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    for spec, algorithm in HMAC_SPECS.items():
        meta = (await aws_call(kms.create_key, KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]
        assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == spec
        assert meta["KeyUsage"] == "GENERATE_VERIFY_MAC"
        assert meta["MacAlgorithms"] == [algorithm]
        for absent in ("EncryptionAlgorithms", "SigningAlgorithms", "KeyAgreementAlgorithms"):
            assert absent not in meta
        described = (await aws_call(kms.describe_key, KeyId=meta["KeyId"]))["KeyMetadata"]
        assert described["MacAlgorithms"] == [algorithm]
        out = await aws_call(kms.generate_mac, KeyId=meta["KeyId"], Message=b"token", MacAlgorithm=algorithm)
        assert out["KeyId"] == meta["Arn"] and out["MacAlgorithm"] == algorithm
        assert len(out["Mac"]) == MAC_BYTES[algorithm]
        again = await aws_call(kms.generate_mac, KeyId=meta["Arn"], Message=b"token", MacAlgorithm=algorithm)
        assert again["Mac"] == out["Mac"]  # HMAC is deterministic
        ok = await aws_call(kms.verify_mac, KeyId=meta["KeyId"], Message=b"token", MacAlgorithm=algorithm,
                            Mac=out["Mac"])  # fmt: skip
        assert ok["MacValid"] is True and ok["KeyId"] == meta["Arn"]


async def test_verify_mac_refuses_a_changed_mac_message_or_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key = (await aws_call(kms.create_key, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]
    other = (await aws_call(kms.create_key, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]
    mac = (await aws_call(kms.generate_mac, KeyId=key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256"))["Mac"]
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    for key_id, message, tag in ((key["KeyId"], b"m", flipped), (key["KeyId"], b"n", mac), (other["KeyId"], b"m", mac),
                                 (key["KeyId"], b"m", mac[:-1]), (key["KeyId"], b"m", mac + b"\x00")):  # fmt: skip
        err = await expect_error(kms.verify_mac, KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_256", Mac=tag)
        assert error_code(err) == "KMSInvalidMacException"


async def test_hmac_key_usage_rules(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    # KeyUsage is required for every spec but SYMMETRIC_DEFAULT, and must be the spec's.
    for kwargs in ({"KeySpec": "HMAC_256"}, {"KeySpec": "HMAC_256", "KeyUsage": "ENCRYPT_DECRYPT"},
                   {"KeySpec": "HMAC_256", "KeyUsage": "SIGN_VERIFY"},
                   {"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "GENERATE_VERIFY_MAC"}):  # fmt: skip
        assert error_code(await expect_error(kms.create_key, **kwargs)) == "ValidationException", kwargs
    hmac_key = (await aws_call(kms.create_key, KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]
    symmetric = (await aws_call(kms.create_key))["KeyMetadata"]
    # The algorithm must be the key's; a symmetric key does not MAC; an HMAC key does not encrypt.
    err = await expect_error(kms.generate_mac, KeyId=hmac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert error_code(err) == "InvalidKeyUsageException"
    err = await expect_error(kms.generate_mac, KeyId=symmetric["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert error_code(err) == "InvalidKeyUsageException"
    assert "ENCRYPT_DECRYPT which is not valid for GenerateMac" in str(err)
    err = await expect_error(kms.verify_mac, KeyId=symmetric["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256",
                             Mac=b"x" * 32)  # fmt: skip
    assert error_code(err) == "InvalidKeyUsageException"
    wrong: dict[str, Any]
    for call, wrong in ((kms.encrypt, {"Plaintext": b"p"}), (kms.generate_data_key, {"KeySpec": "AES_256"}),
                         (kms.sign, {"Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"})):  # fmt: skip
        err = await expect_error(call, KeyId=hmac_key["KeyId"], **wrong)
        assert error_code(err) == "InvalidKeyUsageException", call
    # An HMAC key is symmetric: it has no public key.
    err = await expect_error(kms.get_public_key, KeyId=hmac_key["KeyId"])
    assert error_code(err) == "UnsupportedOperationException"
    # Rotation is for symmetric encryption keys only (AWS refuses it for HMAC keys).
    for call in (kms.enable_key_rotation, kms.disable_key_rotation, kms.rotate_key_on_demand):
        err = await expect_error(call, KeyId=hmac_key["KeyId"])
        assert error_code(err) == "UnsupportedOperationException"
    status = await aws_call(kms.get_key_rotation_status, KeyId=hmac_key["KeyId"])
    assert status["KeyRotationEnabled"] is False and "RotationPeriodInDays" not in status


async def test_hmac_key_states_dry_run_and_grants(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    key = (await aws_call(admin.create_key, KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC"))["KeyMetadata"]
    mac_kwargs = {"KeyId": key["KeyId"], "Message": b"m", "MacAlgorithm": "HMAC_SHA_512"}
    err = await expect_error(admin.generate_mac, **mac_kwargs, DryRun=True)
    assert error_code(err) == "DryRunOperationException"
    # A user without any policy may use the key only through a grant, for the granted operation only.
    user = await nodes.identity(node, user="macer", policy=NO_KEY_ACCESS)
    kms = node.client(user)
    assert error_code(await expect_error(kms.generate_mac, **mac_kwargs)) == "AccessDeniedException"
    grant = await aws_call(admin.create_grant, KeyId=key["KeyId"], GranteePrincipal=user.arn,
                           Operations=["GenerateMac"])  # fmt: skip
    mac = (await aws_call(kms.generate_mac, **mac_kwargs, GrantTokens=[grant["GrantToken"]]))["Mac"]
    err = await expect_error(kms.verify_mac, **mac_kwargs, Mac=mac, GrantTokens=[grant["GrantToken"]])
    assert error_code(err) == "AccessDeniedException"
    # Grant operations must fit the key: Encrypt is not an HMAC key's operation.
    err = await expect_error(admin.create_grant, KeyId=key["KeyId"], GranteePrincipal=user.arn, Operations=["Encrypt"])
    assert error_code(err) == "ValidationException"
    # Disabled, then pending deletion.
    await aws_call(admin.disable_key, KeyId=key["KeyId"])
    assert error_code(await expect_error(admin.generate_mac, **mac_kwargs)) == "DisabledException"
    await aws_call(admin.schedule_key_deletion, KeyId=key["KeyId"], PendingWindowInDays=7)
    assert error_code(await expect_error(admin.generate_mac, **mac_kwargs)) == "KMSInvalidStateException"
    err = await expect_error(admin.verify_mac, **mac_kwargs, Mac=mac)
    assert error_code(err) == "KMSInvalidStateException"


async def test_hmac_key_policy_can_restrict_the_mac_algorithm_condition_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    root = f"arn:aws:iam::{ACCOUNT_ID}:root"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:GenerateMac", "Resource": "*",
         "Condition": {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_256"}}},
    ]}  # fmt: skip
    key = (await aws_call(kms.create_key, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC",
                          Policy=json.dumps(policy)))["KeyMetadata"]  # fmt: skip
    err = await expect_error(kms.generate_mac, KeyId=key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert error_code(err) == "AccessDeniedException"


@pytest.mark.parametrize("spec", ["SM2", "ML_KEM_512"])
async def test_unavailable_key_specs_are_refused_clearly(nodes: NodeFactory, spec: str) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    usage = "SIGN_VERIFY" if spec == "SM2" else "ENCAPSULATE_DECAPSULATE"
    err = await expect_error(kms.create_key, KeySpec=spec, KeyUsage=usage)
    assert error_code(err) == "UnsupportedOperationException"
    assert spec in str(err)
