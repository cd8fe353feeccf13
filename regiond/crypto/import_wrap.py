"""Imported key material: RSA wrapping key pairs and the four AWS wrapping algorithms.

GetParametersForImport hands the client the public half of a fresh RSA key pair; the client
encrypts its key material under it and ImportKeyMaterial opens it here. What the material must
be (256 bits for a symmetric key, an HMAC key of the spec's lengths, a PKCS#8 private key) is
``crypto.keymaterial.check_imported``'s to decide. The
algorithms are AWS's (``AlgorithmSpec`` in the KMS model, "Step 3: Encrypt the key material"
in the Developer Guide):

``RSAES_OAEP_SHA_1`` / ``RSAES_OAEP_SHA_256``
    ``EncryptedKeyMaterial = RSAES-OAEP(public key, material)`` with MGF1 and the label empty;
    the OAEP hash and the MGF1 hash are both SHA-1, or both SHA-256.

``RSA_AES_KEY_WRAP_SHA_1`` / ``RSA_AES_KEY_WRAP_SHA_256``
    the client makes an ephemeral AES-256 key ``K`` and sends

        RSAES-OAEP(public key, K)  ||  AES-KWP(K, material)

    where the first part is exactly the modulus length (256/384/512 bytes) and AES-KWP is AES
    key wrap with padding, RFC 5649 (``openssl enc -id-aes256-wrap-pad``). The OAEP/MGF1 hash is
    SHA-1 or SHA-256 as named.

``RSAES_PKCS1_V1_5`` (deprecated by AWS since 2023), ``SM2PKE`` and the ``SM2`` wrapping key
spec (China Regions only) are not offered: the service answers UnsupportedOperationException.

Every way an ``EncryptedKeyMaterial`` can fail to open (wrong length, OAEP padding, KWP
integrity check) raises the one ``ImportUnwrapError`` with no detail, the import analogue of
STYLE.md item 4.

The private half lives only in a ``WrappingPrivateKey`` (redacted ``repr``, no pickling) and,
at rest, sealed under the root keyring with AAD that binds the KMS key id and the import
token id (``wrap.private_key_aad``), so a wrapped private key copied onto another token's row does
not open.

``key_material_id`` is the ``KeyMaterialId`` of a material: SHA-256 over a domain label, the
KMS key id and the material, in hex. As AWS's, it depends on key id and material, so the same
material imported into two keys gets two ids, and re-importing the same material into one key
finds its id again; a preimage-resistant hash of 256 random bits reveals nothing about them.

``wrap_key_material`` is the client side of the same algorithms, for ``regiond
import-material`` and for tests; the server never calls it.
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from regiond.crypto import wrap
from regiond.crypto.errors import ImportUnwrapError, KeyringError
from regiond.crypto.keyring import RootKeyring

__all__ = [
    "EPHEMERAL_AES_KEY_BYTES",
    "PUBLIC_EXPONENT",
    "RSA_PRIVATE_KEY_ALGORITHMS",
    "ImportUnwrapError",
    "WrappingAlgorithm",
    "WrappingKeyPair",
    "WrappingKeySpec",
    "WrappingPrivateKey",
    "generate_wrapping_key",
    "key_material_id",
    "open_private_key",
    "seal_private_key",
    "unwrap_key_material",
    "wrap_key_material",
]

PUBLIC_EXPONENT = 65537
EPHEMERAL_AES_KEY_BYTES = 32  # AWS: "a 256-bit AES symmetric encryption key" for RSA_AES_KEY_WRAP_*
_MATERIAL_ID_PREFIX = b"regionkms-key-material-id-v1\x00"


class WrappingAlgorithm(enum.StrEnum):
    """The ``AlgorithmSpec`` values regionkms accepts for GetParametersForImport."""

    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    RSA_AES_KEY_WRAP_SHA_1 = "RSA_AES_KEY_WRAP_SHA_1"
    RSA_AES_KEY_WRAP_SHA_256 = "RSA_AES_KEY_WRAP_SHA_256"

    @property
    def hybrid(self) -> bool:
        """True for RSA_AES_KEY_WRAP_*: RSA wraps an AES key, AES-KWP wraps the material."""
        return self in (WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256)

    def _oaep(self) -> padding.OAEP:
        sha256 = self in (WrappingAlgorithm.RSAES_OAEP_SHA_256, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256)
        algorithm: hashes.HashAlgorithm = hashes.SHA256() if sha256 else hashes.SHA1()  # noqa: S303 - OAEP with SHA-1 is an AWS wrapping algorithm
        return padding.OAEP(mgf=padding.MGF1(algorithm=algorithm), algorithm=algorithm, label=None)


RSA_PRIVATE_KEY_ALGORITHMS = frozenset(
    {WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256}
)
"""AWS: "To import an RSA private key, you must use an RSA_AES wrapping algorithm" (it does not fit OAEP)."""


class WrappingKeySpec(enum.StrEnum):
    """The ``WrappingKeySpec`` values regionkms accepts (RSA only)."""

    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"

    @property
    def bits(self) -> int:
        return int(self.value.removeprefix("RSA_"))


class WrappingPrivateKey:
    """The private half of a wrapping key pair: never printed, pickled or compared by value."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    @property
    def modulus_bytes(self) -> int:
        return (self._key.key_size + 7) // 8

    def __repr__(self) -> str:
        return "WrappingPrivateKey(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a wrapping private key cannot be pickled")


