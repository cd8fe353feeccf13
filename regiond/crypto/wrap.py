"""Backing key material (make it, wrap it under the root key, unwrap it, use it), and every AAD
that binds a value sealed under the root key to its place.

A symmetric encryption KMS key's backing key versions are 256-bit AES keys; the other key
specs (HMAC keys, asymmetric private keys: ``crypto.keymaterial``) keep their material in the
same column, as bytes of their own format. At rest each one is sealed by the
region's root keyring with AAD that binds the KMS key id and the version number
(``backing_key_aad``), so a wrapped value copied onto another key's or version's row does not
unwrap: an attacker with write access to the database cannot make key A decrypt with key B's
material.

    AAD = b"regionkms-backing-key-v1\\x00" || UTF-8(key id) || b"\\x00" || u32be(version)

Every value at rest is sealed by the root keyring (``keyring.py``: version byte, nonce,
AES-256-GCM, AAD prefixed with ``regionkms-root-v1``) under one of these AADs, all defined here:

    backing key version     backing_key_aad(key id, version)   (above)
    access-key secret       access_key_aad(access key id)      b"access_key\x00" || UTF-8(id)
    import wrapping key     private_key_aad(key id, token id)  b"regionkms-import-wrapping-key-v1\x00" ||
                                                                ASCII(key id) || b"\x00" || ASCII(token id)
    region identity key     REGION_IDENTITY_AAD                b"region-identity-ed25519"
    region HPKE key         REGION_ENCRYPTION_AAD              b"region-encryption-hpke"
    region mTLS key         REGION_TLS_KEY_AAD                 b"region-tls-key"

Material that crosses regions is sealed with HPKE instead (``hpke.py``, whose ``info`` binds
key id, version and both regions). These byte strings are stored formats: never change one.

Unwrapped material lives only in a ``SecretMaterial`` (Tink's ``KeysetHandle`` idea, STYLE.md
item 10): it refuses to be printed or pickled, and the raw bytes are reachable only through
``material()``, which a reviewer can grep for. ``UnwrappedKey`` is the AES-256 kind, with the
``seal``/``unseal`` here (through the key's cached ``aead.AeadKey``); the other kinds are opened
only by ``crypto.keymaterial``'s handles (``crypto.mac``, ``crypto.asymmetric``).
"""

from __future__ import annotations

import struct

from regiond.crypto import aead
from regiond.crypto.errors import DecryptError, KeyringError
from regiond.crypto.keyring import RootKeyring

__all__ = [
    "BACKING_KEY_BYTES",
    "MAX_MATERIAL_BYTES",
    "REGION_ENCRYPTION_AAD",
    "REGION_IDENTITY_AAD",
    "REGION_TLS_KEY_AAD",
    "SecretMaterial",
    "UnwrappedKey",
    "access_key_aad",
    "backing_key_aad",
    "new_backing_key",
    "private_key_aad",
    "seal",
    "unseal",
    "unwrap",
    "unwrap_material",
    "wrap",
]

BACKING_KEY_BYTES = aead.KEY_BYTES  # AES-256
_AAD_PREFIX = b"regionkms-backing-key-v1\x00"
_ACCESS_KEY_AAD_PREFIX = b"access_key\x00"
_IMPORT_PRIVATE_KEY_AAD_PREFIX = b"regionkms-import-wrapping-key-v1\x00"
REGION_IDENTITY_AAD = b"region-identity-ed25519"
REGION_ENCRYPTION_AAD = b"region-encryption-hpke"
REGION_TLS_KEY_AAD = b"region-tls-key"
_U32 = struct.Struct(">I")


MAX_MATERIAL_BYTES = 8192
"""Upper bound on any kind of key material (an RSA-4096 PKCS#8 key is about 2.4 KB)."""


