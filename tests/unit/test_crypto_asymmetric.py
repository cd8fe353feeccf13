"""crypto.asymmetric, crypto.mac, crypto.keymaterial: published vectors, formats, and misuse-resistance.

The verify side runs over NIST CAVP vectors (RSA PKCS #1 v1.5 and PSS SigVer, ECDSA SigVer on the
NIST curves, secp256k1 SigGen) and the signing side over deterministic vectors (RFC 8032 Ed25519 and
Ed25519ph), all from published sources: the ``cryptography-vectors`` package and RFC 8032.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from regiond.crypto import asymmetric, keymaterial, mac, wrap
from regiond.domain.key import EncryptionAlgorithm, KeySpec, MacAlgorithm, SigningAlgorithm
from regiond.domain.signing import MessageType, SigningInput
from tests.support.cavp import records, vector_path

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
_A = SigningAlgorithm


def _pkcs8(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> wrap.SecretMaterial:
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return wrap.SecretMaterial(der)


def test_ed25519ph_signs_the_rfc8032_vector() -> None:
    vector = json.loads((VECTORS / "ed25519ph_rfc8032.json").read_text())
    seed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["seed"]))
    key = asymmetric.PrivateKey(KeySpec.ECC_NIST_EDWARDS25519, _pkcs8(seed))
    request = SigningInput(_A.ED25519_PH_SHA_512, MessageType.DIGEST, bytes.fromhex(vector["message"]))
    assert key.sign(request) == bytes.fromhex(vector["signature"])
    assert key.verify(request, bytes.fromhex(vector["signature"]))
    assert not key.verify(request, bytes(64))
    assert not key.verify(request._replace(message=b"abd"), bytes.fromhex(vector["signature"]))
    spki = key.public_key_der()
    assert spki.endswith(bytes.fromhex(vector["public_key"]))


def test_ed25519_signs_the_published_vectors() -> None:
    lines = vector_path("asymmetric", "Ed25519", "sign.input").read_text().splitlines()
    for line in lines[:64]:
        secret, public, message, signed, _ = line.split(":")
        seed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret)[:32])
        key = asymmetric.PrivateKey(KeySpec.ECC_NIST_EDWARDS25519, _pkcs8(seed))
        request = SigningInput(_A.ED25519_SHA_512, MessageType.RAW, bytes.fromhex(message))
        signature = bytes.fromhex(signed)[:64]
        assert key.sign(request) == signature
        assert key.verify(request, signature)
        assert key.public_key_der().endswith(bytes.fromhex(public))


_RSA_HASH = {"SHA256": "256", "SHA384": "384", "SHA512": "512"}


def test_rsa_pkcs1_verify_follows_the_nist_sigver_vectors() -> None:
    # (The CAVP PSS vectors use a 10-byte salt; AWS's RSASSA_PSS_* salt is as long as the hash, so
    # PSS is checked by the offline round trips of tests/integration/test_asymmetric_keys.py.)
    checked = 0
    for section, record in records(vector_path("asymmetric", "RSA", "FIPS_186-2", "SigVer15_186-3.rsp")):
        bits = int(section.split("=")[1])
        suffix = _RSA_HASH.get(record.get("SHAAlg", ""))
        if bits not in (2048, 3072) or suffix is None:
            continue
        algorithm = SigningAlgorithm(f"RSASSA_PKCS1_V1_5_SHA_{suffix}")
        public = rsa.RSAPublicNumbers(int(record["e"], 16), int(record["n"], 16)).public_key()
        request = SigningInput(algorithm, MessageType.RAW, bytes.fromhex(record["Msg"]))
        valid = asymmetric.verify_with_public_key(public, request, bytes.fromhex(record["S"]))
        assert valid == record["Result"].startswith("P"), (section, record["Result"])
        checked += 1
    assert checked >= 24


_CURVES = {
    "P-256": (ec.SECP256R1(), _A.ECDSA_SHA_256, "SHA-256"),
    "P-384": (ec.SECP384R1(), _A.ECDSA_SHA_384, "SHA-384"),
    "P-521": (ec.SECP521R1(), _A.ECDSA_SHA_512, "SHA-512"),
}


def test_ecdsa_verify_follows_the_nist_sigver_vectors() -> None:
    checked = {name: 0 for name in _CURVES}
    for section, record in records(vector_path("asymmetric", "ECDSA", "FIPS_186-3", "SigVer.rsp")):
        curve_name, _, hash_name = section.partition(",")
        if curve_name not in _CURVES or _CURVES[curve_name][2] != hash_name:
            continue
        curve, algorithm, _ = _CURVES[curve_name]
        public = ec.EllipticCurvePublicNumbers(int(record["Qx"], 16), int(record["Qy"], 16), curve).public_key()
        signature = encode_dss_signature(int(record["R"], 16), int(record["S"], 16))
        request = SigningInput(algorithm, MessageType.RAW, bytes.fromhex(record["Msg"]))
        assert asymmetric.verify_with_public_key(public, request, signature) == record["Result"].startswith("P")
        digest = hashlib.new(hash_name.replace("-", "").lower(), request.message).digest()
        prehashed = request._replace(message_type=MessageType.DIGEST, message=digest)
        assert asymmetric.verify_with_public_key(public, prehashed, signature) == record["Result"].startswith("P")
        checked[curve_name] += 1
    assert all(n == 15 for n in checked.values()), checked


def test_secp256k1_verify_follows_the_published_vectors() -> None:
    checked = 0
    for section, record in records(vector_path("asymmetric", "ECDSA", "SECP256K1", "SigGen.txt")):
        if section != "K-256,SHA-256":
            continue
        point = ec.EllipticCurvePublicNumbers(int(record["Qx"], 16), int(record["Qy"], 16), ec.SECP256K1())
        public = point.public_key()
        signature = encode_dss_signature(int(record["R"], 16), int(record["S"], 16))
        request = SigningInput(_A.ECDSA_SHA_256, MessageType.RAW, bytes.fromhex(record["Msg"]))
        assert asymmetric.verify_with_public_key(public, request, signature)
        changed = request._replace(message=request.message + b"x")
        assert not asymmetric.verify_with_public_key(public, changed, signature)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    "spec",
    [KeySpec.RSA_2048, KeySpec.ECC_NIST_P256, KeySpec.ECC_SECG_P256K1, KeySpec.ECC_NIST_EDWARDS25519,
     KeySpec.ML_DSA_44, KeySpec.ML_KEM_768],
)  # fmt: skip
def test_generated_material_is_canonical_pkcs8_of_its_spec(spec: KeySpec) -> None:
    material = keymaterial.generate(spec)
    assert asymmetric.check_material(spec, material).material() == material.material()
    other = KeySpec.ECC_NIST_P384 if spec is not KeySpec.ECC_NIST_P384 else KeySpec.ECC_NIST_P256
    with pytest.raises(asymmetric.MaterialError):
        asymmetric.check_material(other, material)
    with pytest.raises(asymmetric.MaterialError):
        asymmetric.check_material(spec, wrap.SecretMaterial(b"\x30\x03\x02\x01\x00"))


def test_rsa_material_of_the_wrong_size_is_refused() -> None:
    material = _pkcs8(rsa.generate_private_key(65537, 2048))
    with pytest.raises(asymmetric.MaterialError, match="2048 bits"):
        asymmetric.check_material(KeySpec.RSA_3072, material)


def test_oaep_limits_are_the_api_references() -> None:
    specs = (KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096)
    algorithms = (EncryptionAlgorithm.RSAES_OAEP_SHA_1, EncryptionAlgorithm.RSAES_OAEP_SHA_256)
    limits = {(s, a): asymmetric.max_plaintext_bytes(s, a) for s in specs for a in algorithms}
    sha1, sha256 = algorithms
    assert limits == {  # AWS's per-key-size limits: k - 2*hLen - 2 bytes (RFC 8017 section 7.1.1)
        (KeySpec.RSA_2048, sha1): 214, (KeySpec.RSA_2048, sha256): 190,
        (KeySpec.RSA_3072, sha1): 342, (KeySpec.RSA_3072, sha256): 318,
        (KeySpec.RSA_4096, sha1): 470, (KeySpec.RSA_4096, sha256): 446,
    }  # fmt: skip


def test_rsa_decrypt_has_one_failure_for_every_cause() -> None:
    key = asymmetric.PrivateKey(KeySpec.RSA_2048, keymaterial.generate(KeySpec.RSA_2048))
    blob = key.encrypt(EncryptionAlgorithm.RSAES_OAEP_SHA_256, b"secret")
    assert key.decrypt(EncryptionAlgorithm.RSAES_OAEP_SHA_256, blob) == b"secret"
    sha1, sha256 = EncryptionAlgorithm.RSAES_OAEP_SHA_1, EncryptionAlgorithm.RSAES_OAEP_SHA_256
    for bad, algorithm in ((blob, sha1), (blob[:-1], sha256), (bytes([blob[0] ^ 1]) + blob[1:], sha256)):
        with pytest.raises(asymmetric.DecryptionError):
            key.decrypt(algorithm, bad)


def test_private_keys_and_mac_keys_are_redacted_and_refuse_pickling() -> None:
    material = keymaterial.generate(KeySpec.ECC_NIST_P256)
    for holder in (material, keymaterial.handle(KeySpec.ECC_NIST_P256, material),
                   keymaterial.handle(KeySpec.HMAC_256, mac.generate(KeySpec.HMAC_256))):  # fmt: skip
        assert "redacted" in repr(holder) and "redacted" in str(holder)
        with pytest.raises(TypeError):
            pickle.dumps(holder)
    assert material.material().hex() not in repr(material)


def test_hmac_keys_follow_rfc4231_and_the_import_lengths() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" (a 4-byte key: lengths aside)
    key = mac.MacKey(MacAlgorithm.HMAC_SHA_256, wrap.SecretMaterial(b"Jefe"))
    expected = hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).digest()
    assert key.generate(b"what do ya want for nothing?") == expected
    assert expected.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert key.verify(b"what do ya want for nothing?", expected)
    assert not key.verify(b"what do ya want for nothing?", expected[:-1])
    assert not key.verify(b"what do ya want for nothing!", expected)
    for spec, size in mac.KEY_BYTES.items():
        assert len(mac.generate(spec).material()) == size
        low, high = mac.IMPORT_BYTES[spec]
        for ok in (low, high):
            mac.check_material(spec, wrap.SecretMaterial(b"k" * ok))
        for bad in (low - 1, high + 1):
            with pytest.raises(mac.MaterialError):
                mac.check_material(spec, wrap.SecretMaterial(b"k" * bad))


def test_ecdh_refuses_a_peer_on_another_curve_or_not_a_key() -> None:
    key = asymmetric.PrivateKey(KeySpec.ECC_NIST_P256, keymaterial.generate(KeySpec.ECC_NIST_P256))
    other = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    for bad in (other, b"junk", b""):
        with pytest.raises(asymmetric.PeerKeyError):
            key.derive_shared_secret(bad)


def test_ml_kem_decapsulate_refuses_a_ciphertext_of_the_wrong_length() -> None:
    key = asymmetric.PrivateKey(KeySpec.ML_KEM_768, keymaterial.generate(KeySpec.ML_KEM_768))
    secret, ciphertext = key.encapsulate()
    assert key.decapsulate(ciphertext) == secret
    altered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    assert key.decapsulate(altered) != secret  # implicit rejection: a pseudo-random secret, no error
    with pytest.raises(asymmetric.DecryptionError):
        key.decapsulate(ciphertext[:-1])
