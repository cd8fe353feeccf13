"""domain.keyspec and domain.signing: the spec/usage table and the Sign/Verify message rules, as AWS documents them."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem

from regiond.domain.key import Key, KeySpec, KeyState, KeyUsage, SigningAlgorithm
from regiond.domain.keyspec import (
    UNAVAILABLE,
    VALID_USAGES,
    key_usage_for,
    require_available,
    require_data_key_pair_spec,
)
from regiond.domain.signing import DIGEST_BYTES, MessageType, signing_input
from regiond.errors import InvalidKeyUsageException, UnsupportedOperationException, ValidationException

# The model's CreateKey KeyUsage documentation, spec family by spec family.
AWS_TABLE = {
    "SYMMETRIC_DEFAULT": {"ENCRYPT_DECRYPT"},
    **{f"HMAC_{n}": {"GENERATE_VERIFY_MAC"} for n in (224, 256, 384, 512)},
    **{f"RSA_{n}": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"} for n in (2048, 3072, 4096)},
    **{f"ECC_NIST_P{n}": {"SIGN_VERIFY", "KEY_AGREEMENT"} for n in (256, 384, 521)},
    "ECC_SECG_P256K1": {"SIGN_VERIFY"}, "ECC_NIST_EDWARDS25519": {"SIGN_VERIFY"},
    **{f"ML_DSA_{n}": {"SIGN_VERIFY"} for n in (44, 65, 87)},
    **{f"ML_KEM_{n}": {"ENCAPSULATE_DECAPSULATE"} for n in (512, 768, 1024)},
    "SM2": {"ENCRYPT_DECRYPT", "SIGN_VERIFY", "KEY_AGREEMENT"},
}  # fmt: skip


def test_the_table_covers_every_spec_of_the_model_as_aws_documents_it() -> None:
    assert {s.value for s in KeySpec} == set(AWS_TABLE)
    assert {s.value: {u.value for u in us} for s, us in VALID_USAGES.items()} == AWS_TABLE


@pytest.mark.parametrize(("spec", "usage"), list(itertools.product(KeySpec, KeyUsage)))
def test_key_usage_for_accepts_exactly_the_table(spec: KeySpec, usage: KeyUsage) -> None:
    if usage.value in AWS_TABLE[spec.value]:
        assert key_usage_for(spec, usage.value) is usage
    else:
        with pytest.raises(ValidationException, match="not compatible"):
            key_usage_for(spec, usage.value)


def test_key_usage_is_required_except_for_symmetric_keys() -> None:
    assert key_usage_for(KeySpec.SYMMETRIC_DEFAULT, None) is KeyUsage.ENCRYPT_DECRYPT
    for spec in KeySpec:
        if spec is not KeySpec.SYMMETRIC_DEFAULT:
            with pytest.raises(ValidationException, match="required"):
                key_usage_for(spec, None)


def test_unavailable_specs_are_refused_with_their_reason() -> None:
    assert set(UNAVAILABLE) == {KeySpec.SM2, KeySpec.ML_KEM_512}
    for spec in UNAVAILABLE:
        with pytest.raises(UnsupportedOperationException, match=spec.value):
            require_available(spec)
        with pytest.raises(UnsupportedOperationException):
            require_data_key_pair_spec(spec.value)
    with pytest.raises(ValidationException):
        require_data_key_pair_spec("HMAC_256")
    assert require_data_key_pair_spec("ECC_NIST_EDWARDS25519") is KeySpec.ECC_NIST_EDWARDS25519


def test_ml_kem_512_is_refused_while_cryptography_lacks_it() -> None:
    """docs/KEY_TYPES.md: refused because ``cryptography`` has no ML-KEM-512 and no package on the index
    is a sound substitute. This fails the day ``cryptography`` ships it, so the refusal is revisited."""
    assert not hasattr(mlkem, "MLKEM512PrivateKey") and hasattr(mlkem, "MLKEM768PrivateKey")
    with pytest.raises(UnsupportedOperationException) as info:
        require_available(KeySpec.ML_KEM_512)
    assert "constant-time" in str(info.value) and "Use ML_KEM_768 or ML_KEM_1024" in str(info.value)
    doc = (Path(__file__).parents[2] / "docs" / "KEY_TYPES.md").read_text()
    for package in ("pqcrypto", "mlkem", "kyber-py", "keeper-mlkem", "kyber-pqc", "liboqs-python", "fips203"):
        assert f"| `{package}` " in doc, package


def _key(spec: KeySpec) -> Key:
    return Key(key_id="1234abcd-12ab-34cd-56ef-1234567890ab", account="111122223333", region="us-east-1",
               creation_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), key_state=KeyState.ENABLED,
               key_usage=KeyUsage.SIGN_VERIFY, key_spec=spec)  # fmt: skip


_A = SigningAlgorithm


@pytest.mark.parametrize(
    ("spec", "algorithm", "message_type", "size", "error"),
    [
        (KeySpec.ECC_NIST_P256, _A.ECDSA_SHA_256, None, 4096, None),
        (KeySpec.ECC_NIST_P256, _A.ECDSA_SHA_256, "DIGEST", 32, None),
        (KeySpec.ECC_NIST_P256, _A.ECDSA_SHA_256, "DIGEST", 48, ValidationException),
        (KeySpec.ECC_NIST_P256, _A.ECDSA_SHA_384, "RAW", 5, InvalidKeyUsageException),
        (KeySpec.ECC_NIST_P256, _A.ECDSA_SHA_256, "EXTERNAL_MU", 64, ValidationException),
        (KeySpec.RSA_4096, _A.RSASSA_PSS_SHA_512, "DIGEST", 64, None),
        (KeySpec.RSA_4096, _A.RSASSA_PKCS1_V1_5_SHA_384, "DIGEST", 64, ValidationException),
        (KeySpec.RSA_4096, _A.ECDSA_SHA_512, "RAW", 5, InvalidKeyUsageException),
        (KeySpec.ECC_NIST_EDWARDS25519, _A.ED25519_SHA_512, "RAW", 5, None),
        (KeySpec.ECC_NIST_EDWARDS25519, _A.ED25519_SHA_512, "DIGEST", 64, ValidationException),
        (KeySpec.ECC_NIST_EDWARDS25519, _A.ED25519_PH_SHA_512, "DIGEST", 64, None),
        (KeySpec.ECC_NIST_EDWARDS25519, _A.ED25519_PH_SHA_512, None, 64, ValidationException),
        (KeySpec.ML_DSA_87, _A.ML_DSA_SHAKE_256, "RAW", 4096, None),
        (KeySpec.ML_DSA_87, _A.ML_DSA_SHAKE_256, "EXTERNAL_MU", 64, None),
        (KeySpec.ML_DSA_87, _A.ML_DSA_SHAKE_256, "EXTERNAL_MU", 32, ValidationException),
        (KeySpec.ML_DSA_87, _A.ML_DSA_SHAKE_256, "DIGEST", 64, ValidationException),
        (KeySpec.ECC_SECG_P256K1, _A.SM2DSA, "RAW", 5, InvalidKeyUsageException),
    ],
)  # fmt: skip
def test_signing_rules(
    spec: KeySpec, algorithm: SigningAlgorithm, message_type: str | None, size: int, error: type[Exception] | None
) -> None:
    if error is None:
        checked = signing_input(_key(spec), algorithm.value, message_type, b"m" * size)
        assert checked.algorithm is algorithm
        assert checked.message_type is MessageType(message_type or "RAW")
    else:
        with pytest.raises(error):
            signing_input(_key(spec), algorithm.value, message_type, b"m" * size)


def test_digest_lengths_are_the_hash_lengths() -> None:
    for algorithm, size in DIGEST_BYTES.items():
        assert size == {"256": 32, "384": 48, "512": 64}.get(algorithm.value[-3:], 32)
