"""Published test vectors on the verify side, through boto3 against a real node, one test per key family.

Every vector's private key (or HMAC key) is imported into an EXTERNAL key as AWS allows
(GetParametersForImport, RSA_AES_KEY_WRAP_SHA_256 under an RSA_2048 wrapping key, ImportKeyMaterial),
then regionkms must accept the vector's valid signatures, MACs and ciphertexts and refuse the invalid
ones with AWS's code. The vectors come from the ``cryptography-vectors`` package (a test dependency):
NIST CAVP RSA SigVer (PKCS #1 v1.5 and PSS) and ECDSA SigGen, the secp256k1 SigGen set, the Ed25519
set of RFC 8032's authors, the ML-DSA and ML-KEM known-answer tests, RSA Laboratories' PKCS #1 OAEP
examples and pyca's SHA-256 OAEP set built from them, and RFC 4231's HMAC cases.

The runtime stays small: from each file a fixed sample (``_sample``: evenly spaced records, the
same on every run), not all of it. Invalid inputs are the files' own failing vectors where the file
has them (RSA SigVer), else one byte of a valid one changed, or a valid one under another key.

Wycheproof's vectors are not among them: no package on the index ships them (``cryptography-vectors``
does not; pyca's own suite reads them from a checkout of the Wycheproof repository).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import botocore.exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cavp import pkcs1_fields, records, vector_path
from tests.support.cluster import NodeFactory
from tests.support.import_material import wrap_for_import

T = TypeVar("T")
WRAP = "RSA_AES_KEY_WRAP_SHA_256"  # the wrapping algorithm AWS documents for private keys; any material size


def _sample(items: Sequence[T], n: int) -> list[T]:
    """``n`` evenly spaced items, the first included: deterministic, spread over the whole file."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _flip(data: bytes, index: int = -1) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def _pkcs8(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


async def _kms(nodes: NodeFactory) -> Any:
    node = await nodes.start()
    return node.client(await nodes.identity(node))


async def _imported(kms: Any, spec: str, usage: str, material: bytes) -> str:
    """An EXTERNAL key of ``spec`` holding ``material``, Enabled; its ARN."""
    meta = (await aws_call(kms.create_key, KeySpec=spec, KeyUsage=usage, Origin="EXTERNAL"))["KeyMetadata"]
    params = await aws_call(kms.get_parameters_for_import, KeyId=meta["KeyId"], WrappingAlgorithm=WRAP,
                            WrappingKeySpec="RSA_2048")  # fmt: skip
    await aws_call(kms.import_key_material, KeyId=meta["KeyId"], ImportToken=params["ImportToken"],
                   EncryptedKeyMaterial=wrap_for_import(params["PublicKey"], WRAP, material),
                   ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")  # fmt: skip
    described = (await aws_call(kms.describe_key, KeyId=meta["KeyId"]))["KeyMetadata"]
    assert described["KeyState"] == "Enabled", described
    return str(meta["Arn"])


async def _valid(
    kms: Any, key: str, message: bytes, signature: bytes, algorithm: str, message_type: str = "RAW"
) -> bool:
    """True if Verify accepts; False if it answers KMSInvalidSignatureException (any other error fails)."""
    kwargs = {"KeyId": key, "Message": message, "MessageType": message_type, "Signature": signature,
              "SigningAlgorithm": algorithm}  # fmt: skip
    try:
        out = await aws_call(kms.verify, **kwargs)
    except botocore.exceptions.ClientError as exc:
        assert error_code(exc) == "KMSInvalidSignatureException", (algorithm, exc)
        return False
    assert out["SignatureValid"] is True and out["SigningAlgorithm"] == algorithm and out["KeyId"] == key
    return True


def _rsa_key(p: int, q: int, d: int, e: int) -> rsa.RSAPrivateKey:
    public = rsa.RSAPublicNumbers(e, p * q)
    numbers = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                                    public)  # fmt: skip
    return numbers.private_key()


_SHA = {"SHA256": "256", "SHA384": "384", "SHA512": "512"}


