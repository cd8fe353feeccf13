"""Seal key material to a destination region with HPKE (RFC 9180), for replication.

A multi-region key's backing material crosses regions inside replication frames. The frame
is signed and travels over mutual TLS, but neither protects the material from the proxy, the
outbox table or a log that sees the frame; sealing it to the destination region's public key
does. Only the destination region, holding the private key (itself wrapped by that region's
root key at rest), can open it.

Suite: ``Suite(KEM.MLKEM768_X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)`` in base mode, the
hybrid post-quantum KEM: the material stays secret unless *both* ML-KEM-768 and X25519 fall,
so a recording made today is not readable by a future quantum attacker.

Key formats (version 1; ``from_*`` refuses anything else):

    public key  = 0x01 | ML-KEM-768 encapsulation key (1184 bytes) | X25519 public (32 bytes)
    private key = 0x01 | ML-KEM-768 seed (64 bytes)               | X25519 private (32 bytes)

The leading byte names the suite, so a later suite (say ML-KEM-1024 + P-384) can be stored
next to this one and told apart without guessing from lengths.

Sealed blob (version 1):

    0x01 | HPKE enc (1120 bytes) | AES-256-GCM ciphertext of the material | 16-byte tag

HPKE ``info`` binds what the material *is* and where it is *going*, so a sealed blob cannot
be replayed as another key, another backing version, or between another pair of regions
(each field length-prefixed, so no two distinct tuples share an encoding):

    b"regionkms/hpke/key-material/v1" | 0x00
    | u16be len(key_id) | key_id (UTF-8)
    | u32be version
    | u16be len(source_region) | source_region (UTF-8)
    | u16be len(dest_region)   | dest_region (UTF-8)

Every failure to open -- truncated blob, flipped bit, wrong key, wrong info -- raises the one
``SealedMaterialError`` with the same message, like cryptography's ``InvalidTag``: the
receiver can act on "this did not open" and on nothing finer, and no detail of the secret
leaks into a message or log. Invalid *arguments* (a version outside u32, an empty region
name) are caller bugs and raise ``ValueError``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from regiond.crypto.errors import SealedMaterialError

__all__ = [
    "PRIVATE_KEY_BYTES",
    "PUBLIC_KEY_BYTES",
    "RegionEncryptionPrivateKey",
    "RegionEncryptionPublicKey",
    "SealedMaterialError",
    "info_for",
    "open_from_region",
    "seal_to_region",
]

FORMAT_V1 = 0x01
"""The suite/format byte that starts keys and sealed blobs made by this module."""

MLKEM768_PUBLIC_BYTES = 1184
MLKEM768_SEED_BYTES = 64
X25519_KEY_BYTES = 32
PUBLIC_KEY_BYTES = 1 + MLKEM768_PUBLIC_BYTES + X25519_KEY_BYTES
PRIVATE_KEY_BYTES = 1 + MLKEM768_SEED_BYTES + X25519_KEY_BYTES

SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ENC_BYTES: int = hpke.KEM.MLKEM768_X25519.enc_length()
TAG_BYTES = 16
MIN_SEALED_BYTES = 1 + ENC_BYTES + TAG_BYTES

INFO_LABEL = b"regionkms/hpke/key-material/v1\x00"
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF


class RegionEncryptionPublicKey:
    """A region's public encryption key: safe to publish, store and compare."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: hpke.MLKEM768X25519PublicKey, raw: bytes) -> None:
        # Private constructor: use RegionEncryptionPrivateKey.public_key() or from_bytes().
        self._key = key
        self._raw = raw

    @classmethod
    def from_bytes(cls, data: bytes) -> RegionEncryptionPublicKey:
        """Parse the version 1 public key format; ``ValueError`` if it is not one."""
        data = bytes(data)
        if len(data) != PUBLIC_KEY_BYTES or data[0] != FORMAT_V1:
            raise ValueError("malformed region encryption public key")
        try:
            mlkem_pub = mlkem.MLKEM768PublicKey.from_public_bytes(data[1 : 1 + MLKEM768_PUBLIC_BYTES])
            x_pub = x25519.X25519PublicKey.from_public_bytes(data[1 + MLKEM768_PUBLIC_BYTES :])
        except ValueError:
            raise ValueError("malformed region encryption public key") from None
        return cls(hpke.MLKEM768X25519PublicKey(mlkem_pub, x_pub), data)

    def to_bytes(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegionEncryptionPublicKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"RegionEncryptionPublicKey(sha256={hashlib.sha256(self._raw).hexdigest()[:16]})"


class RegionEncryptionPrivateKey:
    """A region's private encryption key; the only way to open material sealed to the region.

    Like Tink's ``KeysetHandle`` it refuses to be printed or pickled. The raw bytes, which
    the caller must wrap with the region root key before storing, are reachable only through
    ``material()``, so a reviewer can grep for every place they escape.
    """

    __slots__ = ("_key", "_material", "_public")

    def __init__(self, key: hpke.MLKEM768X25519PrivateKey, material: bytes, public: RegionEncryptionPublicKey) -> None:
        # Private constructor: use generate() or from_material().
        self._key = key
        self._material = material
        self._public = public

    @classmethod
    def generate(cls) -> RegionEncryptionPrivateKey:
        return cls._from_parts(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @classmethod
    def from_material(cls, material: bytes) -> RegionEncryptionPrivateKey:
        """Rebuild a key from ``material()`` bytes; ``ValueError`` (no detail) if malformed."""
        material = bytes(material)
        if len(material) != PRIVATE_KEY_BYTES or material[0] != FORMAT_V1:
            raise ValueError("malformed region encryption private key")
        try:
            mlkem_priv = mlkem.MLKEM768PrivateKey.from_seed_bytes(material[1 : 1 + MLKEM768_SEED_BYTES])
            x_priv = x25519.X25519PrivateKey.from_private_bytes(material[1 + MLKEM768_SEED_BYTES :])
        except ValueError:
            raise ValueError("malformed region encryption private key") from None
        return cls._from_parts(mlkem_priv, x_priv)

    @classmethod
    def _from_parts(
        cls, mlkem_priv: mlkem.MLKEM768PrivateKey, x_priv: x25519.X25519PrivateKey
    ) -> RegionEncryptionPrivateKey:
        material = bytes([FORMAT_V1]) + mlkem_priv.private_bytes_raw() + x_priv.private_bytes_raw()
        mlkem_pub = mlkem_priv.public_key()
        x_pub = x_priv.public_key()
        public = RegionEncryptionPublicKey(
            hpke.MLKEM768X25519PublicKey(mlkem_pub, x_pub),
            bytes([FORMAT_V1]) + mlkem_pub.public_bytes_raw() + x_pub.public_bytes_raw(),
        )
        return cls(hpke.MLKEM768X25519PrivateKey(mlkem_priv, x_priv), material, public)

    def public_key(self) -> RegionEncryptionPublicKey:
        return self._public

    def material(self) -> bytes:
        """The raw private key bytes (format in the module docstring). Wrap before storing."""
        return self._material

    def __repr__(self) -> str:
        return "RegionEncryptionPrivateKey(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("RegionEncryptionPrivateKey cannot be pickled; use material() explicitly")


def _u16_prefixed(field: str, name: str) -> bytes:
    data = field.encode("utf-8")
    if not data or len(data) > U16_MAX:
        raise ValueError(f"{name} must be a non-empty string of at most {U16_MAX} UTF-8 bytes")
    return struct.pack(">H", len(data)) + data


def info_for(*, key_id: str, version: int, source_region: str, dest_region: str) -> bytes:
    """The HPKE ``info`` for one (key id, backing version, source, destination); see module doc."""
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= U32_MAX:
        raise ValueError("version must be an integer in [0, 2**32)")
    return b"".join(
        (
            INFO_LABEL,
            _u16_prefixed(key_id, "key_id"),
            struct.pack(">I", version),
            _u16_prefixed(source_region, "source_region"),
            _u16_prefixed(dest_region, "dest_region"),
        )
    )


def seal_to_region(
    public_key: RegionEncryptionPublicKey,
    plaintext: bytes,
    *,
    key_id: str,
    version: int,
    source_region: str,
    dest_region: str,
) -> bytes:
    """Seal ``plaintext`` (key material) so only ``dest_region``'s private key opens it.

    Each call uses a fresh HPKE encapsulation, so sealing the same material twice gives
    unrelated blobs. ``open_from_region`` must be given the same four binding values.
    """
    info = info_for(key_id=key_id, version=version, source_region=source_region, dest_region=dest_region)
    return bytes([FORMAT_V1]) + SUITE.encrypt(bytes(plaintext), public_key._key, info=info)


def open_from_region(
    private_key: RegionEncryptionPrivateKey,
    sealed: bytes,
    *,
    key_id: str,
    version: int,
    source_region: str,
    dest_region: str,
) -> bytes:
    """Open a blob from ``seal_to_region``; ``SealedMaterialError`` on any failure to open."""
    info = info_for(key_id=key_id, version=version, source_region=source_region, dest_region=dest_region)
    sealed = bytes(sealed)
    if len(sealed) < MIN_SEALED_BYTES or sealed[0] != FORMAT_V1:
        raise SealedMaterialError
    try:
        return SUITE.decrypt(sealed[1:], private_key._key, info=info)
    except (InvalidTag, ValueError):
        raise SealedMaterialError from None
