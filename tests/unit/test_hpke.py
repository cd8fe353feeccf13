"""HPKE sealing of key material between regions: round trips, binding, tampering, redaction."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from regiond.crypto import hpke
from regiond.crypto.hpke import (
    RegionEncryptionPrivateKey,
    RegionEncryptionPublicKey,
    SealedMaterialError,
    open_from_region,
    seal_to_region,
)

KEY_ID = "mrk-0123456789abcdef0123456789abcdef"
BINDING: dict[str, Any] = {
    "key_id": KEY_ID,
    "version": 3,
    "source_region": "us-east-1",
    "dest_region": "eu-west-1",
}
MATERIAL = bytes(range(32))


@pytest.fixture(scope="module")
def dest_key() -> RegionEncryptionPrivateKey:
    return RegionEncryptionPrivateKey.generate()


@pytest.fixture(scope="module")
def sealed(dest_key: RegionEncryptionPrivateKey) -> bytes:
    return seal_to_region(dest_key.public_key(), MATERIAL, **BINDING)


def test_seal_then_open_returns_material(dest_key: RegionEncryptionPrivateKey, sealed: bytes) -> None:
    assert open_from_region(dest_key, sealed, **BINDING) == MATERIAL


def test_sealed_blob_has_documented_layout(sealed: bytes) -> None:
    assert sealed[0] == hpke.FORMAT_V1
    assert len(sealed) == 1 + hpke.ENC_BYTES + len(MATERIAL) + hpke.TAG_BYTES
    assert MATERIAL not in sealed


def test_sealing_twice_gives_unrelated_blobs(dest_key: RegionEncryptionPrivateKey) -> None:
    a = seal_to_region(dest_key.public_key(), MATERIAL, **BINDING)
    b = seal_to_region(dest_key.public_key(), MATERIAL, **BINDING)
    assert a != b


def test_empty_and_large_plaintexts_round_trip(dest_key: RegionEncryptionPrivateKey) -> None:
    for plaintext in (b"", b"\x00" * 4096):
        blob = seal_to_region(dest_key.public_key(), plaintext, **BINDING)
        assert open_from_region(dest_key, blob, **BINDING) == plaintext


@pytest.mark.parametrize(
    "field,value",
    [
        ("key_id", "mrk-ffffffffffffffffffffffffffffffff"),
        ("version", 4),
        ("source_region", "ap-southeast-2"),
        ("dest_region", "ap-southeast-2"),
    ],
)
def test_open_with_other_binding_fails(
    dest_key: RegionEncryptionPrivateKey, sealed: bytes, field: str, value: object
) -> None:
    with pytest.raises(SealedMaterialError):
        open_from_region(dest_key, sealed, **{**BINDING, field: value})


def test_swapped_regions_fail(dest_key: RegionEncryptionPrivateKey, sealed: bytes) -> None:
    swapped = {**BINDING, "source_region": BINDING["dest_region"], "dest_region": BINDING["source_region"]}
    with pytest.raises(SealedMaterialError):
        open_from_region(dest_key, sealed, **swapped)


def test_info_encoding_is_length_prefixed_and_injective() -> None:
    a = hpke.info_for(key_id="ab", version=1, source_region="c", dest_region="d")
    b = hpke.info_for(key_id="a", version=1, source_region="bc", dest_region="d")
    assert a != b
    assert a == (
        b"regionkms/hpke/key-material/v1\x00"
        + b"\x00\x02ab"
        + b"\x00\x00\x00\x01"
        + b"\x00\x01c"
        + b"\x00\x01d"
    )


def test_open_with_another_regions_key_fails(sealed: bytes) -> None:
    other = RegionEncryptionPrivateKey.generate()
    with pytest.raises(SealedMaterialError):
        open_from_region(other, sealed, **BINDING)


def test_every_sampled_bit_flip_fails(dest_key: RegionEncryptionPrivateKey, sealed: bytes) -> None:
    rng = random.Random(1234)
    total_bits = len(sealed) * 8
    # Every bit of the format byte, the tail (ciphertext + tag) and a sample across the enc.
    positions = set(range(8)) | set(range(total_bits - (len(MATERIAL) + hpke.TAG_BYTES) * 8, total_bits))
    positions |= set(rng.sample(range(8, total_bits), 300))
    for bit in sorted(positions):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SealedMaterialError):
            open_from_region(dest_key, bytes(tampered), **BINDING)


@pytest.mark.parametrize("cut", [0, 1, 2, hpke.ENC_BYTES, hpke.ENC_BYTES + 1, hpke.MIN_SEALED_BYTES, -1])
def test_truncated_blob_fails(dest_key: RegionEncryptionPrivateKey, sealed: bytes, cut: int) -> None:
    with pytest.raises(SealedMaterialError):
        open_from_region(dest_key, sealed[:cut], **BINDING)


def test_appended_bytes_fail(dest_key: RegionEncryptionPrivateKey, sealed: bytes) -> None:
    with pytest.raises(SealedMaterialError):
        open_from_region(dest_key, sealed + b"\x00", **BINDING)


def test_failure_message_is_the_same_for_every_cause(
    dest_key: RegionEncryptionPrivateKey, sealed: bytes
) -> None:
    messages = set()
    for blob, binding in ((sealed[:5], BINDING), (sealed, {**BINDING, "version": 9})):
        with pytest.raises(SealedMaterialError) as info:
            open_from_region(dest_key, blob, **binding)
        messages.add(str(info.value))
        assert info.value.__cause__ is None
    assert len(messages) == 1


def test_private_key_material_round_trips(dest_key: RegionEncryptionPrivateKey, sealed: bytes) -> None:
    material = dest_key.material()
    assert len(material) == hpke.PRIVATE_KEY_BYTES
    restored = RegionEncryptionPrivateKey.from_material(material)
    assert restored.public_key() == dest_key.public_key()
    assert open_from_region(restored, sealed, **BINDING) == MATERIAL


def test_public_key_bytes_round_trip(dest_key: RegionEncryptionPrivateKey) -> None:
    raw = dest_key.public_key().to_bytes()
    assert len(raw) == hpke.PUBLIC_KEY_BYTES
    public = RegionEncryptionPublicKey.from_bytes(raw)
    assert public == dest_key.public_key()
    assert hash(public) == hash(dest_key.public_key())
    blob = seal_to_region(public, MATERIAL, **BINDING)
    assert open_from_region(dest_key, blob, **BINDING) == MATERIAL


@pytest.mark.parametrize(
    "mutate", [lambda b: b[:-1], lambda b: b + b"\x00", lambda b: b"\x02" + b[1:], lambda b: b""]
)
def test_malformed_key_bytes_are_refused(
    dest_key: RegionEncryptionPrivateKey, mutate: Callable[[bytes], bytes]
) -> None:
    with pytest.raises(ValueError, match="malformed"):
        RegionEncryptionPublicKey.from_bytes(mutate(dest_key.public_key().to_bytes()))
    with pytest.raises(ValueError, match="malformed"):
        RegionEncryptionPrivateKey.from_material(mutate(dest_key.material()))


def test_private_key_is_redacted_and_unpicklable(dest_key: RegionEncryptionPrivateKey) -> None:
    assert repr(dest_key) == "RegionEncryptionPrivateKey(<redacted>)"
    assert str(dest_key) == repr(dest_key)
    assert dest_key.material().hex() not in repr(dest_key)
    with pytest.raises(TypeError):
        pickle.dumps(dest_key)


def test_public_key_repr_is_short_fingerprint(dest_key: RegionEncryptionPrivateKey) -> None:
    assert repr(dest_key.public_key()).startswith("RegionEncryptionPublicKey(sha256=")


@pytest.mark.parametrize(
    "field,value",
    [
        ("version", -1),
        ("version", 2**32),
        ("version", True),
        ("key_id", ""),
        ("source_region", ""),
        ("dest_region", "x" * 70000),
    ],
)
def test_invalid_binding_arguments_are_caller_errors(
    dest_key: RegionEncryptionPrivateKey, field: str, value: object
) -> None:
    with pytest.raises(ValueError):
        seal_to_region(dest_key.public_key(), MATERIAL, **{**BINDING, field: value})