@dataclass(frozen=True, slots=True)
class WrappingKeyPair:
    """A fresh pair: ``public_key_der`` is the DER SubjectPublicKeyInfo that AWS returns as ``PublicKey``."""

    private: WrappingPrivateKey
    public_key_der: bytes


def generate_wrapping_key(spec: WrappingKeySpec) -> WrappingKeyPair:
    """A new RSA key pair of ``spec`` (CPU-heavy for RSA_4096: call it off the event loop)."""
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=spec.bits)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return WrappingKeyPair(WrappingPrivateKey(key), public)


def seal_private_key(keyring: RootKeyring, private: WrappingPrivateKey, aad: bytes) -> bytes:
    """PKCS#8 DER of the private key, sealed under the root key for ``import_parameters``."""
    der = private._key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return keyring.wrap(der, aad)


def open_private_key(keyring: RootKeyring, sealed: bytes, aad: bytes) -> WrappingPrivateKey:
    """Open a stored private key; ``KeyringError`` if it was not sealed for this key and token."""
    der = keyring.unwrap(sealed, aad)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as exc:
        raise KeyringError("stored wrapping key is not a PKCS#8 private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyringError("stored wrapping key is not an RSA key")
    return WrappingPrivateKey(key)


def unwrap_key_material(
    private: WrappingPrivateKey, algorithm: WrappingAlgorithm, encrypted: bytes
) -> wrap.SecretMaterial:
    """Open ``EncryptedKeyMaterial``; ``ImportUnwrapError`` for any failure (an empty or
    impossibly long result included)."""
    oaep = algorithm._oaep()
    size = private.modulus_bytes
    try:
        if algorithm.hybrid:
            if len(encrypted) <= size:
                raise ImportUnwrapError
            aes_key = private._key.decrypt(encrypted[:size], oaep)
            if len(aes_key) != EPHEMERAL_AES_KEY_BYTES:
                raise ImportUnwrapError
            material = aes_key_unwrap_with_padding(aes_key, encrypted[size:])
        else:
            if len(encrypted) != size:
                raise ImportUnwrapError
            material = private._key.decrypt(encrypted, oaep)
        return wrap.SecretMaterial(material)
    except (ValueError, InvalidUnwrap) as exc:
        raise ImportUnwrapError from exc


def wrap_key_material(public_key_der: bytes, algorithm: WrappingAlgorithm, material: bytes) -> bytes:
    """The client side: ``EncryptedKeyMaterial`` for ``material`` under a GetParametersForImport key."""
    public = serialization.load_der_public_key(public_key_der)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("the wrapping public key is not an RSA key")
    oaep = algorithm._oaep()
    if not algorithm.hybrid:
        return public.encrypt(material, oaep)
    aes_key = os.urandom(EPHEMERAL_AES_KEY_BYTES)
    return public.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)


def key_material_id(key_id: str, key: wrap.SecretMaterial) -> str:
    """``KeyMaterialId``: hex SHA-256 of a label, the KMS key id and the material (64 characters)."""
    digest = hashlib.sha256(_MATERIAL_ID_PREFIX + key_id.encode("ascii") + b"\x00" + key.material())
    return digest.hexdigest()
