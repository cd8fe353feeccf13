"""Imported asymmetric and HMAC key material through boto3, checked against published vectors and offline keys.

Importing a known private key is what lets the other direction be tested: signatures made here,
offline, verify in regionkms; regionkms's signatures equal the deterministic ones of NIST CAVP
(RSA PKCS #1 v1.5) and RFC 8032 (Ed25519) vectors; its RSA-OAEP ciphertexts decrypt here with
the private key; its HMACs equal Python's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cavp import records, vector_path
from tests.support.cluster import NodeFactory
from tests.support.import_material import wrap_for_import

DOES_NOT_EXPIRE = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}


def _spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


def _pkcs8(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def _external(kms: Any, spec: str, usage: str) -> dict[str, Any]:
    out = await aws_call(kms.create_key, KeySpec=spec, KeyUsage=usage, Origin="EXTERNAL")
    meta: dict[str, Any] = out["KeyMetadata"]
    assert meta["KeyState"] == "PendingImport" and meta["Origin"] == "EXTERNAL"
    return meta


async def _import(
    kms: Any, key_id: str, material: bytes, *, algorithm: str = "RSA_AES_KEY_WRAP_SHA_256", spec: str = "RSA_3072",
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    params = await aws_call(kms.get_parameters_for_import, KeyId=key_id, WrappingAlgorithm=algorithm,
                            WrappingKeySpec=spec)  # fmt: skip
    result: dict[str, Any] = await aws_call(
        kms.import_key_material, KeyId=key_id, ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap_for_import(params["PublicKey"], algorithm, material), **(extra or DOES_NOT_EXPIRE),
    )  # fmt: skip
    return result


async def _import_error(kms: Any, key_id: str, material: bytes, **kwargs: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await _import(kms, key_id, material, **kwargs)
    return info.value


def _rsa_vector_key(record: dict[str, str]) -> rsa.RSAPrivateKey:
    p, q, d, e = (int(record[k], 16) for k in ("p", "q", "d", "e"))
    public = rsa.RSAPublicNumbers(e, p * q)
    numbers = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                                    public)  # fmt: skip
    return numbers.private_key()


async def test_imported_rsa_key_signs_the_nist_vectors_exactly_and_verifies_them(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    vectors = [r for s, r in records(vector_path("asymmetric", "RSA", "FIPS_186-2", "SigVer15_186-3.rsp"))
               if s == "mod = 2048" and r.get("SHAAlg") in ("SHA256", "SHA384", "SHA512")]  # fmt: skip
    first = next(r for r in vectors if r["Result"].startswith("P"))
    private = _rsa_vector_key(first)
    meta = await _external(kms, "RSA_2048", "SIGN_VERIFY")
    # RSAES_OAEP_* cannot carry an RSA private key (AWS: "you must use an RSA_AES wrapping algorithm").
    err = await expect_error(kms.get_parameters_for_import, KeyId=meta["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256",
                             WrappingKeySpec="RSA_4096")  # fmt: skip
    assert error_code(err) == "ValidationException"
    imported = await _import(kms, meta["KeyId"], _pkcs8(private))
    assert len(imported["KeyMaterialId"]) == 64
    assert (await aws_call(kms.describe_key, KeyId=meta["KeyId"]))["KeyMetadata"]["KeyState"] == "Enabled"
    assert (await aws_call(kms.get_public_key, KeyId=meta["KeyId"]))["PublicKey"] == _spki(private.public_key())
    checked = 0
    modulus = private.public_key().public_numbers().n
    for record in vectors:
        if int(record["n"], 16) != modulus or int(record["e"], 16) != private.public_key().public_numbers().e:
            continue  # another key, or a vector whose listed e was changed
        algorithm = f"RSASSA_PKCS1_V1_5_SHA_{record['SHAAlg'][3:]}"
        message, signature = bytes.fromhex(record["Msg"]), bytes.fromhex(record["S"])
        if record["Result"].startswith("P"):
            signed = await aws_call(kms.sign, KeyId=meta["KeyId"], Message=message, SigningAlgorithm=algorithm)
            assert signed["Signature"] == signature  # PKCS #1 v1.5 is deterministic: the vector's own bytes
            ok = await aws_call(kms.verify, KeyId=meta["KeyId"], Message=message, Signature=signature,
                                SigningAlgorithm=algorithm)  # fmt: skip
            assert ok["SignatureValid"] is True
            checked += 1
        else:
            err = await expect_error(kms.verify, KeyId=meta["KeyId"], Message=message, Signature=signature,
                                     SigningAlgorithm=algorithm)  # fmt: skip
            assert error_code(err) == "KMSInvalidSignatureException", record["Result"]
            checked += 1
    assert checked >= 6
    # No rotation material for asymmetric keys; the same material re-imports.
    err = await _import_error(kms, meta["KeyId"], _pkcs8(rsa.generate_private_key(65537, 2048)),
                              ImportType="NEW_KEY_MATERIAL", **DOES_NOT_EXPIRE)  # fmt: skip
    assert error_code(err) == "UnsupportedOperationException"
    again = await _import(kms, meta["KeyId"], _pkcs8(private))
    assert again["KeyMaterialId"] == imported["KeyMaterialId"]
    other = await _external(kms, "RSA_2048", "SIGN_VERIFY")
    wrong = (_pkcs8(rsa.generate_private_key(65537, 3072)), _pkcs8(ec.generate_private_key(ec.SECP256R1())),
             b"\x30\x00", os.urandom(32))  # fmt: skip
    for material in wrong:
        err = await _import_error(kms, other["KeyId"], material)
        assert error_code(err) == "IncorrectKeyMaterialException"


async def test_imported_rsa_encryption_key_ciphertexts_decrypt_offline(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    private = rsa.generate_private_key(65537, 3072)
    meta = await _external(kms, "RSA_3072", "ENCRYPT_DECRYPT")
    await _import(kms, meta["KeyId"], _pkcs8(private), spec="RSA_4096", algorithm="RSA_AES_KEY_WRAP_SHA_1")
    for algorithm, h in (("RSAES_OAEP_SHA_1", hashes.SHA1), ("RSAES_OAEP_SHA_256", hashes.SHA256)):
        blob = (await aws_call(kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"for your eyes",
                               EncryptionAlgorithm=algorithm))["CiphertextBlob"]  # fmt: skip
        assert private.decrypt(blob, padding.OAEP(padding.MGF1(h()), h(), None)) == b"for your eyes"


async def test_imported_ecc_and_ed25519_keys_sign_as_the_vectors_and_verify_offline_signatures(
    nodes: NodeFactory,
) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    # RFC 8032 / djb's Ed25519 vectors: deterministic, so regionkms's signature is the vector's.
    line = vector_path("asymmetric", "Ed25519", "sign.input").read_text().splitlines()[3]
    secret, _public, message_hex, signed, _ = line.split(":")
    seed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret)[:32])
    ed = await _external(kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    # Before its material arrives the key is PendingImport: no signature and no public key yet.
    sign_args: dict[str, Any] = {"Message": b"m", "SigningAlgorithm": "ED25519_SHA_512"}
    pending: list[tuple[Any, dict[str, Any]]] = [(kms.sign, sign_args), (kms.get_public_key, {})]
    for call, kwargs in pending:
        assert error_code(await expect_error(call, KeyId=ed["KeyId"], **kwargs)) == "KMSInvalidStateException", call
    await _import(kms, ed["KeyId"], _pkcs8(seed), algorithm="RSAES_OAEP_SHA_256", spec="RSA_2048")
    out = await aws_call(kms.sign, KeyId=ed["KeyId"], Message=bytes.fromhex(message_hex),
                         SigningAlgorithm="ED25519_SHA_512")  # fmt: skip
    assert out["Signature"] == bytes.fromhex(signed)[:64]
    # secp256k1 (published SigGen vectors, with their private keys): the vector's signature verifies here.
    k1_vectors = records(vector_path("asymmetric", "ECDSA", "SECP256K1", "SigGen.txt"))
    record = next(r for s, r in k1_vectors if s == "K-256,SHA-256")
    k1 = ec.derive_private_key(int(record["d"], 16), ec.SECP256K1())
    k1_key = await _external(kms, "ECC_SECG_P256K1", "SIGN_VERIFY")
    await _import(kms, k1_key["KeyId"], _pkcs8(k1))
    vector_signature = encode_dss_signature(int(record["R"], 16), int(record["S"], 16))
    ok = await aws_call(kms.verify, KeyId=k1_key["KeyId"], Message=bytes.fromhex(record["Msg"]),
                        Signature=vector_signature, SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip
    assert ok["SignatureValid"] is True
    # Every NIST curve: an offline signature over the same digest verifies in regionkms, and back.
    for spec, curve, h, algorithm in (("ECC_NIST_P256", ec.SECP256R1(), hashes.SHA256, "ECDSA_SHA_256"),
                                      ("ECC_NIST_P384", ec.SECP384R1(), hashes.SHA384, "ECDSA_SHA_384"),
                                      ("ECC_NIST_P521", ec.SECP521R1(), hashes.SHA512, "ECDSA_SHA_512")):  # fmt: skip
        private = ec.generate_private_key(curve)
        meta = await _external(kms, spec, "SIGN_VERIFY")
        if spec == "ECC_NIST_P521":  # P-521 material does not fit RSAES_OAEP under an RSA_2048 wrapping key
            err = await expect_error(kms.get_parameters_for_import, KeyId=meta["KeyId"],
                                     WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048")  # fmt: skip
            assert error_code(err) == "ValidationException"
        await _import(kms, meta["KeyId"], _pkcs8(private))
        digest = hashlib.new(h.name, b"artifact").digest()
        offline = private.sign(b"artifact", ec.ECDSA(h()))
        for message_type, message in (("RAW", b"artifact"), ("DIGEST", digest)):
            ok = await aws_call(kms.verify, KeyId=meta["KeyId"], Message=message, MessageType=message_type,
                                Signature=offline, SigningAlgorithm=algorithm)  # fmt: skip
            assert ok["SignatureValid"] is True
        made = (await aws_call(kms.sign, KeyId=meta["KeyId"], Message=digest, MessageType="DIGEST",
                               SigningAlgorithm=algorithm))["Signature"]  # fmt: skip
        private.public_key().verify(made, b"artifact", ec.ECDSA(h()))


async def test_imported_ml_dsa_and_ml_kem_keys(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    signer = mldsa.MLDSA65PrivateKey.generate()
    meta = await _external(kms, "ML_DSA_65", "SIGN_VERIFY")
    await _import(kms, meta["KeyId"], _pkcs8(signer))
    assert (await aws_call(kms.get_public_key, KeyId=meta["KeyId"]))["PublicKey"] == _spki(signer.public_key())
    ok = await aws_call(kms.verify, KeyId=meta["KeyId"], Message=b"pq", Signature=signer.sign(b"pq"),
                        SigningAlgorithm="ML_DSA_SHAKE_256")  # fmt: skip
    assert ok["SignatureValid"] is True
    kem = mlkem.MLKEM1024PrivateKey.generate()
    kem_key = await _external(kms, "ML_KEM_1024", "ENCAPSULATE_DECAPSULATE")
    await _import(kms, kem_key["KeyId"], _pkcs8(kem))
    out = await aws_call(kms.encapsulate, KeyId=kem_key["KeyId"], EncapsulationAlgorithm="ML_KEM")
    assert kem.decapsulate(out["SharedSecretCiphertextBlob"]) == out["SharedSecret"]  # offline, with the private key


async def test_imported_hmac_key_macs_as_python_does(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    for spec, algorithm, digest, low, high in (("HMAC_224", "HMAC_SHA_224", hashlib.sha224, 28, 64),
                                               ("HMAC_512", "HMAC_SHA_512", hashlib.sha512, 64, 128)):  # fmt: skip
        meta = await _external(kms, spec, "GENERATE_VERIFY_MAC")
        for size in (low - 1, high + 1):
            err = await _import_error(kms, meta["KeyId"], os.urandom(size), algorithm="RSAES_OAEP_SHA_256",
                                      spec="RSA_4096")  # fmt: skip
            assert error_code(err) == "IncorrectKeyMaterialException", size
        secret = os.urandom(high)
        await _import(kms, meta["KeyId"], secret, algorithm="RSAES_OAEP_SHA_256", spec="RSA_4096")
        mac = (await aws_call(kms.generate_mac, KeyId=meta["KeyId"], Message=b"jwt.header.payload",
                              MacAlgorithm=algorithm))["Mac"]  # fmt: skip
        assert mac == hmac.new(secret, b"jwt.header.payload", digest).digest()
        # Delete the material: PendingImport, no MAC; re-import: the same MACs again.
        await aws_call(kms.delete_imported_key_material, KeyId=meta["KeyId"])
        err = await expect_error(kms.generate_mac, KeyId=meta["KeyId"], Message=b"m", MacAlgorithm=algorithm)
        assert error_code(err) == "KMSInvalidStateException"
        await _import(kms, meta["KeyId"], secret, algorithm="RSA_AES_KEY_WRAP_SHA_256")
        ok = await aws_call(kms.verify_mac, KeyId=meta["KeyId"], Message=b"jwt.header.payload", Mac=mac,
                            MacAlgorithm=algorithm)  # fmt: skip
        assert ok["MacValid"] is True