class SecretMaterial:
    """Key material of any kind in memory: never printed, compared, copied by pickle, or logged."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if not 1 <= len(material) <= MAX_MATERIAL_BYTES:
            raise ValueError("key material has an impossible length")
        self._material = bytes(material)

    def material(self) -> bytes:
        """The raw key bytes, for the primitive that uses them and for wrapping; nothing else."""
        return self._material

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("key material cannot be pickled")

    def __eq__(self, other: object) -> bool:
        # Identity only: a value comparison could be used as a timing oracle on key bytes.
        return self is other

    def __hash__(self) -> int:
        return id(self)


class UnwrappedKey(SecretMaterial):
    """A symmetric backing key (AES-256) in memory, with its cipher built on first use."""

    __slots__ = ("_aead",)

    def __init__(self, material: bytes) -> None:
        if len(material) != BACKING_KEY_BYTES:
            raise ValueError("backing key material must be 32 bytes")
        self._material = bytes(material)
        self._aead: aead.AeadKey | None = None  # built on first use (most cached keys may never be used)

    def _cipher(self) -> aead.AeadKey:
        """This key's AES-GCM cipher, built once: for ``seal``/``unseal`` below only."""
        cipher = self._aead
        if cipher is None:
            cipher = self._aead = aead.AeadKey(self.material())
        return cipher


def backing_key_aad(key_id: str, version: int) -> bytes:
    """The AAD that ties a wrapped backing key to its KMS key id and version number."""
    if version < 1:
        raise ValueError("backing versions start at 1")
    return _AAD_PREFIX + key_id.encode("ascii") + b"\x00" + _U32.pack(version)


def access_key_aad(access_key_id: str) -> bytes:
    """The AAD of a stored access-key secret (the home region's and every replica's)."""
    return _ACCESS_KEY_AAD_PREFIX + access_key_id.encode()


def private_key_aad(key_id: str, token_id: str) -> bytes:
    """The AAD that ties a stored import wrapping private key to its KMS key and import token."""
    return _IMPORT_PRIVATE_KEY_AAD_PREFIX + key_id.encode("ascii") + b"\x00" + token_id.encode("ascii")


def new_backing_key() -> UnwrappedKey:
    """Fresh random material for a new key or a rotation (os.urandom via cryptography)."""
    return UnwrappedKey(aead.generate_key())


def wrap(keyring: RootKeyring, key_id: str, version: int, key: SecretMaterial) -> bytes:
    """Seal ``key`` (of any kind) under the root key for storage in ``key_versions.material_wrapped``."""
    return keyring.wrap(key.material(), backing_key_aad(key_id, version))


def unwrap_material(keyring: RootKeyring, key_id: str, version: int, wrapped: bytes) -> SecretMaterial:
    """Open stored material of any kind (replication seals it as it is; ``crypto.keymaterial``
    opens non-symmetric kinds); ``KeyringError`` if it was not wrapped for this key and version."""
    material = keyring.unwrap(wrapped, backing_key_aad(key_id, version))
    try:
        return SecretMaterial(material)
    except ValueError as exc:
        raise KeyringError("unwrapped key material has an impossible length") from exc


def unwrap(keyring: RootKeyring, key_id: str, version: int, wrapped: bytes) -> UnwrappedKey:
    """Open a stored backing key; ``KeyringError`` if it was not wrapped for this key and version."""
    material = keyring.unwrap(wrapped, backing_key_aad(key_id, version))
    try:
        return UnwrappedKey(material)
    except ValueError as exc:
        raise KeyringError("unwrapped backing key has the wrong length") from exc


def seal(key: UnwrappedKey, plaintext: bytes, aad: bytes) -> aead.Sealed:
    """AES-256-GCM under a backing key; the nonce is chosen here (crypto.aead), never by callers."""
    return key._cipher().seal(plaintext, aad)


def unseal(key: UnwrappedKey, sealed: bytes, aad: bytes) -> bytes:
    """Open ``nonce || ciphertext || tag``; ``DecryptError`` on any failure (one failure for all causes)."""
    try:
        return key._cipher().unseal(aead.Sealed.from_bytes(sealed), aad)
    except ValueError:  # too short to be sealed
        raise DecryptError from None
