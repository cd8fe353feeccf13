"""The region's root key: the one key that wraps every other secret at rest.

Access-key secrets, backing key material and identity keys are stored in PostgreSQL
sealed under the root key (AES-256-GCM) with AAD that binds the row they belong to, so a
sealed value copied into another row does not unwrap. The root key itself never touches
the database. Sources: a file made by ``regiond init`` (mode 0600) or a base64 value given
through the environment (read by ``regiond.config``, never here).

Wrapped layout, version 1:  1 byte version (0x01) | 12-byte nonce | ciphertext | 16-byte tag
AAD = b"regionkms-root-v1\\x00" || caller's AAD.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Protocol

from regiond.crypto import aead
from regiond.crypto.errors import DecryptError, KeyringError

__all__ = [
    "ROOT_KEY_BYTES",
    "WRAP_VERSION",
    "AesRootKeyring",
    "KeyringError",
    "RootKeyring",
    "create_root_key_file",
    "env_keyring",
    "load_file_keyring",
]

WRAP_VERSION = 1
ROOT_KEY_BYTES = 32
_AAD_PREFIX = b"regionkms-root-v1\x00"


class RootKeyring(Protocol):
    @property
    def key_check(self) -> str: ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class AesRootKeyring:
    """A root key held in process memory (loaded from a file or the environment)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != ROOT_KEY_BYTES:
            raise KeyringError("root key must be 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return f"AesRootKeyring(key_check={self.key_check})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("the root keyring cannot be pickled")

    @property
    def key_check(self) -> str:
        """A non-secret fingerprint so operators can tell which root key a node holds."""
        return hashlib.sha256(b"regionkms-key-check\x00" + self._key).hexdigest()[:16]

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        sealed = aead.seal(self._key, plaintext, _AAD_PREFIX + aad)
        return bytes([WRAP_VERSION]) + sealed.to_bytes()

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        if not wrapped or wrapped[0] != WRAP_VERSION:
            raise KeyringError("unsupported wrapped value")
        try:
            return aead.unseal(self._key, aead.Sealed.from_bytes(wrapped[1:]), _AAD_PREFIX + aad)
        except (DecryptError, ValueError) as exc:
            raise KeyringError("wrapped value does not unwrap under this root key") from exc


def create_root_key_file(path: Path) -> None:
    """Write a new random root key to ``path`` with mode 0600; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(aead.generate_key())


def load_file_keyring(path: Path) -> AesRootKeyring:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyringError(f"root key file {path.name} must not be readable by group or others")
        return AesRootKeyring(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyringError(f"root key file {path.name} not found: run `regiond init` first") from exc


def env_keyring(value: str) -> AesRootKeyring:
    try:
        return AesRootKeyring(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise KeyringError("root key in the environment is not valid base64 of 32 bytes") from exc
