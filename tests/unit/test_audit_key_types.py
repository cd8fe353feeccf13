"""Audit events of the asymmetric, HMAC and key-agreement operations: CloudTrail's request fields,
never a message, signature, MAC, shared secret, public or private key."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import orjson
import pytest

from regiond.audit import events
from regiond.audit.calls import CallRecord
from regiond.domain.principal import Principal, PrincipalKind

KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALICE = Principal("arn:aws:iam::111122223333:user/alice", "111122223333", PrincipalKind.USER, "alice", "AIDAALICE")
SECRETS = {name: (name.encode() * 8)[:48] for name in
           ("message", "signature", "mac", "shared", "private", "public", "blob", "attest")}  # fmt: skip
S = SECRETS

CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("Sign", {"KeyId": "alias/signer", "Message": S["message"], "MessageType": "DIGEST",
              "SigningAlgorithm": "ECDSA_SHA_256", "GrantTokens": ["tok"]},
     {"KeyId": KEY_ARN, "Signature": S["signature"], "SigningAlgorithm": "ECDSA_SHA_256"},
     {"keyId": "alias/signer", "messageType": "DIGEST", "signingAlgorithm": "ECDSA_SHA_256"}),
    ("Verify", {"KeyId": KEY_ARN, "Message": S["message"], "Signature": S["signature"],
                "SigningAlgorithm": "ED25519_SHA_512"},
     {"KeyId": KEY_ARN, "SignatureValid": True, "SigningAlgorithm": "ED25519_SHA_512"},
     {"keyId": KEY_ARN, "signingAlgorithm": "ED25519_SHA_512"}),
    ("GenerateMac", {"KeyId": KEY_ARN, "Message": S["message"], "MacAlgorithm": "HMAC_SHA_256"},
     {"KeyId": KEY_ARN, "Mac": S["mac"], "MacAlgorithm": "HMAC_SHA_256"},
     {"keyId": KEY_ARN, "macAlgorithm": "HMAC_SHA_256"}),
    ("VerifyMac", {"KeyId": KEY_ARN, "Message": S["message"], "Mac": S["mac"], "MacAlgorithm": "HMAC_SHA_256"},
     {"KeyId": KEY_ARN, "MacValid": True, "MacAlgorithm": "HMAC_SHA_256"},
     {"keyId": KEY_ARN, "macAlgorithm": "HMAC_SHA_256"}),
    ("GetPublicKey", {"KeyId": KEY_ARN}, {"KeyId": KEY_ARN, "PublicKey": S["public"], "KeySpec": "RSA_2048"},
     {"keyId": KEY_ARN}),
    ("DeriveSharedSecret", {"KeyId": KEY_ARN, "KeyAgreementAlgorithm": "ECDH", "PublicKey": S["public"],
                            "Recipient": {"AttestationDocument": S["attest"]}},
     {"KeyId": KEY_ARN, "SharedSecret": S["shared"], "KeyAgreementAlgorithm": "ECDH", "KeyOrigin": "AWS_KMS"},
     {"keyId": KEY_ARN, "keyAgreementAlgorithm": "ECDH"}),
    ("Encapsulate", {"KeyId": KEY_ARN, "EncapsulationAlgorithm": "ML_KEM"},
     {"KeyId": KEY_ARN, "SharedSecret": S["shared"], "SharedSecretCiphertextBlob": S["blob"]},
     {"keyId": KEY_ARN, "encapsulationAlgorithm": "ML_KEM"}),
    ("Decapsulate", {"KeyId": KEY_ARN, "EncapsulationAlgorithm": "ML_KEM", "SharedSecretCiphertextBlob": S["blob"]},
     {"KeyId": KEY_ARN, "SharedSecret": S["shared"]},
     {"keyId": KEY_ARN, "encapsulationAlgorithm": "ML_KEM"}),
    ("GenerateDataKeyPair", {"KeyId": KEY_ARN, "KeyPairSpec": "ECC_NIST_P256", "EncryptionContext": {"app": "x"}},
     {"PrivateKeyCiphertextBlob": S["blob"], "PrivateKeyPlaintext": S["private"], "PublicKey": S["public"],
      "KeyId": KEY_ARN, "KeyPairSpec": "ECC_NIST_P256"},
     {"keyId": KEY_ARN, "keyPairSpec": "ECC_NIST_P256", "encryptionContext": {"app": "x"}}),
    ("GenerateDataKeyPairWithoutPlaintext", {"KeyId": KEY_ARN, "KeyPairSpec": "RSA_2048"},
     {"PrivateKeyCiphertextBlob": S["blob"], "PublicKey": S["public"], "KeyId": KEY_ARN, "KeyPairSpec": "RSA_2048"},
     {"keyId": KEY_ARN, "keyPairSpec": "RSA_2048"}),
]  # fmt: skip


@pytest.mark.parametrize(("operation", "params", "result", "recorded"), CASES, ids=[c[0] for c in CASES])
def test_event_records_cloudtrails_fields_and_no_secret(
    operation: str, params: dict[str, Any], result: dict[str, Any], recorded: dict[str, Any]
) -> None:
    record = CallRecord(
        operation=operation, event_source="kms.amazonaws.com", request_id="req-1",
        event_time=dt.datetime(2026, 12, 1, tzinfo=dt.UTC), region="us-east-1", source_ip="198.51.100.7",
        user_agent="test/1.0", principal=ALICE, access_key_id="AKIAEXAMPLE", params=params, result=result,
        resources=[KEY_ARN],
    )  # fmt: skip
    event = events.build_event(record, uuid.uuid4())
    assert event["requestParameters"] == recorded
    assert event["readOnly"] is True and event.get("responseElements") is None
    text = orjson.dumps(event)
    for secret in SECRETS.values():
        for form in (secret, base64.b64encode(secret), secret.hex().encode()):
            assert form not in text, (operation, secret)
