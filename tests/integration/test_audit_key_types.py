"""Audit events of the asymmetric, HMAC, key-agreement and KEM operations, as a real node stores them.

Each call's event carries the request fields CloudTrail records for it (AWS's CloudTrail examples
in the KMS developer guide: ``keyId``, ``messageType``, ``signingAlgorithm`` for Sign and Verify,
``macAlgorithm`` for the MAC operations, ``keySpec``/``keyPairSpec`` and the encryption context for
data keys ...), ``responseElements`` null (read-only calls), the key as its resource and, for the
symmetric key behind a data key pair, the ``keyMaterialId``. And the stored event JSON, every
byte the region's database holds for the trail, contains none of the secrets those calls handled:
the messages and digests, signatures, MACs, shared secrets, the ML-KEM ciphertext, the plaintext
and ciphertext of an RSA key, the private key of a data key pair, in raw, hex or base64 form (at
every alignment, so a secret inside a longer encoded value is found too).
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, padding

from tests.support.audit_v2 import trail_records
from tests.support.aws import aws_call
from tests.support.cluster import NodeFactory


def _forms(secret: bytes) -> list[bytes]:
    """The ways a secret could be written into JSON: raw, hex, and base64 starting at any of the three
    byte alignments (the characters that do not depend on the bytes around it)."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for start in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(secret[start:]).rstrip(b"=")
            forms.append(encoded[:-3])  # without the last characters, which the bytes after it change
    return forms


def _key(kms: Any, spec: str, usage: str) -> Any:
    return aws_call(kms.create_key, KeySpec=spec, KeyUsage=usage)


