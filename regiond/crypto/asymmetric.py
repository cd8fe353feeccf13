"""Asymmetric KMS keys: key pairs, their material, and every algorithm AWS KMS offers for them.

Material format, for every asymmetric spec: a PKCS#8 ``PrivateKeyInfo`` in DER (RFC 5208), as
``cryptography`` writes it: RSA (RFC 8017), the NIST curves and secp256k1 (RFC 5915), Ed25519
(RFC 8410), ML-DSA and ML-KEM in their seed form (the IETF LAMPS private-key formats). It is the
form AWS takes for imported asymmetric material and returns as GenerateDataKeyPair's
``PrivateKeyPlaintext``. At rest it is sealed under the region's root key like any backing key
(``crypto.wrap``, AAD = key id and version).

Material enters once (generated here, or imported and checked by ``check_material``, which
parses it completely, RSA's key consistency check included, and re-encodes it canonically);
what the store hands back is authenticated by the root key's AES-GCM tag, so ``PrivateKey``
parses it on first use without repeating OpenSSL's RSA consistency check (about a second for
RSA-4096). OpenSSL still verifies each CRT signature against the public exponent before it
returns it, so even a corrupted key could not leak its factors through a faulty signature.

Algorithms (the API reference's "Key spec reference"):

``RSASSA_PSS_SHA_*``          PSS, MGF1 with the same hash, salt length = hash length
``RSASSA_PKCS1_V1_5_SHA_*``   PKCS #1 v1.5 signatures
``ECDSA_SHA_*``               ECDSA, DER-encoded (r, s) as ANSI X9.62 / RFC 3279 says
``ED25519_SHA_512``           PureEdDSA (RFC 8032 Ed25519)
``ED25519_PH_SHA_512``        HashEdDSA (RFC 8032 Ed25519ph) over the 64-byte DIGEST message:
                              Ed25519ph hashes it once more, as AWS documents. ``cryptography``
                              has no Ed25519ph, so it is libsodium's (PyNaCl, also from PyCA)
``ML_DSA_SHAKE_256``          FIPS 204 ML-DSA, empty context; ``EXTERNAL_MU`` signs a given mu
``RSAES_OAEP_SHA_1/256``      OAEP with MGF1 of the same hash and no label
``ECDH``                      the raw shared secret (the x-coordinate, SEC 1 section 3.3.1)
``ML_KEM``                    FIPS 203 encapsulation / decapsulation (implicit rejection)

Failures raise one of ``AsymmetricError``'s subclasses, none carrying key bytes. A signature
that does not verify is not an error: ``verify`` returns False and the service answers
KMSInvalidSignatureException.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple, TypeAlias

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, padding, rsa, utils

from regiond.crypto.errors import CryptoError, DecryptError
from regiond.crypto.wrap import SecretMaterial
from regiond.domain.key import EncryptionAlgorithm, KeySpec, SigningAlgorithm
from regiond.domain.keyspec import KeyFamily, family
from regiond.domain.signing import MessageType, SigningInput

__all__ = [
    "AsymmetricError",
    "DecryptionError",
    "KeyPair",
    "MaterialError",
    "PeerKeyError",
    "PrivateKey",
    "check_material",
    "generate",
    "generate_pair",
    "max_plaintext_bytes",
    "pkcs8_der_from_pem",
    "public_key_der",
    "verify_with_public_key",
]

RSA_PUBLIC_EXPONENT = 65537

PrivateKeyObject: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
    | mlkem.MLKEM768PrivateKey
    | mlkem.MLKEM1024PrivateKey
)
PublicKeyObject: TypeAlias = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
    | mlkem.MLKEM768PublicKey
    | mlkem.MLKEM1024PublicKey
)


class AsymmetricError(CryptoError):
    """Root of every failure of this module (messages never carry key bytes)."""


class MaterialError(AsymmetricError, ValueError):
    """Material that is not a PKCS#8 private key of the expected spec."""


class DecryptionError(AsymmetricError, DecryptError):
    """A ciphertext that does not open (one failure for every cause)."""


class PeerKeyError(AsymmetricError, ValueError):
    """A peer's public key (DeriveSharedSecret) that is not usable with this key."""