def _sigver_keys(file: str, sizes: tuple[int, ...]) -> Iterator[tuple[int, rsa.RSAPrivateKey, list[dict[str, str]]]]:
    """For each modulus size, the first key of the CAVP SigVer file and every record made under it
    with a hash AWS offers (SHA-256/384/512)."""
    by_size: dict[int, list[dict[str, str]]] = {}
    for section, record in records(vector_path("asymmetric", "RSA", "FIPS_186-2", file)):
        bits = int(section.split("=")[1])
        if bits in sizes and record.get("SHAAlg") in _SHA:
            by_size.setdefault(bits, []).append(record)
    for bits in sizes:
        first = next(r for r in by_size[bits] if r["Result"].startswith("P"))
        key = _rsa_key(*(int(first[k], 16) for k in ("p", "q", "d", "e")))
        numbers = key.public_key().public_numbers()
        mine = [r for r in by_size[bits] if int(r["n"], 16) == numbers.n and int(r["e"], 16) == numbers.e]
        yield bits, key, mine


async def test_rsa_pkcs1_v1_5_sigver_vectors_verify_as_published(nodes: NodeFactory) -> None:
    kms = await _kms(nodes)
    for bits, private, vectors in _sigver_keys("SigVer15_186-3.rsp", (3072, 4096)):
        key = await _imported(kms, f"RSA_{bits}", "SIGN_VERIFY", _pkcs8(private))
        results = {True: 0, False: 0}
        for record in vectors:
            algorithm = f"RSASSA_PKCS1_V1_5_SHA_{_SHA[record['SHAAlg']]}"
            message, signature = bytes.fromhex(record["Msg"]), bytes.fromhex(record["S"])
            expected = record["Result"].startswith("P")
            assert await _valid(kms, key, message, signature, algorithm) is expected, (bits, record["Result"])
            if expected:  # the same signature over the caller's own digest
                digest = hashlib.new(f"sha{_SHA[record['SHAAlg']]}", message).digest()
                assert await _valid(kms, key, digest, signature, algorithm, "DIGEST")
                assert not await _valid(kms, key, _flip(digest), signature, algorithm, "DIGEST")
            results[expected] += 1
        assert results[True] >= 3 and results[False] >= 6, (bits, results)


async def test_rsa_pss_sigver_vectors_failing_ones_are_refused(nodes: NodeFactory) -> None:
    """Every failing CAVP PSS vector (changed message, signature, key or salt) is refused. The passing
    ones carry a 10-byte salt, and AWS's RSASSA_PSS_SHA_* fix the salt length to the digest length
    (its developer guide's asymmetric key specs), so regionkms refuses those too; a signature regionkms
    makes under the vector's own key verifies with the vector's public key offline."""
    kms = await _kms(nodes)
    for bits, private, vectors in _sigver_keys("SigVerPSS_186-3.rsp", (2048, 3072)):
        key = await _imported(kms, f"RSA_{bits}", "SIGN_VERIFY", _pkcs8(private))
        failing = [r for r in vectors if r["Result"].startswith("F")]
        assert len(failing) >= 9, (bits, len(failing))
        for record in vectors:
            algorithm = f"RSASSA_PSS_SHA_{_SHA[record['SHAAlg']]}"
            assert len(bytes.fromhex(record["SaltVal"])) == 10
            message, signature = bytes.fromhex(record["Msg"]), bytes.fromhex(record["S"])
            assert not await _valid(kms, key, message, signature, algorithm), (bits, record["Result"])
        for suffix, digest in (("256", hashes.SHA256()), ("512", hashes.SHA512())):
            made = await aws_call(kms.sign, KeyId=key, Message=b"vector key",
                                  SigningAlgorithm=f"RSASSA_PSS_SHA_{suffix}")  # fmt: skip
            private.public_key().verify(made["Signature"], b"vector key",
                                        padding.PSS(padding.MGF1(digest), digest.digest_size), digest)  # fmt: skip


_CURVES = {
    "P-256,SHA-256": ("ECC_NIST_P256", ec.SECP256R1(), "ECDSA_SHA_256", "sha256"),
    "P-384,SHA-384": ("ECC_NIST_P384", ec.SECP384R1(), "ECDSA_SHA_384", "sha384"),
    "P-521,SHA-512": ("ECC_NIST_P521", ec.SECP521R1(), "ECDSA_SHA_512", "sha512"),
    "K-256,SHA-256": ("ECC_SECG_P256K1", ec.SECP256K1(), "ECDSA_SHA_256", "sha256"),
}


