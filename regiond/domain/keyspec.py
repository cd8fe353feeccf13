"""Key specs and key usages: which pairs exist, which ones regionkms makes, and their families.

From the KMS Developer Guide's "Key spec reference" and the ``KeyUsage`` documentation of
``CreateKey`` in botocore's model::

    KeySpec                         KeyUsage
    SYMMETRIC_DEFAULT               ENCRYPT_DECRYPT (the default; KeyUsage may be omitted)
    HMAC_224/256/384/512            GENERATE_VERIFY_MAC
    RSA_2048/3072/4096              ENCRYPT_DECRYPT or SIGN_VERIFY
    ECC_NIST_P256/P384/P521         SIGN_VERIFY or KEY_AGREEMENT
    ECC_SECG_P256K1                 SIGN_VERIFY
    ECC_NIST_EDWARDS25519           SIGN_VERIFY
    ML_DSA_44/65/87                 SIGN_VERIFY
    ML_KEM_512/768/1024             ENCAPSULATE_DECAPSULATE
    SM2                             ENCRYPT_DECRYPT, SIGN_VERIFY or KEY_AGREEMENT

"This parameter is optional when you are creating a symmetric encryption KMS key; otherwise, it
is required": a non-symmetric spec without ``KeyUsage``, and any pair not in the table, is a
``ValidationException``.

Specs in the model that regionkms does not make (``UNAVAILABLE``) are refused with
``UnsupportedOperationException`` and the reason: SM2 exists only in AWS's China Regions, and
ML-KEM-512 has no maintained, constant-time implementation available to this service (the
``cryptography`` package offers ML-KEM-768 and ML-KEM-1024 only; docs/KEY_TYPES.md says which
packages were considered and why none is used). The same rule covers ``KeyPairSpec`` in GenerateDataKeyPair.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from regiond.domain.key import KeySpec, KeyUsage
from regiond.errors import UnsupportedOperationException, ValidationException

__all__ = [
    "DATA_KEY_PAIR_SPECS",
    "LEGACY_CUSTOMER_MASTER_KEY_SPECS",
    "UNAVAILABLE",
    "VALID_USAGES",
    "KeyFamily",
    "family",
    "key_usage_for",
    "require_available",
    "require_data_key_pair_spec",
]


class KeyFamily(enum.Enum):
    """What kind of material a spec holds, and so which crypto module opens it."""

    SYMMETRIC = "symmetric"  # AES-256-GCM backing keys (crypto.wrap)
    HMAC = "hmac"  # crypto.mac
    RSA = "rsa"  # crypto.asymmetric, as are the rest
    ECC = "ecc"  # NIST curves and secp256k1 (ECDSA, ECDH)
    ED25519 = "ed25519"
    ML_DSA = "ml_dsa"
    ML_KEM = "ml_kem"
    SM2 = "sm2"


_FAMILY: Mapping[KeySpec, KeyFamily] = MappingProxyType(
    {
        KeySpec.SYMMETRIC_DEFAULT: KeyFamily.SYMMETRIC,
        **{s: KeyFamily.HMAC for s in (KeySpec.HMAC_224, KeySpec.HMAC_256, KeySpec.HMAC_384, KeySpec.HMAC_512)},
        **{s: KeyFamily.RSA for s in (KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096)},
        **{
            s: KeyFamily.ECC
            for s in (KeySpec.ECC_NIST_P256, KeySpec.ECC_NIST_P384, KeySpec.ECC_NIST_P521, KeySpec.ECC_SECG_P256K1)
        },
        KeySpec.ECC_NIST_EDWARDS25519: KeyFamily.ED25519,
        **{s: KeyFamily.ML_DSA for s in (KeySpec.ML_DSA_44, KeySpec.ML_DSA_65, KeySpec.ML_DSA_87)},
        **{s: KeyFamily.ML_KEM for s in (KeySpec.ML_KEM_512, KeySpec.ML_KEM_768, KeySpec.ML_KEM_1024)},
        KeySpec.SM2: KeyFamily.SM2,
    }
)

_E, _S, _M, _A, _K = (
    KeyUsage.ENCRYPT_DECRYPT,
    KeyUsage.SIGN_VERIFY,
    KeyUsage.GENERATE_VERIFY_MAC,
    KeyUsage.KEY_AGREEMENT,
    KeyUsage.ENCAPSULATE_DECAPSULATE,
)

VALID_USAGES: Mapping[KeySpec, frozenset[KeyUsage]] = MappingProxyType(
    {
        KeySpec.SYMMETRIC_DEFAULT: frozenset({_E}),
        **{s: frozenset({_M}) for s, f in _FAMILY.items() if f is KeyFamily.HMAC},
        **{s: frozenset({_E, _S}) for s, f in _FAMILY.items() if f is KeyFamily.RSA},
        KeySpec.ECC_NIST_P256: frozenset({_S, _A}),
        KeySpec.ECC_NIST_P384: frozenset({_S, _A}),
        KeySpec.ECC_NIST_P521: frozenset({_S, _A}),
        KeySpec.ECC_SECG_P256K1: frozenset({_S}),
        KeySpec.ECC_NIST_EDWARDS25519: frozenset({_S}),
        **{s: frozenset({_S}) for s, f in _FAMILY.items() if f is KeyFamily.ML_DSA},
        **{s: frozenset({_K}) for s, f in _FAMILY.items() if f is KeyFamily.ML_KEM},
        KeySpec.SM2: frozenset({_E, _S, _A}),
    }
)
"""KeySpec -> the key usages AWS allows with it (the table in the module docstring)."""

UNAVAILABLE: Mapping[KeySpec, str] = MappingProxyType(
    {
        KeySpec.SM2: "The SM2 key spec is available only in the AWS China Regions; regionkms does not offer it.",
        KeySpec.ML_KEM_512: (
            "The ML_KEM_512 key spec is not supported by regionkms: its cryptography library offers "
            "ML-KEM-768 and ML-KEM-1024 only, and no maintained, constant-time ML-KEM-512 implementation "
            "is available to it. Use ML_KEM_768 or ML_KEM_1024."
        ),
    }
)
"""Specs of the model that regionkms refuses, with the reason it gives."""

DATA_KEY_PAIR_SPECS = frozenset(
    {
        KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096, KeySpec.ECC_NIST_P256, KeySpec.ECC_NIST_P384,
        KeySpec.ECC_NIST_P521, KeySpec.ECC_SECG_P256K1, KeySpec.SM2, KeySpec.ECC_NIST_EDWARDS25519,
        KeySpec.ML_KEM_512, KeySpec.ML_KEM_768, KeySpec.ML_KEM_1024,
    }
)  # fmt: skip
"""``DataKeyPairSpec``: the KeySpec values GenerateDataKeyPair may make (the model's enum)."""

LEGACY_CUSTOMER_MASTER_KEY_SPECS = frozenset(
    {
        KeySpec.RSA_2048, KeySpec.RSA_3072, KeySpec.RSA_4096, KeySpec.ECC_NIST_P256, KeySpec.ECC_NIST_P384,
        KeySpec.ECC_NIST_P521, KeySpec.ECC_SECG_P256K1, KeySpec.SYMMETRIC_DEFAULT, KeySpec.HMAC_224,
        KeySpec.HMAC_256, KeySpec.HMAC_384, KeySpec.HMAC_512, KeySpec.SM2,
    }
)  # fmt: skip
"""The deprecated ``CustomerMasterKeySpec`` enum: KeyMetadata carries it only for these specs
(its enum has no value for the newer ones, which AWS reports in ``KeySpec`` alone)."""


def family(spec: KeySpec) -> KeyFamily:
    return _FAMILY[spec]


def require_available(spec: KeySpec) -> None:
    """``UnsupportedOperationException`` for a spec of the model that regionkms does not make."""
    reason = UNAVAILABLE.get(spec)
    if reason is not None:
        raise UnsupportedOperationException(reason)


def key_usage_for(spec: KeySpec, usage: str | None) -> KeyUsage:
    """The key usage of a new key of ``spec``: ``usage`` if the pair is valid, the default for a
    symmetric key when it is omitted, else ``ValidationException``."""
    if usage is None:
        if spec is KeySpec.SYMMETRIC_DEFAULT:
            return KeyUsage.ENCRYPT_DECRYPT
        allowed = " or ".join(sorted(VALID_USAGES[spec]))
        raise ValidationException(f"KeyUsage is required for KeySpec {spec}: specify {allowed}.")
    chosen = KeyUsage(usage)
    if chosen not in VALID_USAGES[spec]:
        raise ValidationException(f"KeyUsage {chosen} is not compatible with KeySpec {spec}")
    return chosen


def require_data_key_pair_spec(value: str) -> KeySpec:
    """The ``KeyPairSpec`` of GenerateDataKeyPair(WithoutPlaintext) as a KeySpec, if regionkms makes it."""
    spec = KeySpec(value)
    if spec not in DATA_KEY_PAIR_SPECS:
        raise ValidationException(f"KeyPairSpec {value} is not a data key pair spec")
    require_available(spec)
    return spec