async def test_new_key_type_events_record_cloudtrails_fields_and_no_secret(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    signer = (await _key(kms, "ECC_NIST_P256", "SIGN_VERIFY"))["KeyMetadata"]
    mac_key = (await _key(kms, "HMAC_384", "GENERATE_VERIFY_MAC"))["KeyMetadata"]
    agree = (await _key(kms, "ECC_NIST_P384", "KEY_AGREEMENT"))["KeyMetadata"]
    kem = (await _key(kms, "ML_KEM_768", "ENCAPSULATE_DECAPSULATE"))["KeyMetadata"]
    oaep = (await _key(kms, "RSA_2048", "ENCRYPT_DECRYPT"))["KeyMetadata"]
    wrapping = (await aws_call(kms.create_key))["KeyMetadata"]

    message, mac_message = os.urandom(40), os.urandom(40)
    digest = hashlib.sha256(os.urandom(40)).digest()
    secrets: dict[str, bytes] = {"message": message, "mac message": mac_message, "digest": digest}
    expected: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []  # (operation, response, key, fields)

    def record(operation: str, response: dict[str, Any], key: dict[str, Any], fields: dict[str, Any]) -> None:
        expected.append((operation, response, key["Arn"], fields))

    signed = await aws_call(kms.sign, KeyId=signer["KeyId"], Message=message, SigningAlgorithm="ECDSA_SHA_256")
    secrets["signature"] = signed["Signature"]
    record("Sign", signed, signer, {"keyId": signer["KeyId"], "signingAlgorithm": "ECDSA_SHA_256"})
    signed_digest = await aws_call(kms.sign, KeyId=signer["Arn"], Message=digest, MessageType="DIGEST",
                                   SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip
    secrets["digest signature"] = signed_digest["Signature"]
    record("Sign", signed_digest, signer,
           {"keyId": signer["Arn"], "messageType": "DIGEST", "signingAlgorithm": "ECDSA_SHA_256"})  # fmt: skip
    verified = await aws_call(kms.verify, KeyId=signer["KeyId"], Message=message, MessageType="RAW",
                              Signature=signed["Signature"], SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip
    assert verified["SignatureValid"] is True
    record("Verify", verified, signer,
           {"keyId": signer["KeyId"], "messageType": "RAW", "signingAlgorithm": "ECDSA_SHA_256"})  # fmt: skip

    mac = await aws_call(kms.generate_mac, KeyId=mac_key["KeyId"], Message=mac_message, MacAlgorithm="HMAC_SHA_384")
    secrets["mac"] = mac["Mac"]
    record("GenerateMac", mac, mac_key, {"keyId": mac_key["KeyId"], "macAlgorithm": "HMAC_SHA_384"})
    mac_ok = await aws_call(kms.verify_mac, KeyId=mac_key["KeyId"], Message=mac_message, Mac=mac["Mac"],
                            MacAlgorithm="HMAC_SHA_384")  # fmt: skip
    assert mac_ok["MacValid"] is True
    record("VerifyMac", mac_ok, mac_key, {"keyId": mac_key["KeyId"], "macAlgorithm": "HMAC_SHA_384"})

    public = await aws_call(kms.get_public_key, KeyId=agree["KeyId"])
    record("GetPublicKey", public, agree, {"keyId": agree["KeyId"]})
    peer = ec.generate_private_key(ec.SECP384R1())
    peer_der = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    derived = await aws_call(kms.derive_shared_secret, KeyId=agree["KeyId"], KeyAgreementAlgorithm="ECDH",
                             PublicKey=peer_der)  # fmt: skip
    service_public = serialization.load_der_public_key(public["PublicKey"])
    assert isinstance(service_public, ec.EllipticCurvePublicKey)
    assert derived["SharedSecret"] == peer.exchange(ec.ECDH(), service_public)  # the real secret is what is scanned
    secrets["ecdh secret"] = derived["SharedSecret"]
    record("DeriveSharedSecret", derived, agree, {"keyId": agree["KeyId"], "keyAgreementAlgorithm": "ECDH"})

    kem_public = serialization.load_der_public_key(
        (await aws_call(kms.get_public_key, KeyId=kem["KeyId"]))["PublicKey"]
    )
    assert isinstance(kem_public, mlkem.MLKEM768PublicKey)
    offline_secret, offline_ciphertext = kem_public.encapsulate()
    opened = await aws_call(kms.decapsulate, KeyId=kem["KeyId"], EncapsulationAlgorithm="ML_KEM",
                            SharedSecretCiphertextBlob=offline_ciphertext)  # fmt: skip
    assert opened["SharedSecret"] == offline_secret
    secrets |= {"kem secret (offline)": offline_secret, "kem ciphertext (offline)": offline_ciphertext}
    record("Decapsulate", opened, kem, {"keyId": kem["KeyId"], "encapsulationAlgorithm": "ML_KEM"})
    sealed = await aws_call(kms.encapsulate, KeyId=kem["KeyId"], EncapsulationAlgorithm="ML_KEM")
    secrets |= {"kem secret": sealed["SharedSecret"], "kem ciphertext": sealed["SharedSecretCiphertextBlob"]}
    record("Encapsulate", sealed, kem, {"keyId": kem["KeyId"], "encapsulationAlgorithm": "ML_KEM"})

    rsa_public = serialization.load_der_public_key((await aws_call(kms.get_public_key, KeyId=oaep["Arn"]))["PublicKey"])
    oaep_plaintext = os.urandom(64)
    offline_blob = rsa_public.encrypt(  # type: ignore[union-attr]
        oaep_plaintext, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    )
    decrypted = await aws_call(kms.decrypt, KeyId=oaep["KeyId"], CiphertextBlob=offline_blob,
                               EncryptionAlgorithm="RSAES_OAEP_SHA_256")  # fmt: skip
    assert decrypted["Plaintext"] == oaep_plaintext
    secrets |= {"rsa plaintext": oaep_plaintext, "rsa ciphertext": offline_blob}
    record("Decrypt", decrypted, oaep, {"keyId": oaep["KeyId"], "encryptionAlgorithm": "RSAES_OAEP_SHA_256"})

    context = {"purpose": "audit test"}
    pair = await aws_call(kms.generate_data_key_pair, KeyId=wrapping["KeyId"], KeyPairSpec="ECC_NIST_P256",
                          EncryptionContext=context)  # fmt: skip
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    secrets |= {"private key": pair["PrivateKeyPlaintext"], "private key blob": pair["PrivateKeyCiphertextBlob"],
                "private scalar": private.private_numbers().private_value.to_bytes(32, "big")}  # fmt: skip
    record("GenerateDataKeyPair", pair, wrapping,
           {"keyId": wrapping["KeyId"], "keyPairSpec": "ECC_NIST_P256", "encryptionContext": context})  # fmt: skip
    bare = await aws_call(kms.generate_data_key_pair_without_plaintext, KeyId=wrapping["Arn"], KeyPairSpec="RSA_2048")
    secrets["private key blob (without plaintext)"] = bare["PrivateKeyCiphertextBlob"]
    record("GenerateDataKeyPairWithoutPlaintext", bare, wrapping, {"keyId": wrapping["Arn"], "keyPairSpec": "RSA_2048"})

    records = await trail_records(node.database_url)
    events = {event["requestID"]: event for event in map(orjson.loads, records)}
    for operation, response, arn, fields in expected:
        event = events[response["ResponseMetadata"]["RequestId"]]
        assert event["eventName"] == operation and event["eventSource"] == "kms.amazonaws.com"
        assert event["requestParameters"] == fields, operation
        assert event["responseElements"] is None and event["readOnly"] is True, operation
        assert [r["ARN"] for r in event["resources"]] == [arn], operation
        assert "errorCode" not in event, operation
        if operation.startswith("GenerateDataKeyPair"):
            assert event["additionalEventData"]["keyMaterialId"] == wrapping["CurrentKeyMaterialId"], operation
        else:
            assert "keyMaterialId" not in event.get("additionalEventData", {}), operation

    trail = b"\n".join(records)
    for name, secret in secrets.items():
        assert len(secret) >= 32, name
        for form in _forms(secret):
            assert form not in trail, f"the {name} reached the audit trail"
