"""Sign and Verify: which signing algorithm and message type a key accepts, and the length rules.

From the ``MessageType`` and ``SigningAlgorithm`` documentation of Sign/Verify in botocore's
model:

- ``MessageType`` defaults to ``RAW``: KMS hashes the message as the algorithm says.
- ``DIGEST``: the message is already hashed; its length must be the algorithm's hash length
  (32 bytes for ``*_SHA_256``, 48 for ``*_SHA_384``, 64 for ``*_SHA_512``).
- ``EXTERNAL_MU``: only for ``ML_DSA_SHAKE_256``; the message is the 64-byte representative
  mu of FIPS 204 section 6.2 (the ML-DSA "DIGEST" is this, so ``DIGEST`` is refused for ML-DSA).
- ``ECC_NIST_EDWARDS25519``: ``ED25519_SHA_512`` (PureEdDSA) requires ``RAW``;
  ``ED25519_PH_SHA_512`` (HashEdDSA, Ed25519ph) requires ``DIGEST`` (a 64-byte SHA-512 digest)
  and still applies the Ed25519ph prehash to it, "so the input is hashed twice".

An algorithm the key spec does not support is ``InvalidKeyUsageException`` ("the signing
algorithm must be compatible with the KMS key spec", as for encryption algorithms); a message
type or length that breaks a rule above is ``ValidationException``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple

from regiond.domain.key import Key, SigningAlgorithm
from regiond.errors import InvalidKeyUsageException, ValidationException

__all__ = ["DIGEST_BYTES", "EXTERNAL_MU_BYTES", "MessageType", "SigningInput", "signing_input"]


class MessageType(enum.StrEnum):
    """``MessageType``."""

    RAW = "RAW"
    DIGEST = "DIGEST"
    EXTERNAL_MU = "EXTERNAL_MU"


EXTERNAL_MU_BYTES = 64

_A = SigningAlgorithm
DIGEST_BYTES: Mapping[SigningAlgorithm, int] = {
    _A.RSASSA_PSS_SHA_256: 32, _A.RSASSA_PSS_SHA_384: 48, _A.RSASSA_PSS_SHA_512: 64,
    _A.RSASSA_PKCS1_V1_5_SHA_256: 32, _A.RSASSA_PKCS1_V1_5_SHA_384: 48, _A.RSASSA_PKCS1_V1_5_SHA_512: 64,
    _A.ECDSA_SHA_256: 32, _A.ECDSA_SHA_384: 48, _A.ECDSA_SHA_512: 64,
    _A.ED25519_PH_SHA_512: 64, _A.SM2DSA: 32,
}  # fmt: skip
"""Hash length of each algorithm that accepts ``MessageType`` DIGEST."""

_RAW_ONLY = frozenset({_A.ED25519_SHA_512})
_DIGEST_ONLY = frozenset({_A.ED25519_PH_SHA_512})


class SigningInput(NamedTuple):
    """A checked Sign/Verify request: what the crypto layer signs or verifies."""

    algorithm: SigningAlgorithm
    message_type: MessageType
    message: bytes


def signing_input(key: Key, algorithm: str, message_type: str | None, message: bytes) -> SigningInput:
    """Check ``algorithm`` against the key and ``message`` against the message-type rules.

    ``key`` must already be a SIGN_VERIFY key (the service's key-usage check comes first).
    """
    chosen = SigningAlgorithm(algorithm)
    if chosen not in key.signing_algorithms:
        raise InvalidKeyUsageException(f"Algorithm {chosen} is incompatible with key spec {key.key_spec}.")
    kind = MessageType(message_type or MessageType.RAW.value)
    if kind is MessageType.EXTERNAL_MU:
        if chosen is not _A.ML_DSA_SHAKE_256:
            raise ValidationException(f"MessageType EXTERNAL_MU is valid only with ML_DSA_SHAKE_256, not {chosen}.")
        if len(message) != EXTERNAL_MU_BYTES:
            raise ValidationException(
                f"With MessageType EXTERNAL_MU the message must be the {EXTERNAL_MU_BYTES}-byte mu of FIPS 204, "
                f"not {len(message)} bytes."
            )
    elif kind is MessageType.DIGEST:
        if chosen is _A.ML_DSA_SHAKE_256:
            raise ValidationException(
                "ML_DSA_SHAKE_256 does not accept MessageType DIGEST: use RAW, or EXTERNAL_MU with a 64-byte mu."
            )
        if chosen in _RAW_ONLY:
            raise ValidationException(f"{chosen} signing algorithm requires MessageType RAW.")
        expected = DIGEST_BYTES[chosen]
        if len(message) != expected:
            raise ValidationException(
                f"Digest is invalid length for algorithm {chosen}: expected {expected} bytes, got {len(message)}."
            )
    elif chosen in _DIGEST_ONLY:
        raise ValidationException(f"{chosen} signing algorithm requires MessageType DIGEST.")
    return SigningInput(chosen, kind, message)
