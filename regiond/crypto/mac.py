"""HMAC KMS keys: their material and the GenerateMac / VerifyMac primitives (RFC 2104).

Material is the raw HMAC key. A key made by regionkms has the length its spec names (the
"Key spec reference": HMAC_224 is a 224-bit key, and so on). Imported material may be longer,
up to the hash function's block size, as AWS's "Requirements for imported key material" allow::

    HMAC_224  28-64 bytes     HMAC_256  32-64 bytes
    HMAC_384  48-128 bytes    HMAC_512  64-128 bytes

``MacKey`` holds the material (redacted ``repr``, no pickling, through ``wrap.SecretMaterial``).
``verify`` recomputes the tag and compares in constant time (cryptography's ``HMAC.verify``);
a tag of the wrong length simply does not verify.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from regiond.crypto.errors import CryptoError
from regiond.crypto.wrap import SecretMaterial
from regiond.domain.key import KeySpec, MacAlgorithm

__all__ = ["IMPORT_BYTES", "KEY_BYTES", "MacKey", "MaterialError", "check_material", "generate"]

KEY_BYTES: Mapping[KeySpec, int] = MappingProxyType(
    {KeySpec.HMAC_224: 28, KeySpec.HMAC_256: 32, KeySpec.HMAC_384: 48, KeySpec.HMAC_512: 64}
)
"""Length of the material regionkms generates for each HMAC spec."""

IMPORT_BYTES: Mapping[KeySpec, tuple[int, int]] = MappingProxyType(
    {KeySpec.HMAC_224: (28, 64), KeySpec.HMAC_256: (32, 64), KeySpec.HMAC_384: (48, 128), KeySpec.HMAC_512: (64, 128)}
)
"""Inclusive length range of imported HMAC material per spec."""

_HASHES: Mapping[MacAlgorithm, type[hashes.HashAlgorithm]] = MappingProxyType(
    {
        MacAlgorithm.HMAC_SHA_224: hashes.SHA224,
        MacAlgorithm.HMAC_SHA_256: hashes.SHA256,
        MacAlgorithm.HMAC_SHA_384: hashes.SHA384,
        MacAlgorithm.HMAC_SHA_512: hashes.SHA512,
    }
)


class MaterialError(CryptoError, ValueError):
    """Imported material does not fit the key spec (its message names the rule, never the bytes)."""


def generate(spec: KeySpec) -> SecretMaterial:
    """Fresh random material for a new HMAC key of ``spec``."""
    return SecretMaterial(os.urandom(KEY_BYTES[spec]))


def check_material(spec: KeySpec, material: SecretMaterial) -> SecretMaterial:
    """``material`` if its length is allowed for imported ``spec`` material, else ``MaterialError``."""
    low, high = IMPORT_BYTES[spec]
    size = len(material.material())
    if not low <= size <= high:
        raise MaterialError(f"HMAC key material for {spec} must be {low} to {high} bytes, not {size} bytes")
    return material


class MacKey:
    """The material of one HMAC KMS key, usable only for its one algorithm."""

    __slots__ = ("_material", "algorithm")

    def __init__(self, algorithm: MacAlgorithm, material: SecretMaterial) -> None:
        self.algorithm = algorithm
        self._material = material

    def _hmac(self) -> hmac.HMAC:
        return hmac.HMAC(self._material.material(), _HASHES[self.algorithm]())

    def generate(self, message: bytes) -> bytes:
        tag = self._hmac()
        tag.update(message)
        return tag.finalize()

    def verify(self, message: bytes, mac: bytes) -> bool:
        """True if ``mac`` is this key's tag of ``message`` (constant-time comparison)."""
        tag = self._hmac()
        tag.update(message)
        try:
            tag.verify(mac)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return "MacKey(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a MAC key cannot be pickled")
