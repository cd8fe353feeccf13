"""AES-256-GCM sealing with nonces the caller never chooses.

cryptography's docs warn never to reuse a GCM nonce, so this wrapper makes a fresh
random 96-bit nonce for every ``seal`` and gives callers no way to pass one. ``unseal``
raises ``DecryptError`` (``crypto/errors.py``; cryptography's ``InvalidTag``, one failure for
every bad decrypt); callers map it to their own single error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from regiond.crypto.errors import DecryptError

NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Sealed:
    """A nonce and the ciphertext with its 16-byte tag appended."""

    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> Sealed:
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise ValueError("sealed data too short")
        return cls(data[:NONCE_BYTES], data[NONCE_BYTES:])


class AeadKey:
    """One AES-256-GCM key, ready to seal and unseal many times.

    ``AESGCM(key)`` costs about as much as sealing 1 KiB with it, so a key used on every
    request (a cached backing key) keeps one. The nonce rule is the module's: ``seal`` draws it.
    Like the key bytes it holds, it is never printed or pickled.
    """

    __slots__ = ("_aesgcm",)

    def __init__(self, key: bytes) -> None:
        self._aesgcm = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        return Sealed(nonce, self._aesgcm.encrypt(nonce, plaintext, aad))

    def unseal(self, sealed: Sealed, aad: bytes) -> bytes:
        try:
            return self._aesgcm.decrypt(sealed.nonce, sealed.ciphertext, aad)
        except InvalidTag:
            raise DecryptError from None

    def __repr__(self) -> str:
        return "AeadKey(<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an AEAD key cannot be pickled")


def generate_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> Sealed:
    nonce = os.urandom(NONCE_BYTES)
    return Sealed(nonce, AESGCM(key).encrypt(nonce, plaintext, aad))


def unseal(key: bytes, sealed: Sealed, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise DecryptError from None
