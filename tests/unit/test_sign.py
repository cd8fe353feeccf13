"""Ed25519 region identity: sign/verify, serialization, fingerprints, redaction."""

from __future__ import annotations

import hashlib
import pickle

import pytest

from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey

MESSAGE = b"regionkms test message"


@pytest.fixture(scope="module")
def identity() -> RegionIdentityKey:
    return RegionIdentityKey.generate()


def test_signature_verifies_with_public_key(identity: RegionIdentityKey) -> None:
    signature = identity.sign(MESSAGE)
    assert len(signature) == sign.SIGNATURE_BYTES
    assert sign.verify(identity.public_bytes(), MESSAGE, signature)


def test_rfc8032_test_vector_1() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    expected = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    key = RegionIdentityKey.from_material(seed)
    assert key.public_bytes() == public
    assert key.sign(b"") == expected
    assert sign.verify(public, b"", expected)


def test_other_message_fails(identity: RegionIdentityKey) -> None:
    assert not sign.verify(identity.public_bytes(), MESSAGE + b"!", identity.sign(MESSAGE))


def test_other_key_fails(identity: RegionIdentityKey) -> None:
    other = RegionIdentityKey.generate()
    assert not sign.verify(other.public_bytes(), MESSAGE, identity.sign(MESSAGE))


def test_every_signature_bit_flip_fails(identity: RegionIdentityKey) -> None:
    signature = identity.sign(MESSAGE)
    for bit in range(len(signature) * 8):
        tampered = bytearray(signature)
        tampered[bit // 8] ^= 1 << (bit % 8)
        assert not sign.verify(identity.public_bytes(), MESSAGE, bytes(tampered))


@pytest.mark.parametrize(
    "public,signature",
    [
        (b"", b"\x00" * 64),
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 33, b"\x00" * 64),
        (None, b""),
        (None, b"\x00" * 63),
        (None, b"\x00" * 65),
        (b"\xff" * 32, None),
    ],
)
def test_malformed_inputs_verify_false_without_raising(
    identity: RegionIdentityKey, public: bytes | None, signature: bytes | None
) -> None:
    public = identity.public_bytes() if public is None else public
    signature = identity.sign(MESSAGE) if signature is None else signature
    assert sign.verify(public, MESSAGE, signature) is False


def test_material_round_trips(identity: RegionIdentityKey) -> None:
    material = identity.material()
    assert len(material) == sign.PRIVATE_KEY_BYTES
    restored = RegionIdentityKey.from_material(material)
    assert restored.public_bytes() == identity.public_bytes()
    assert sign.verify(identity.public_bytes(), MESSAGE, restored.sign(MESSAGE))


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_malformed_material_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="malformed"):
        RegionIdentityKey.from_material(b"\x01" * size)


def test_fingerprint_is_sha256_hex_of_raw_public_key(identity: RegionIdentityKey) -> None:
    expected = hashlib.sha256(identity.public_bytes()).hexdigest()
    assert sign.fingerprint(identity.public_bytes()) == expected
    assert identity.fingerprint() == expected


def test_private_key_is_redacted_and_unpicklable(identity: RegionIdentityKey) -> None:
    text = repr(identity)
    assert "<redacted>" in text
    assert identity.material().hex() not in text
    assert str(identity) == text
    with pytest.raises(TypeError):
        pickle.dumps(identity)