_RSA_BITS: Mapping[KeySpec, int] = MappingProxyType(
    {KeySpec.RSA_2048: 2048, KeySpec.RSA_3072: 3072, KeySpec.RSA_4096: 4096}
)
_CURVES: Mapping[KeySpec, type[ec.EllipticCurve]] = MappingProxyType(
    {
        KeySpec.ECC_NIST_P256: ec.SECP256R1,
        KeySpec.ECC_NIST_P384: ec.SECP384R1,
        KeySpec.ECC_NIST_P521: ec.SECP521R1,
        KeySpec.ECC_SECG_P256K1: ec.SECP256K1,
    }
)
_ML_DSA: Mapping[KeySpec, Callable[[], PrivateKeyObject]] = MappingProxyType(
    {
        KeySpec.ML_DSA_44: mldsa.MLDSA44PrivateKey.generate,
        KeySpec.ML_DSA_65: mldsa.MLDSA65PrivateKey.generate,
        KeySpec.ML_DSA_87: mldsa.MLDSA87PrivateKey.generate,
    }
)
_ML_KEM: Mapping[KeySpec, Callable[[], PrivateKeyObject]] = MappingProxyType(
    {KeySpec.ML_KEM_768: mlkem.MLKEM768PrivateKey.generate, KeySpec.ML_KEM_1024: mlkem.MLKEM1024PrivateKey.generate}
)
_PRIVATE_TYPES: Mapping[KeySpec, type] = MappingProxyType(
    {
        **{s: rsa.RSAPrivateKey for s in _RSA_BITS},
        **{s: ec.EllipticCurvePrivateKey for s in _CURVES},
        KeySpec.ECC_NIST_EDWARDS25519: ed25519.Ed25519PrivateKey,
        KeySpec.ML_DSA_44: mldsa.MLDSA44PrivateKey,
        KeySpec.ML_DSA_65: mldsa.MLDSA65PrivateKey,
        KeySpec.ML_DSA_87: mldsa.MLDSA87PrivateKey,
        KeySpec.ML_KEM_768: mlkem.MLKEM768PrivateKey,
        KeySpec.ML_KEM_1024: mlkem.MLKEM1024PrivateKey,
    }
)

_A = SigningAlgorithm
_SIGNING_HASH: Mapping[SigningAlgorithm, type[hashes.HashAlgorithm]] = MappingProxyType(
    {
        _A.RSASSA_PSS_SHA_256: hashes.SHA256, _A.RSASSA_PSS_SHA_384: hashes.SHA384,
        _A.RSASSA_PSS_SHA_512: hashes.SHA512, _A.RSASSA_PKCS1_V1_5_SHA_256: hashes.SHA256,
        _A.RSASSA_PKCS1_V1_5_SHA_384: hashes.SHA384, _A.RSASSA_PKCS1_V1_5_SHA_512: hashes.SHA512,
        _A.ECDSA_SHA_256: hashes.SHA256, _A.ECDSA_SHA_384: hashes.SHA384, _A.ECDSA_SHA_512: hashes.SHA512,
    }
)  # fmt: skip
_PSS = frozenset({_A.RSASSA_PSS_SHA_256, _A.RSASSA_PSS_SHA_384, _A.RSASSA_PSS_SHA_512})
_OAEP_HASH: Mapping[EncryptionAlgorithm, type[hashes.HashAlgorithm]] = MappingProxyType(
    {EncryptionAlgorithm.RSAES_OAEP_SHA_1: hashes.SHA1, EncryptionAlgorithm.RSAES_OAEP_SHA_256: hashes.SHA256}
)


def _der(key: PrivateKeyObject) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _generate_object(spec: KeySpec) -> PrivateKeyObject:
    kind = family(spec)
    if kind is KeyFamily.RSA:
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=_RSA_BITS[spec])
    if kind is KeyFamily.ECC:
        return ec.generate_private_key(_CURVES[spec]())
    if kind is KeyFamily.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if kind is KeyFamily.ML_DSA:
        return _ML_DSA[spec]()
    if spec in _ML_KEM:
        return _ML_KEM[spec]()
    raise MaterialError(f"{spec} is not an asymmetric key spec regionkms generates")


def generate(spec: KeySpec) -> SecretMaterial:
    """A new private key of ``spec`` as PKCS#8 DER (RSA-4096 is CPU-heavy: call off the event loop)."""
    return SecretMaterial(_der(_generate_object(spec)))


