"""Key material of every key spec: make it, check imported material, and open it for use.

The one place that knows which crypto module owns which spec (``domain.keyspec.family``):

- SYMMETRIC_DEFAULT: 32 random bytes, an AES-256-GCM backing key (``crypto.wrap.UnwrappedKey``);
- HMAC_*: the HMAC key (``crypto.mac``);
- every asymmetric spec: a PKCS#8 private key (``crypto.asymmetric``).

Whatever the kind, the material is stored the same way: sealed by the root key with the key id
and version as AAD (``crypto.wrap.wrap``), replicated sealed to each destination region, and
identified by the same ``KeyMaterialId`` rule (``crypto.import_wrap.key_material_id``).

``handle`` turns opened non-symmetric material into the object the service uses
(``MacKey`` or ``PrivateKey``); both redact themselves and refuse pickling.
"""

from __future__ import annotations

from typing import TypeAlias

from regiond.crypto import asymmetric, mac, wrap
from regiond.crypto.errors import CryptoError
from regiond.domain.key import KeySpec, MacAlgorithm
from regiond.domain.keyspec import KeyFamily, family

__all__ = ["KeyHandle", "MaterialError", "check_imported", "generate", "handle"]

KeyHandle: TypeAlias = mac.MacKey | asymmetric.PrivateKey
"""What a non-symmetric KMS key's current material becomes in the key cache."""

_MAC_ALGORITHM = {
    KeySpec.HMAC_224: MacAlgorithm.HMAC_SHA_224,
    KeySpec.HMAC_256: MacAlgorithm.HMAC_SHA_256,
    KeySpec.HMAC_384: MacAlgorithm.HMAC_SHA_384,
    KeySpec.HMAC_512: MacAlgorithm.HMAC_SHA_512,
}


class MaterialError(CryptoError, ValueError):
    """Imported material that does not fit the key's spec (the message says why, never the bytes)."""


def generate(spec: KeySpec) -> wrap.SecretMaterial:
    """Fresh material for a new key of ``spec`` (asymmetric: CPU-heavy, call off the event loop)."""
    kind = family(spec)
    if kind is KeyFamily.SYMMETRIC:
        return wrap.new_backing_key()
    if kind is KeyFamily.HMAC:
        return mac.generate(spec)
    return asymmetric.generate(spec)


def check_imported(spec: KeySpec, material: wrap.SecretMaterial) -> wrap.SecretMaterial:
    """Imported material in the form this service stores for ``spec``, or ``MaterialError``."""
    kind = family(spec)
    try:
        if kind is KeyFamily.SYMMETRIC:
            return wrap.UnwrappedKey(material.material())
        if kind is KeyFamily.HMAC:
            return mac.check_material(spec, material)
        return asymmetric.check_material(spec, material)
    except ValueError as exc:
        if kind is KeyFamily.SYMMETRIC:
            raise MaterialError(
                f"symmetric key material must be {wrap.BACKING_KEY_BYTES * 8} bits ({wrap.BACKING_KEY_BYTES} bytes)"
            ) from None
        raise MaterialError(str(exc)) from None


def handle(spec: KeySpec, material: wrap.SecretMaterial) -> KeyHandle:
    """The usable form of a non-symmetric key's opened material (parsed on first use)."""
    if family(spec) is KeyFamily.HMAC:
        return mac.MacKey(_MAC_ALGORITHM[spec], material)
    return asymmetric.PrivateKey(spec, material)