async def test_ecdsa_siggen_vectors_verify_on_every_curve(nodes: NodeFactory) -> None:
    """NIST CAVP SigGen (P-256/384/521) and the secp256k1 set: records with their private key d.
    The vector's (r, s) verifies over the message and over its digest; changed, it does not, nor
    over another record's message, nor under another record's key."""
    kms = await _kms(nodes)
    files = (("FIPS_186-3", "SigGen.txt"), ("SECP256K1", "SigGen.txt"))
    sections: dict[str, list[dict[str, str]]] = {}
    for folder, name in files:
        for section, record in records(vector_path("asymmetric", "ECDSA", folder, name)):
            if section in _CURVES:
                sections.setdefault(section, []).append(record)
    assert set(sections) == set(_CURVES)
    for section, vectors in sections.items():
        spec, curve, algorithm, hash_name = _CURVES[section]
        sample = _sample(vectors, 3)
        keys = []
        for record in sample[:2]:
            private = ec.derive_private_key(int(record["d"], 16), curve)
            numbers = private.public_key().public_numbers()
            assert (numbers.x, numbers.y) == (int(record["Qx"], 16), int(record["Qy"], 16))
            keys.append(await _imported(kms, spec, "SIGN_VERIFY", _pkcs8(private)))
        for index, key in enumerate(keys):
            record, other = sample[index], sample[index + 1]
            message = bytes.fromhex(record["Msg"])
            r, s = int(record["R"], 16), int(record["S"], 16)
            signature = encode_dss_signature(r, s)
            assert await _valid(kms, key, message, signature, algorithm), section
            digest = hashlib.new(hash_name, message).digest()
            assert await _valid(kms, key, digest, signature, algorithm, "DIGEST"), section
            for bad in (encode_dss_signature(r, s ^ 1), encode_dss_signature(r ^ 1, s), _flip(signature)):
                assert not await _valid(kms, key, message, bad, algorithm), section
            assert not await _valid(kms, key, bytes.fromhex(other["Msg"]), signature, algorithm), section
            other_signature = encode_dss_signature(int(other["R"], 16), int(other["S"], 16))
            assert not await _valid(kms, key, bytes.fromhex(other["Msg"]), other_signature, algorithm), section