class KeyPair(NamedTuple):
    """A data key pair (GenerateDataKeyPair): PKCS#8 private key and DER SubjectPublicKeyInfo."""

    private: SecretMaterial
    public_der: bytes


def generate_pair(spec: KeySpec) -> KeyPair:
    key = _generate_object(spec)
    return KeyPair(SecretMaterial(_der(key)), _spki(key.public_key()))


def _spki(public: PublicKeyObject) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load(spec: KeySpec, der: bytes, *, validate: bool) -> PrivateKeyObject:
    try:
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=not validate)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise MaterialError(f"the key material is not a PKCS#8 private key for {spec}") from None
    expected = _PRIVATE_TYPES.get(spec)
    if expected is None or not isinstance(key, expected):
        raise MaterialError(f"the key material is a private key of another type than {spec}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size != _RSA_BITS[spec]:
        raise MaterialError(f"the key material is an RSA key of {key.key_size} bits, not {spec}")
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, _CURVES[spec]):
        raise MaterialError(f"the key material is an EC key on {key.curve.name}, not {spec}")
    return key  # type: ignore[return-value]  # narrowed by the isinstance check against _PRIVATE_TYPES


def check_material(spec: KeySpec, material: SecretMaterial) -> SecretMaterial:
    """Imported material: parsed and checked completely, returned in this module's canonical form."""
    return SecretMaterial(_der(_load(spec, material.material(), validate=True)))


def pkcs8_der_from_pem(pem: bytes) -> bytes:
    """An unencrypted PEM private key as PKCS#8 DER (``regiond import-material`` reads PEM files)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise MaterialError("the file is not an unencrypted PEM private key") from None
    return _der(key)  # type: ignore[arg-type]  # any private key type serializes to PKCS#8


def public_key_der(spec: KeySpec, material: SecretMaterial) -> bytes:
    return PrivateKey(spec, material).public_key_der()


def max_plaintext_bytes(spec: KeySpec, algorithm: EncryptionAlgorithm) -> int:
    """RSAES-OAEP's limit (RFC 8017 7.1.1): modulus bytes - 2 * hash bytes - 2 (API reference: Encrypt)."""
    return _RSA_BITS[spec] // 8 - 2 * _OAEP_HASH[algorithm]().digest_size - 2


def _oaep(algorithm: EncryptionAlgorithm) -> padding.OAEP:
    h = _OAEP_HASH[algorithm]()
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)


def _rsa_padding(algorithm: SigningAlgorithm) -> padding.AsymmetricPadding:
    h = _SIGNING_HASH[algorithm]()
    if algorithm in _PSS:
        return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    return padding.PKCS1v15()


def _hash_arg(request: SigningInput) -> hashes.HashAlgorithm | utils.Prehashed:
    h = _SIGNING_HASH[request.algorithm]()
    return utils.Prehashed(h) if request.message_type is MessageType.DIGEST else h


def _ed25519ph_state(message: bytes) -> nacl.bindings.crypto_sign_ed25519ph_state:
    state = nacl.bindings.crypto_sign_ed25519ph_state()
    nacl.bindings.crypto_sign_ed25519ph_update(state, message)
    return state


