"""Ed25519 region identity: who sent a replication frame, who signed an audit digest.

mTLS tells a receiver which region is on the other end of a connection; the identity
signature tells it which region *wrote* a frame, which still holds after the frame has sat in
an outbox, passed a proxy or been relayed. Ed25519 (RFC 8032) is deterministic, needs no
nonce and has 32-byte keys, so the public half fits in cluster config.

Key formats are the raw RFC 8032 encodings: a 32-byte private seed and a 32-byte public key.
Callers that sign several kinds of message (frames, audit digests) must prefix a context
label of their own so that one signature can never be replayed as the other.

``verify`` returns a bool rather than raising, and uses cryptography's verify (constant
time with respect to the signature) rather than any comparison of our own.
"""

from __future__ import annotations

import hashlib
from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = [
    "PRIVATE_KEY_BYTES",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "RegionIdentityKey",
    "fingerprint",
    "verify",
]

PRIVATE_KEY_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class RegionIdentityKey:
    """A region's private signing key.

    Refuses to be printed or pickled; the raw seed leaves only through ``material()`` (to be
    wrapped by the region root key before it is stored), so every escape is greppable.
    """

    __slots__ = ("_key", "_public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        # Private constructor: use generate() or from_material().
        self._key = key
        self._public = key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> RegionIdentityKey:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_material(cls, material: bytes) -> RegionIdentityKey:
        """Rebuild from the 32-byte seed given by ``material()``; ``ValueError`` if malformed."""
        if len(material) != PRIVATE_KEY_BYTES:
            raise ValueError("malformed region identity private key")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(material)))

    def material(self) -> bytes:
        """The raw 32-byte private seed. Wrap it with the root key before storing."""
        return self._key.private_bytes_raw()

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key, as other regions configure it."""
        return self._public

    def fingerprint(self) -> str:
        return fingerprint(self._public)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        return self._key.sign(bytes(message))

    def __repr__(self) -> str:
        return f"RegionIdentityKey(<redacted>, public={fingerprint(self._public)[:16]})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("RegionIdentityKey cannot be pickled; use material() explicitly")


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only if ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    A malformed public key or signature is simply ``False``: the caller's only decision is
    accept or refuse, and the reason must not become an oracle.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(bytes(public_key))
        key.verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True


def fingerprint(public_key: bytes) -> str:
    """SHA-256 hex of the raw public key: a stable, log-safe name for a region identity."""
    return hashlib.sha256(bytes(public_key)).hexdigest()
