"""The one error root of ``regiond.crypto``; every failure here raises one of these.

    CryptoError
    ├── DecryptError              a sealed value did not open (tampered, truncated, wrong key or AAD):
    │   │                         one class and one message for every cause (cryptography's InvalidTag)
    │   │                         raised by aead.unseal / AeadKey.unseal and wrap.unseal
    │   ├── SealedMaterialError   HPKE-sealed key material did not open (hpke.open_from_region)
    │   ├── ImportUnwrapError     EncryptedKeyMaterial did not open under the wrapping key (import_wrap)
    │   └── DecryptionError       an asymmetric ciphertext did not open (asymmetric.py; also an AsymmetricError)
    ├── KeyringError              the root key is missing or malformed, or a stored value does not
    │                             unwrap under it (keyring, wrap.unwrap)
    ├── PeerIdentityError         a peer certificate does not name exactly one region (pki; also a ValueError)
    ├── (keymaterial, mac) MaterialError   imported material does not fit the key spec (also a ValueError)
    └── AsymmetricError           asymmetric keys (asymmetric.py): DecryptionError (above), MaterialError
                                  and PeerKeyError (ValueErrors)

The module-specific classes live beside the code that raises them (``asymmetric.py``,
``keymaterial.py``, ``mac.py``); the rest here, importable from their modules as well.
Caller bugs (an empty key id, a version out of range, a malformed public key handed in by code)
stay ``ValueError``/``TypeError``: they are not failures of cryptography but of the caller.
Messages never carry key bytes, plaintext or anything derived from them.
"""

from __future__ import annotations

__all__ = [
    "CryptoError",
    "DecryptError",
    "ImportUnwrapError",
    "KeyringError",
    "PeerIdentityError",
    "SealedMaterialError",
]

_DECRYPT_FAILED = "decryption failed"
_OPEN_FAILED = "sealed key material could not be opened"


class CryptoError(Exception):
    """Base of every failure raised by ``regiond.crypto``."""


class DecryptError(CryptoError):
    """A sealed value did not open; deliberately the same for every cause."""

    def __init__(self, message: str = _DECRYPT_FAILED) -> None:
        super().__init__(message)


class SealedMaterialError(DecryptError):
    """Sealed key material did not open: tampered, truncated, misaddressed or wrong key.

    Deliberately one class with one message, whatever went wrong (see ``crypto/hpke.py``).
    """

    def __init__(self) -> None:
        super().__init__(_OPEN_FAILED)


class ImportUnwrapError(DecryptError):
    """``EncryptedKeyMaterial`` did not open under the wrapping key (one failure for every cause)."""

    def __init__(self) -> None:
        super().__init__()


class KeyringError(CryptoError):
    """The root key is missing, malformed, or a wrapped value does not unwrap."""


class PeerIdentityError(CryptoError, ValueError):
    """The authenticated peer certificate does not name exactly one region."""