def verify_with_public_key(public: PublicKeyObject, request: SigningInput, signature: bytes) -> bool:
    """Verify ``signature`` with a public key object: the KMS key's, or a caller's in tests."""
    message, algorithm = request.message, request.algorithm
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, _rsa_padding(algorithm), _hash_arg(request))
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(_hash_arg(request)))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            if algorithm is _A.ED25519_PH_SHA_512:
                raw = public.public_bytes_raw()
                return bool(
                    len(signature) == nacl.bindings.crypto_sign_BYTES
                    and nacl.bindings.crypto_sign_ed25519ph_final_verify(_ed25519ph_state(message), signature, raw)
                )
            public.verify(signature, message)
        elif isinstance(public, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey):
            if request.message_type is MessageType.EXTERNAL_MU:
                public.verify_mu(signature, message)
            else:
                public.verify(signature, message)
        else:
            return False
    except (InvalidSignature, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True


class PrivateKey:
    """The private half of one asymmetric KMS key: never printed, pickled or compared by value.

    Holds the sealed-at-rest material as a ``SecretMaterial`` and parses it on first use, so a
    cache full of keys costs nothing until a key is used.
    """

    __slots__ = ("_key", "_material", "_public_der", "spec")

    def __init__(self, spec: KeySpec, material: SecretMaterial) -> None:
        self.spec = spec
        self._material = material
        self._key: PrivateKeyObject | None = None
        self._public_der: bytes | None = None

    def _object(self) -> PrivateKeyObject:
        key = self._key
        if key is None:
            key = self._key = _load(self.spec, self._material.material(), validate=False)
        return key

    def public_key(self) -> PublicKeyObject:
        return self._object().public_key()

    def public_key_der(self) -> bytes:
        """``GetPublicKey``'s ``PublicKey``: DER SubjectPublicKeyInfo (RFC 5280)."""
        der = self._public_der
        if der is None:
            der = self._public_der = _spki(self.public_key())
        return der

    # --- signatures -----------------------------------------------------------------------

    def sign(self, request: SigningInput) -> bytes:
        key, message, algorithm = self._object(), request.message, request.algorithm
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(message, _rsa_padding(algorithm), _hash_arg(request))
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(message, ec.ECDSA(_hash_arg(request)))
        if isinstance(key, ed25519.Ed25519PrivateKey):
            if algorithm is _A.ED25519_PH_SHA_512:
                _public, secret = nacl.bindings.crypto_sign_seed_keypair(key.private_bytes_raw())
                return bytes(nacl.bindings.crypto_sign_ed25519ph_final_create(_ed25519ph_state(message), secret))
            return key.sign(message)
        if isinstance(key, mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey):
            if request.message_type is MessageType.EXTERNAL_MU:
                return key.sign_mu(message)
            return key.sign(message)
        raise MaterialError(f"{self.spec} keys do not sign")

    def verify(self, request: SigningInput, signature: bytes) -> bool:
        return verify_with_public_key(self.public_key(), request, signature)

    # --- RSAES-OAEP -----------------------------------------------------------------------

    def encrypt(self, algorithm: EncryptionAlgorithm, plaintext: bytes) -> bytes:
        public = self.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise MaterialError(f"{self.spec} keys do not encrypt")
        return public.encrypt(plaintext, _oaep(algorithm))

    def decrypt(self, algorithm: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        key = self._object()
        if not isinstance(key, rsa.RSAPrivateKey):
            raise MaterialError(f"{self.spec} keys do not decrypt")
        if len(ciphertext) != key.key_size // 8:
            raise DecryptionError
        try:
            return key.decrypt(ciphertext, _oaep(algorithm))
        except ValueError:
            raise DecryptionError from None

    # --- key agreement and encapsulation --------------------------------------------------

    def derive_shared_secret(self, peer_public_der: bytes) -> bytes:
        """ECDH with a peer's DER SubjectPublicKeyInfo on this key's curve; the raw shared secret."""
        key = self._object()
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise MaterialError(f"{self.spec} keys do not agree on secrets")
        try:
            peer = serialization.load_der_public_key(peer_public_der)
        except (ValueError, UnsupportedAlgorithm):
            raise PeerKeyError("The public key is not a DER-encoded SubjectPublicKeyInfo (RFC 5280).") from None
        if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != key.curve.name:
            raise PeerKeyError(f"The public key is not an elliptic curve key on the curve of {self.spec}.")
        try:
            return key.exchange(ec.ECDH(), peer)
        except ValueError:
            raise PeerKeyError("The public key is not a valid point for key agreement.") from None

    def encapsulate(self) -> tuple[bytes, bytes]:
        """ML-KEM with this key's public half: (shared secret, ciphertext)."""
        public = self.public_key()
        if not isinstance(public, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey):
            raise MaterialError(f"{self.spec} keys do not encapsulate")
        return public.encapsulate()

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """The shared secret of an ML-KEM ciphertext; a ciphertext of the wrong length is
        ``DecryptionError`` (a wrong one of the right length yields FIPS 203's implicit rejection)."""
        key = self._object()
        if not isinstance(key, mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey):
            raise MaterialError(f"{self.spec} keys do not decapsulate")
        try:
            return key.decapsulate(ciphertext)
        except ValueError:
            raise DecryptionError from None

    def __repr__(self) -> str:
        return "PrivateKey(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a private key cannot be pickled")