async def test_ed25519_vectors_verify_and_sign_as_published(nodes: NodeFactory) -> None:
    kms = await _kms(nodes)
    lines = vector_path("asymmetric", "Ed25519", "sign.input").read_text().splitlines()
    sample = _sample([line for line in lines if line.split(":")[2]], 4)  # AWS's Message has 1 byte or more
    for index, line in enumerate(sample):
        secret, public, message_hex, signed, _ = line.split(":")
        seed = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret)[:32])
        key = await _imported(kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY", _pkcs8(seed))
        assert (await aws_call(kms.get_public_key, KeyId=key))["PublicKey"].endswith(bytes.fromhex(public))
        message, signature = bytes.fromhex(message_hex), bytes.fromhex(signed)[:64]
        assert await _valid(kms, key, message, signature, "ED25519_SHA_512")
        made = await aws_call(kms.sign, KeyId=key, Message=message, SigningAlgorithm="ED25519_SHA_512")
        assert made["Signature"] == signature  # Ed25519 is deterministic: the vector's own bytes
        assert not await _valid(kms, key, message, _flip(signature, 0), "ED25519_SHA_512")
        assert not await _valid(kms, key, message, _flip(signature), "ED25519_SHA_512")
        assert not await _valid(kms, key, message + b"\x00", signature, "ED25519_SHA_512")
        other = sample[(index + 1) % len(sample)].split(":")
        assert not await _valid(kms, key, bytes.fromhex(other[2]), bytes.fromhex(other[3])[:64], "ED25519_SHA_512")


def _mu(public: bytes, context: bytes, message: bytes) -> bytes:
    """FIPS 204's mu for a message signed under ``context``: SHAKE256(tr || 0 || |ctx| || ctx || M)."""
    tr = hashlib.shake_256(public).digest(64)
    return hashlib.shake_256(tr + bytes([0, len(context)]) + context + message).digest(64)


async def test_ml_dsa_known_answer_signatures_verify_through_external_mu(nodes: NodeFactory) -> None:
    """The ML-DSA KATs sign under a non-empty context; AWS's ML_DSA_SHAKE_256 signs RAW messages
    under the empty one, so the KAT signature is refused over the RAW message and accepted over its
    mu (EXTERNAL_MU carries the context in). The key from the KAT seed has the KAT public key."""
    kms = await _kms(nodes)
    for level, cls in ((44, mldsa.MLDSA44PrivateKey), (65, mldsa.MLDSA65PrivateKey), (87, mldsa.MLDSA87PrivateKey)):
        vectors = [r for _, r in records(vector_path("asymmetric", "MLDSA", f"kat_MLDSA_{level}_det_pure.rsp"))]
        for record in _sample(vectors, 2):
            public, message, context = (bytes.fromhex(record[k]) for k in ("pk", "msg", "ctx"))
            signature = bytes.fromhex(record["sm"])[: int(record["smlen"]) - int(record["mlen"])]
            private = cls.from_seed_bytes(bytes.fromhex(record["xi"]))
            key = await _imported(kms, f"ML_DSA_{level}", "SIGN_VERIFY", _pkcs8(private))
            assert (await aws_call(kms.get_public_key, KeyId=key))["PublicKey"].endswith(public)
            mu = _mu(public, context, message)
            assert await _valid(kms, key, mu, signature, "ML_DSA_SHAKE_256", "EXTERNAL_MU"), level
            assert not await _valid(kms, key, _flip(mu), signature, "ML_DSA_SHAKE_256", "EXTERNAL_MU"), level
            assert not await _valid(kms, key, mu, _flip(signature, 0), "ML_DSA_SHAKE_256", "EXTERNAL_MU"), level
            assert not await _valid(kms, key, message, signature, "ML_DSA_SHAKE_256"), level  # empty context


async def test_ml_kem_known_answers_decapsulate_as_published(nodes: NodeFactory) -> None:
    """From the KAT seed (d || z) the key has the KAT public key; Decapsulate gives the KAT shared
    secret for its ciphertext and, for its invalid ciphertext, the KAT's implicit-rejection secret."""
    kms = await _kms(nodes)
    for level, cls in ((768, mlkem.MLKEM768PrivateKey), (1024, mlkem.MLKEM1024PrivateKey)):
        vectors = [r for _, r in records(vector_path("asymmetric", "MLKEM", f"kat_MLKEM_{level}.rsp"))]
        for record in _sample(vectors, 2):
            seed = bytes.fromhex(record["d"]) + bytes.fromhex(record["z"])
            key = await _imported(kms, f"ML_KEM_{level}", "ENCAPSULATE_DECAPSULATE", _pkcs8(cls.from_seed_bytes(seed)))
            assert (await aws_call(kms.get_public_key, KeyId=key))["PublicKey"].endswith(bytes.fromhex(record["pk"]))
            for ciphertext, secret in (("ct", "ss"), ("ct_n", "ss_n")):
                out = await aws_call(kms.decapsulate, KeyId=key, EncapsulationAlgorithm="ML_KEM",
                                     SharedSecretCiphertextBlob=bytes.fromhex(record[ciphertext]))  # fmt: skip
                assert out["SharedSecret"] == bytes.fromhex(record[secret]), (level, ciphertext)


def _oaep_examples(path: Any) -> list[tuple[rsa.RSAPrivateKey, list[tuple[bytes, bytes]]]]:
    """(private key, [(message, ciphertext)]) for each key of a PKCS #1 v2.1 OAEP vector file."""
    keys: list[tuple[rsa.RSAPrivateKey, list[tuple[bytes, bytes]]]] = []
    fields: dict[str, bytes] = {}
    message = b""
    for label, value in pkcs1_fields(path):
        if label == "Prime 2":
            fields[label] = value
            keys.append((_rsa_key(*(int.from_bytes(fields[k]) for k in ("Prime 1", "Prime 2", "Exponent",
                                                                         "Public exponent"))), []))  # fmt: skip
        elif label == "Message":
            message = value
        elif label == "Encryption":
            keys[-1][1].append((message, value))
        else:
            fields[label] = value
    return keys


async def test_rsa_oaep_vectors_decrypt_as_published(nodes: NodeFactory) -> None:
    """RSA Laboratories' Example 10 (2048 bits, SHA-1) under RSAES_OAEP_SHA_1 and pyca's SHA-256/MGF1-SHA-256
    set (2048 bits) under RSAES_OAEP_SHA_256: each ciphertext decrypts to its message; a changed one,
    or one under the other algorithm, is InvalidCiphertextException."""
    kms = await _kms(nodes)
    sha1 = [k for k in _oaep_examples(vector_path("asymmetric", "RSA", "pkcs-1v2-1d2-vec", "oaep-vect.txt"))
            if k[0].key_size == 2048]  # fmt: skip
    sha256 = _oaep_examples(vector_path("asymmetric", "RSA", "oaep-custom", "oaep-sha256-sha256.txt"))
    assert len(sha1) == 1 and len(sha256) == 10
    for algorithm, other, chosen in (("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", sha1),
                                     ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", _sample(sha256, 2))):  # fmt: skip
        for private, examples in chosen:
            assert len(examples) == 6
            key = await _imported(kms, "RSA_2048", "ENCRYPT_DECRYPT", _pkcs8(private))
            for message, ciphertext in _sample(examples, 3):
                out = await aws_call(kms.decrypt, KeyId=key, CiphertextBlob=ciphertext, EncryptionAlgorithm=algorithm)
                assert out["Plaintext"] == message and out["EncryptionAlgorithm"] == algorithm and out["KeyId"] == key
                for bad, used in ((_flip(ciphertext), algorithm), (ciphertext, other)):
                    err = await expect_error(kms.decrypt, KeyId=key, CiphertextBlob=bad, EncryptionAlgorithm=used)
                    assert error_code(err) == "InvalidCiphertextException", used


# HMAC key spec: (algorithm, hash, block size, AWS's importable key lengths)
_HMAC = {
    "sha224": ("HMAC_224", "HMAC_SHA_224", 64, 28),
    "sha256": ("HMAC_256", "HMAC_SHA_256", 64, 32),
    "sha384": ("HMAC_384", "HMAC_SHA_384", 128, 48),
    "sha512": ("HMAC_512", "HMAC_SHA_512", 128, 64),
}


def _equivalent_key(key: bytes, hash_name: str, block: int, shortest: int) -> bytes:
    """A key AWS lets one import that HMAC treats as ``key`` (RFC 2104 section 2): a key longer than the
    block is replaced by its hash, and every key is padded with zeros to the block, so adding zeros up to
    the shortest importable length changes no MAC."""
    if len(key) > block:
        key = hashlib.new(hash_name, key).digest()
    return key + bytes(max(0, shortest - len(key)))


async def test_rfc4231_hmac_vectors_through_imported_keys(nodes: NodeFactory) -> None:
    kms = await _kms(nodes)
    for hash_name, (spec, algorithm, block, shortest) in _HMAC.items():
        vectors = [r for _, r in records(vector_path("HMAC", f"rfc-4231-{hash_name}.txt"))]
        assert len(vectors) == 6, hash_name  # RFC 4231 cases 1-4, 6 and 7 (5 truncates)
        for record in vectors:
            key_bytes, message, expected = (bytes.fromhex(record[k]) for k in ("Key", "Msg", "MD"))
            key = await _imported(kms, spec, "GENERATE_VERIFY_MAC", _equivalent_key(key_bytes, hash_name, block,
                                                                                  shortest))  # fmt: skip
            out = await aws_call(kms.generate_mac, KeyId=key, Message=message, MacAlgorithm=algorithm)
            assert out["Mac"] == expected, (hash_name, len(key_bytes))
            ok = await aws_call(kms.verify_mac, KeyId=key, Message=message, Mac=expected, MacAlgorithm=algorithm)
            assert ok["MacValid"] is True
            for bad_message, bad_mac in ((message, _flip(expected)), (message, expected[:16]),
                                         (message + b"\x00", expected)):  # fmt: skip
                err = await expect_error(kms.verify_mac, KeyId=key, Message=bad_message, Mac=bad_mac,
                                         MacAlgorithm=algorithm)  # fmt: skip
                assert error_code(err) == "KMSInvalidMacException", hash_name
