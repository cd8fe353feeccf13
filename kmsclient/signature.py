"""The ECDSA P-384 / SHA-384 message signature of suite 0x0578 (footer), computed as bytes stream by.

The signing key is made for one message and dropped after it; its public half travels in the
encryption context (``aws-crypto-public-key``: the compressed point, base64). Header and body are
hashed as they are written or read, so nothing is held in memory to sign or verify a message.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kmsclient.errors import MessageError, SignatureError

_CURVE = ec.SECP384R1()
_ALGORITHM = ec.ECDSA(Prehashed(hashes.SHA384()))


class SigningKey:
    """A fresh P-384 key for one message; ``public_key_b64`` goes into the encryption context."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(_CURVE)
        point = self._key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
        self.public_key_b64 = base64.b64encode(point).decode()

    def __repr__(self) -> str:
        return "SigningKey(<redacted>)"

    def __reduce__(self) -> str:
        raise TypeError("signing keys are not picklable")

    def signer(self) -> Signer:
        return Signer(self._key)


class Signer:
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._hash = hashes.Hash(hashes.SHA384())

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def finish(self) -> bytes:
        return self._key.sign(self._hash.finalize(), _ALGORITHM)


class Verifier:
    def __init__(self, public_key_b64: str) -> None:
        try:
            point = base64.b64decode(public_key_b64, validate=True)
            self._key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, point)
        except (binascii.Error, ValueError):
            raise MessageError("the message's verification key is not a P-384 point") from None
        self._hash = hashes.Hash(hashes.SHA384())

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def verify(self, signature: bytes) -> None:
        try:
            self._key.verify(signature, self._hash.finalize(), _ALGORITHM)
        except InvalidSignature:
            raise SignatureError() from None
