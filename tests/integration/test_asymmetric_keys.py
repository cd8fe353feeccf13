"""Asymmetric KMS keys through boto3 against a real node, checked offline with ``cryptography``.

Every signature regionkms makes is verified here with the public key from GetPublicKey; every
RSA-OAEP ciphertext made here with that public key decrypts in regionkms; ECDH and ML-KEM
secrets agree with the ones computed here. Then each refusal, per key family.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import nacl.bindings
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, padding, rsa, utils

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import ACCOUNT_ID, NodeFactory

NO_KEY_ACCESS = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "kms:ListAliases", "Resource": "*"}]}
"""An identity policy that allows no use of any key: access must come from a grant."""

SIGNING = {
    "RSA_2048": ["RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512", "RSASSA_PKCS1_V1_5_SHA_256",
                 "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"],
    "ECC_NIST_P256": ["ECDSA_SHA_256"], "ECC_NIST_P384": ["ECDSA_SHA_384"], "ECC_NIST_P521": ["ECDSA_SHA_512"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"], "ECC_NIST_EDWARDS25519": ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
    "ML_DSA_44": ["ML_DSA_SHAKE_256"], "ML_DSA_65": ["ML_DSA_SHAKE_256"], "ML_DSA_87": ["ML_DSA_SHAKE_256"],
}  # fmt: skip
HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512
}
MESSAGE = b"release 1.2.3 of the firmware"


def _hash(algorithm: str) -> hashes.HashAlgorithm:
    return HASHES[algorithm.rsplit("_", 1)[1]]()


def _digest(algorithm: str, message: bytes) -> bytes:
    h = hashes.Hash(_hash(algorithm))
    h.update(message)
    return h.finalize()


def offline_verify(public_der: bytes, algorithm: str, message_type: str, message: bytes, signature: bytes) -> bool:
    """Verify a KMS signature with ``cryptography`` (and libsodium for Ed25519ph) alone."""
    public = serialization.load_der_public_key(public_der)
    try:
        if isinstance(public, rsa.RSAPublicKey):
            h = _hash(algorithm)
            pad: padding.AsymmetricPadding = (
                padding.PSS(padding.MGF1(h), salt_length=h.digest_size) if "PSS" in algorithm else padding.PKCS1v15()
            )
            public.verify(signature, message, pad, utils.Prehashed(h) if message_type == "DIGEST" else h)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            h = _hash(algorithm)
            public.verify(signature, message, ec.ECDSA(utils.Prehashed(h) if message_type == "DIGEST" else h))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            if algorithm == "ED25519_PH_SHA_512":
                state = nacl.bindings.crypto_sign_ed25519ph_state()
                nacl.bindings.crypto_sign_ed25519ph_update(state, message)
                raw = public.public_bytes_raw()
                return bool(nacl.bindings.crypto_sign_ed25519ph_final_verify(state, signature, raw))
            public.verify(signature, message)
        elif isinstance(public, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey):
            if message_type == "EXTERNAL_MU":
                public.verify_mu(signature, message)
            else:
                public.verify(signature, message)
        else:
            raise AssertionError(f"unexpected public key {public!r}")
    except (InvalidSignature, nacl.exceptions.BadSignatureError):
        return False
    return True


def message_types(algorithm: str) -> list[tuple[str, bytes]]:
    """Each (MessageType, Message) the algorithm accepts, for MESSAGE."""
    if algorithm == "ED25519_SHA_512":
        return [("RAW", MESSAGE)]
    if algorithm == "ED25519_PH_SHA_512":
        return [("DIGEST", hashlib.sha512(MESSAGE).digest())]
    if algorithm == "ML_DSA_SHAKE_256":
        return [("RAW", MESSAGE)]  # EXTERNAL_MU: test_ml_dsa_external_mu
    return [("RAW", MESSAGE), ("DIGEST", _digest(algorithm, MESSAGE))]


def spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


async def public_key(kms: Any, key_id: str) -> Any:
    return serialization.load_der_public_key((await aws_call(kms.get_public_key, KeyId=key_id))["PublicKey"])


async def _key(kms: Any, spec: str, usage: str, **kwargs: Any) -> dict[str, Any]:
    return (await aws_call(kms.create_key, KeySpec=spec, KeyUsage=usage, **kwargs))["KeyMetadata"]  # type: ignore[no-any-return]


async def test_every_signing_key_spec_and_algorithm_signs_and_verifies_offline(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    for spec, algorithms in SIGNING.items():
        meta = await _key(kms, spec, "SIGN_VERIFY")
        assert meta["SigningAlgorithms"] == algorithms and meta["KeySpec"] == spec
        assert "EncryptionAlgorithms" not in meta and "MacAlgorithms" not in meta
        assert ("CustomerMasterKeySpec" in meta) == (not spec.startswith(("ML_", "ECC_NIST_EDWARDS")))
        public = await aws_call(kms.get_public_key, KeyId=meta["KeyId"])
        assert public["KeySpec"] == spec and public["KeyUsage"] == "SIGN_VERIFY"
        assert public["SigningAlgorithms"] == algorithms and public["KeyId"] == meta["Arn"]
        for algorithm in algorithms:
            for message_type, message in message_types(algorithm):
                signed = await aws_call(kms.sign, KeyId=meta["KeyId"], Message=message, MessageType=message_type,
                                        SigningAlgorithm=algorithm)  # fmt: skip
                assert signed["SigningAlgorithm"] == algorithm and signed["KeyId"] == meta["Arn"]
                signature = signed["Signature"]
                assert offline_verify(public["PublicKey"], algorithm, message_type, message, signature), algorithm
                ok = await aws_call(kms.verify, KeyId=meta["KeyId"], Message=message, MessageType=message_type,
                                    Signature=signature, SigningAlgorithm=algorithm)  # fmt: skip
                assert ok["SignatureValid"] is True
                changed = bytes([signature[-1] ^ 1])
                for bad_message, bad_signature in ((message, signature[:-1] + changed),
                                                   (bytes([message[0] ^ 1]) + message[1:], signature)):  # fmt: skip
                    err = await expect_error(kms.verify, KeyId=meta["KeyId"], Message=bad_message,
                                             MessageType=message_type, Signature=bad_signature,
                                             SigningAlgorithm=algorithm)  # fmt: skip
                    assert error_code(err) == "KMSInvalidSignatureException", (spec, algorithm)


async def test_ml_dsa_external_mu_signs_what_raw_signs(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    meta = await _key(kms, "ML_DSA_65", "SIGN_VERIFY")
    public_der = (await aws_call(kms.get_public_key, KeyId=meta["KeyId"]))["PublicKey"]
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, mldsa.MLDSA65PublicKey)
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(MESSAGE)
    mu = hasher.finalize()
    assert len(mu) == 64
    signature = (await aws_call(kms.sign, KeyId=meta["KeyId"], Message=mu, MessageType="EXTERNAL_MU",
                                SigningAlgorithm="ML_DSA_SHAKE_256"))["Signature"]  # fmt: skip
    public.verify(signature, MESSAGE)  # a signature over mu is a signature over the message
    ok = await aws_call(kms.verify, KeyId=meta["KeyId"], Message=MESSAGE, Signature=signature,
                        SigningAlgorithm="ML_DSA_SHAKE_256")  # fmt: skip
    assert ok["SignatureValid"] is True


async def test_message_type_and_length_rules(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    p256 = await _key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    ed = await _key(kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    ml = await _key(kms, "ML_DSA_44", "SIGN_VERIFY")
    cases = [
        (p256, "ECDSA_SHA_256", "DIGEST", b"x" * 31, "ValidationException"),
        (p256, "ECDSA_SHA_256", "DIGEST", b"x" * 33, "ValidationException"),
        (p256, "ECDSA_SHA_256", "EXTERNAL_MU", b"x" * 64, "ValidationException"),
        (p256, "ECDSA_SHA_384", "RAW", b"m", "InvalidKeyUsageException"),
        (p256, "RSASSA_PSS_SHA_256", "RAW", b"m", "InvalidKeyUsageException"),
        (p256, "SM2DSA", "RAW", b"m", "InvalidKeyUsageException"),
        (ed, "ED25519_SHA_512", "DIGEST", b"x" * 64, "ValidationException"),
        (ed, "ED25519_PH_SHA_512", "RAW", b"m", "ValidationException"),
        (ed, "ED25519_PH_SHA_512", "DIGEST", b"x" * 32, "ValidationException"),
        (ml, "ML_DSA_SHAKE_256", "DIGEST", b"x" * 64, "ValidationException"),
        (ml, "ML_DSA_SHAKE_256", "EXTERNAL_MU", b"x" * 63, "ValidationException"),
        (ml, "ECDSA_SHA_256", "RAW", b"m", "InvalidKeyUsageException"),
    ]
    for meta, algorithm, message_type, message, code in cases:
        for call, extra in ((kms.sign, {}), (kms.verify, {"Signature": b"s" * 64})):
            err = await expect_error(call, KeyId=meta["KeyId"], Message=message, MessageType=message_type,
                                     SigningAlgorithm=algorithm, **extra)  # fmt: skip
            assert error_code(err) == code, (meta["KeySpec"], algorithm, message_type, len(message))
    # RAW messages up to 4096 bytes (the model's limit)
    signed = await aws_call(kms.sign, KeyId=p256["KeyId"], Message=b"m" * 4096, SigningAlgorithm="ECDSA_SHA_256")
    assert signed["Signature"]


async def test_key_spec_and_usage_table(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    valid = {
        "RSA_2048": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"}, "ECC_NIST_P384": {"SIGN_VERIFY", "KEY_AGREEMENT"},
        "ECC_SECG_P256K1": {"SIGN_VERIFY"}, "ECC_NIST_EDWARDS25519": {"SIGN_VERIFY"}, "ML_DSA_44": {"SIGN_VERIFY"},
        "ML_KEM_768": {"ENCAPSULATE_DECAPSULATE"}, "HMAC_256": {"GENERATE_VERIFY_MAC"},
    }  # fmt: skip
    usages = ("ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT", "ENCAPSULATE_DECAPSULATE")
    for spec, usage in itertools.product(valid, usages):
        if usage in valid[spec]:
            continue
        err = await expect_error(kms.create_key, KeySpec=spec, KeyUsage=usage)
        assert error_code(err) == "ValidationException", (spec, usage)
    for spec in valid:  # KeyUsage is required for every spec but SYMMETRIC_DEFAULT
        err = await expect_error(kms.create_key, KeySpec=spec)
        assert error_code(err) == "ValidationException", spec
    legacy = (await aws_call(kms.create_key, CustomerMasterKeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"))
    meta = legacy["KeyMetadata"]
    assert meta["KeySpec"] == "ECC_NIST_P256" and meta["KeyAgreementAlgorithms"] == ["ECDH"]
    assert "SigningAlgorithms" not in meta
    ml_kem = await _key(kms, "ML_KEM_1024", "ENCAPSULATE_DECAPSULATE")
    assert ml_kem["EncapsulationAlgorithms"] == ["ML_KEM"] and "CustomerMasterKeySpec" not in ml_kem


async def test_rsa_encryption_round_trips_with_offline_oaep(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    meta = await _key(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    assert meta["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    public_der = (await aws_call(kms.get_public_key, KeyId=meta["KeyId"]))["PublicKey"]
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    for algorithm, h, limit in (("RSAES_OAEP_SHA_1", hashes.SHA1, 214), ("RSAES_OAEP_SHA_256", hashes.SHA256, 190)):
        plaintext = b"p" * limit
        offline = public.encrypt(plaintext, padding.OAEP(padding.MGF1(h()), h(), None))
        out = await aws_call(kms.decrypt, KeyId=meta["KeyId"], CiphertextBlob=offline, EncryptionAlgorithm=algorithm)
        assert out["Plaintext"] == plaintext and out["EncryptionAlgorithm"] == algorithm
        assert out["KeyId"] == meta["Arn"]
        enc = await aws_call(kms.encrypt, KeyId=meta["KeyId"], Plaintext=plaintext, EncryptionAlgorithm=algorithm)
        assert enc["EncryptionAlgorithm"] == algorithm and len(enc["CiphertextBlob"]) == 256
        back = await aws_call(kms.decrypt, KeyId=meta["Arn"], CiphertextBlob=enc["CiphertextBlob"],
                              EncryptionAlgorithm=algorithm)  # fmt: skip
        assert back["Plaintext"] == plaintext
        err = await expect_error(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"p" * (limit + 1),
                                 EncryptionAlgorithm=algorithm)  # fmt: skip
        assert error_code(err) == "ValidationException"
        other = "RSAES_OAEP_SHA_256" if algorithm == "RSAES_OAEP_SHA_1" else "RSAES_OAEP_SHA_1"
        err = await expect_error(kms.decrypt, KeyId=meta["KeyId"], CiphertextBlob=offline, EncryptionAlgorithm=other)
        assert error_code(err) == "InvalidCiphertextException"
        # Without KeyId the blob has no header to name its key.
        err = await expect_error(kms.decrypt, CiphertextBlob=offline, EncryptionAlgorithm=algorithm)
        assert error_code(err) == "InvalidCiphertextException"
    for kwargs, code in (({}, "InvalidKeyUsageException"), ({"EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
                         "InvalidKeyUsageException"), ({"EncryptionAlgorithm": "SM2PKE"}, "InvalidKeyUsageException"),
                         ({"EncryptionAlgorithm": "RSAES_OAEP_SHA_256", "EncryptionContext": {"a": "b"}},
                          "ValidationException")):  # fmt: skip
        err = await expect_error(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"p", **kwargs)
        assert error_code(err) == code, kwargs
    err = await expect_error(kms.decrypt, KeyId=meta["KeyId"], CiphertextBlob=b"\x00" * 256,
                             EncryptionAlgorithm="RSAES_OAEP_SHA_256")  # fmt: skip
    assert error_code(err) == "InvalidCiphertextException"
    # ReEncrypt from RSA to a symmetric key and back.
    symmetric = (await aws_call(kms.create_key))["KeyMetadata"]
    offline = public.encrypt(b"moving", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    moved = await aws_call(kms.re_encrypt, CiphertextBlob=offline, SourceKeyId=meta["KeyId"],
                           SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                           DestinationKeyId=symmetric["KeyId"])  # fmt: skip
    assert moved["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert moved["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert (await aws_call(kms.decrypt, CiphertextBlob=moved["CiphertextBlob"]))["Plaintext"] == b"moving"
    back = await aws_call(kms.re_encrypt, CiphertextBlob=moved["CiphertextBlob"], DestinationKeyId=meta["KeyId"],
                          DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_1")  # fmt: skip
    assert back["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1" and back["KeyId"] == meta["Arn"]
    out = await aws_call(kms.decrypt, KeyId=meta["KeyId"], CiphertextBlob=back["CiphertextBlob"],
                         EncryptionAlgorithm="RSAES_OAEP_SHA_1")  # fmt: skip
    assert out["Plaintext"] == b"moving"


async def test_ecdh_derives_the_secret_the_peer_derives(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    for spec, curve in (("ECC_NIST_P256", ec.SECP256R1()), ("ECC_NIST_P384", ec.SECP384R1()),
                        ("ECC_NIST_P521", ec.SECP521R1())):  # fmt: skip
        meta = await _key(kms, spec, "KEY_AGREEMENT")
        assert meta["KeyAgreementAlgorithms"] == ["ECDH"]
        kms_public = await public_key(kms, meta["KeyId"])
        assert isinstance(kms_public, ec.EllipticCurvePublicKey)
        peer = ec.generate_private_key(curve)
        peer_der = spki(peer.public_key())
        out = await aws_call(kms.derive_shared_secret, KeyId=meta["KeyId"], KeyAgreementAlgorithm="ECDH",
                             PublicKey=peer_der)  # fmt: skip
        assert out["SharedSecret"] == peer.exchange(ec.ECDH(), kms_public)
        assert out["KeyOrigin"] == "AWS_KMS" and out["KeyAgreementAlgorithm"] == "ECDH"
        err = await expect_error(kms.sign, KeyId=meta["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
        assert error_code(err) == "InvalidKeyUsageException"
    wrong_curve = spki(ec.generate_private_key(ec.SECP256K1()).public_key())
    for bad in (wrong_curve, b"not a key"):
        err = await expect_error(kms.derive_shared_secret, KeyId=meta["KeyId"], KeyAgreementAlgorithm="ECDH",
                                 PublicKey=bad)  # fmt: skip
        assert error_code(err) == "ValidationException"
    signer = await _key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    err = await expect_error(kms.derive_shared_secret, KeyId=signer["KeyId"], KeyAgreementAlgorithm="ECDH",
                             PublicKey=wrong_curve)  # fmt: skip
    assert error_code(err) == "InvalidKeyUsageException"


async def test_a_recipient_is_refused_by_every_operation_that_takes_one(nodes: NodeFactory) -> None:
    """No attestation document can be validated here: each otherwise valid request is refused
    (never answered in plaintext in place of CiphertextForRecipient)."""
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    symmetric = (await aws_call(kms.create_key))["KeyMetadata"]
    agree = await _key(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    blob = (await aws_call(kms.encrypt, KeyId=symmetric["KeyId"], Plaintext=b"for an enclave"))["CiphertextBlob"]
    recipient = {"AttestationDocument": b"not an attestation document", "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
    calls = [
        (kms.derive_shared_secret, {"KeyId": agree["KeyId"], "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer}),
        (kms.decrypt, {"CiphertextBlob": blob}),
        (kms.generate_data_key, {"KeyId": symmetric["KeyId"], "KeySpec": "AES_256"}),
        (kms.generate_data_key_pair, {"KeyId": symmetric["KeyId"], "KeyPairSpec": "ECC_NIST_P256"}),
        (kms.generate_random, {"NumberOfBytes": 32}),
    ]  # fmt: skip
    for call, kwargs in calls:
        assert await aws_call(call, **kwargs)  # valid without the Recipient
        err = await expect_error(call, **kwargs, Recipient=recipient)
        assert error_code(err) == "ValidationException", call
        assert "attestation" in err.response["Error"]["Message"], call


async def test_ml_kem_encapsulates_to_the_key_and_decapsulates(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    for spec, size in (("ML_KEM_768", 1088), ("ML_KEM_1024", 1568)):
        meta = await _key(kms, spec, "ENCAPSULATE_DECAPSULATE")
        out = await aws_call(kms.encapsulate, KeyId=meta["KeyId"], EncapsulationAlgorithm="ML_KEM")
        assert len(out["SharedSecret"]) == 32 and len(out["SharedSecretCiphertextBlob"]) == size
        back = await aws_call(kms.decapsulate, KeyId=meta["KeyId"], EncapsulationAlgorithm="ML_KEM",
                              SharedSecretCiphertextBlob=out["SharedSecretCiphertextBlob"])  # fmt: skip
        assert back["SharedSecret"] == out["SharedSecret"]
        public = await public_key(kms, meta["KeyId"])
        assert isinstance(public, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey)
        secret, ciphertext = public.encapsulate()  # offline, to the KMS key's public key
        back = await aws_call(kms.decapsulate, KeyId=meta["KeyId"], EncapsulationAlgorithm="ML_KEM",
                              SharedSecretCiphertextBlob=ciphertext)  # fmt: skip
        assert back["SharedSecret"] == secret
        err = await expect_error(kms.decapsulate, KeyId=meta["KeyId"], EncapsulationAlgorithm="ML_KEM",
                                 SharedSecretCiphertextBlob=ciphertext[:-1])  # fmt: skip
        assert error_code(err) == "InvalidCiphertextException"
    err = await expect_error(kms.encapsulate, KeyId=(await aws_call(kms.create_key))["KeyMetadata"]["KeyId"],
                             EncapsulationAlgorithm="ML_KEM")  # fmt: skip
    assert error_code(err) == "InvalidKeyUsageException"


@pytest.mark.parametrize("with_plaintext", [True, False])
async def test_generate_data_key_pair_for_every_spec(nodes: NodeFactory, with_plaintext: bool) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    wrapping = (await aws_call(kms.create_key))["KeyMetadata"]
    call = kms.generate_data_key_pair if with_plaintext else kms.generate_data_key_pair_without_plaintext
    specs = ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1",
             "ECC_NIST_EDWARDS25519", "ML_KEM_768", "ML_KEM_1024"]  # fmt: skip
    if with_plaintext:
        specs += ["RSA_3072", "RSA_4096"]
    for spec in specs:
        out = await aws_call(call, KeyId=wrapping["KeyId"], KeyPairSpec=spec, EncryptionContext={"purpose": spec})
        assert out["KeyPairSpec"] == spec and out["KeyId"] == wrapping["Arn"]
        assert ("PrivateKeyPlaintext" in out) == with_plaintext
        private_der = (await aws_call(kms.decrypt, CiphertextBlob=out["PrivateKeyCiphertextBlob"],
                                      EncryptionContext={"purpose": spec}))["Plaintext"]  # fmt: skip
        if with_plaintext:
            assert private_der == out["PrivateKeyPlaintext"]
        private = serialization.load_der_private_key(private_der, None)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        assert public == out["PublicKey"], spec
        err = await expect_error(kms.decrypt, CiphertextBlob=out["PrivateKeyCiphertextBlob"])
        assert error_code(err) == "InvalidCiphertextException"
    for spec in ("SM2", "ML_KEM_512"):
        err = await expect_error(call, KeyId=wrapping["KeyId"], KeyPairSpec=spec)
        assert error_code(err) == "UnsupportedOperationException"
    rsa_key = await _key(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    err = await expect_error(call, KeyId=rsa_key["KeyId"], KeyPairSpec="ECC_NIST_P256")
    assert error_code(err) == "InvalidKeyUsageException"
    err = await expect_error(call, KeyId=wrapping["KeyId"], KeyPairSpec="ECC_NIST_P256", DryRun=True)
    assert error_code(err) == "DryRunOperationException"


async def test_asymmetric_key_states_dry_run_and_public_key_rules(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    signer = await _key(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    rsa_key = await _key(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    agree = await _key(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    kem = await _key(kms, "ML_KEM_768", "ENCAPSULATE_DECAPSULATE")
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    calls = [
        (kms.sign, {"KeyId": signer["KeyId"], "Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"}),
        (kms.verify, {"KeyId": signer["KeyId"], "Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256",
                      "Signature": b"s"}),
        (kms.encrypt, {"KeyId": rsa_key["KeyId"], "Plaintext": b"p", "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
        (kms.derive_shared_secret, {"KeyId": agree["KeyId"], "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer}),
        (kms.encapsulate, {"KeyId": kem["KeyId"], "EncapsulationAlgorithm": "ML_KEM"}),
        (kms.decapsulate, {"KeyId": kem["KeyId"], "EncapsulationAlgorithm": "ML_KEM",
                           "SharedSecretCiphertextBlob": b"c" * 1088}),
    ]  # fmt: skip
    for call, kwargs in calls:
        assert error_code(await expect_error(call, **kwargs, DryRun=True)) == "DryRunOperationException", call
    err = await expect_error(kms.decrypt, KeyId=rsa_key["KeyId"], EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                             DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])  # fmt: skip
    assert error_code(err) == "DryRunOperationException"
    symmetric = (await aws_call(kms.create_key))["KeyMetadata"]
    err = await expect_error(kms.get_public_key, KeyId=symmetric["KeyId"])
    assert error_code(err) == "UnsupportedOperationException"
    for meta in (signer, rsa_key, agree, kem):
        await aws_call(kms.disable_key, KeyId=meta["KeyId"])
        assert (await aws_call(kms.get_public_key, KeyId=meta["KeyId"]))["PublicKey"]  # AWS answers while Disabled
    for call, kwargs in calls:
        assert error_code(await expect_error(call, **kwargs)) == "DisabledException", call
    for meta in (signer, rsa_key, agree, kem):
        await aws_call(kms.schedule_key_deletion, KeyId=meta["KeyId"], PendingWindowInDays=7)
    for call, kwargs in calls:
        assert error_code(await expect_error(call, **kwargs)) == "KMSInvalidStateException", call
    err = await expect_error(kms.get_public_key, KeyId=signer["KeyId"])
    assert error_code(err) == "KMSInvalidStateException"
    rsa_signer = (await _key(kms, "RSA_3072", "SIGN_VERIFY"))["KeyId"]
    for key_id in (rsa_signer, (await _key(kms, "ECC_NIST_P256", "KEY_AGREEMENT"))["KeyId"]):
        for call in (kms.enable_key_rotation, kms.disable_key_rotation, kms.rotate_key_on_demand):
            err = await expect_error(call, KeyId=key_id)
            assert error_code(err) == "UnsupportedOperationException"
        # The status reads as disabled, as AWS answers it (Terraform reads it for every key).
        status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
        assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status


async def test_grants_for_asymmetric_operations(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    signer = await _key(admin, "ECC_NIST_P384", "SIGN_VERIFY")
    user = await nodes.identity(node, user="signer", policy=NO_KEY_ACCESS)
    kms = node.client(user)
    sign_kwargs = {"KeyId": signer["Arn"], "Message": b"m", "SigningAlgorithm": "ECDSA_SHA_384"}
    assert error_code(await expect_error(kms.sign, **sign_kwargs)) == "AccessDeniedException"
    grant = await aws_call(admin.create_grant, KeyId=signer["KeyId"], GranteePrincipal=user.arn,
                           Operations=["Sign", "GetPublicKey"])  # fmt: skip
    token = [grant["GrantToken"]]
    signature = (await aws_call(kms.sign, **sign_kwargs, GrantTokens=token))["Signature"]
    public = (await aws_call(kms.get_public_key, KeyId=signer["Arn"], GrantTokens=token))["PublicKey"]
    assert offline_verify(public, "ECDSA_SHA_384", "RAW", b"m", signature)
    err = await expect_error(kms.verify, **sign_kwargs, Signature=signature, GrantTokens=token)
    assert error_code(err) == "AccessDeniedException"
    for operations in (["Encrypt"], ["GenerateMac"], ["DeriveSharedSecret"]):
        err = await expect_error(admin.create_grant, KeyId=signer["KeyId"], GranteePrincipal=user.arn,
                                 Operations=operations)  # fmt: skip
        assert error_code(err) == "ValidationException", operations


async def test_key_policies_test_the_signing_and_key_agreement_condition_keys(nodes: NodeFactory) -> None:
    """kms:SigningAlgorithm and kms:MessageType (Sign, Verify; RAW when the request names none) and
    kms:KeyAgreementAlgorithm (DeriveSharedSecret) reach the key policy with the request's values."""
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    root = f"arn:aws:iam::{ACCOUNT_ID}:root"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": ["kms:Sign", "kms:Verify"], "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:SigningAlgorithm": "RSASSA_PSS_SHA_256"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Sign", "Resource": "*",
         "Condition": {"StringEquals": {"kms:MessageType": "RAW"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:DeriveSharedSecret", "Resource": "*",
         "Condition": {"StringEquals": {"kms:KeyAgreementAlgorithm": "ECDH"}}},
    ]}  # fmt: skip
    signer = await _key(kms, "RSA_2048", "SIGN_VERIFY", Policy=json.dumps(policy))
    agree = await _key(kms, "ECC_NIST_P256", "KEY_AGREEMENT", Policy=json.dumps(policy))
    digest = hashlib.sha256(MESSAGE).digest()
    signed = await aws_call(kms.sign, KeyId=signer["KeyId"], Message=digest, MessageType="DIGEST",
                            SigningAlgorithm="RSASSA_PSS_SHA_256")  # fmt: skip
    refused = [
        (kms.sign, {"Message": MESSAGE, "SigningAlgorithm": "RSASSA_PSS_SHA_256"}),  # RAW by default
        (kms.sign, {"Message": digest, "MessageType": "DIGEST", "SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256"}),
        (kms.verify, {"Message": digest, "MessageType": "DIGEST", "SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256",
                      "Signature": signed["Signature"]}),
    ]  # fmt: skip
    for call, kwargs in refused:
        assert error_code(await expect_error(call, KeyId=signer["KeyId"], **kwargs)) == "AccessDeniedException", kwargs
    ok = await aws_call(kms.verify, KeyId=signer["KeyId"], Message=MESSAGE, Signature=signed["Signature"],
                        SigningAlgorithm="RSASSA_PSS_SHA_256")  # fmt: skip
    assert ok["SignatureValid"] is True  # Verify may use RAW (only Sign is denied it): the same digest is signed
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    err = await expect_error(kms.derive_shared_secret, KeyId=agree["KeyId"], KeyAgreementAlgorithm="ECDH",
                             PublicKey=peer)  # fmt: skip
    assert error_code(err) == "AccessDeniedException"
