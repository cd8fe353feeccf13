"""crypto.import_wrap: the four AWS wrapping algorithms, cross-checked against `cryptography` directly."""

from __future__ import annotations

import os
import pickle

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from regiond.crypto import import_wrap, keymaterial, wrap
from regiond.crypto.import_wrap import WrappingAlgorithm, WrappingKeySpec
from regiond.crypto.keyring import AesRootKeyring, KeyringError
from regiond.domain.key import KeySpec
from tests.support.import_material import wrap_for_import

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ID = "2234abcd-12ab-34cd-56ef-1234567890ab"
TOKEN_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.fixture(scope="module")
def pair() -> import_wrap.WrappingKeyPair:
    return import_wrap.generate_wrapping_key(WrappingKeySpec.RSA_2048)


@pytest.mark.parametrize("algorithm", list(WrappingAlgorithm))
def test_material_wrapped_as_aws_documents_opens_with_each_algorithm(
    pair: import_wrap.WrappingKeyPair, algorithm: WrappingAlgorithm
) -> None:
    material = os.urandom(32)
    encrypted = wrap_for_import(pair.public_key_der, algorithm.value, material)
    assert import_wrap.unwrap_key_material(pair.private, algorithm, encrypted).material() == material


@pytest.mark.parametrize("algorithm", list(WrappingAlgorithm))
def test_client_side_wrap_round_trips(pair: import_wrap.WrappingKeyPair, algorithm: WrappingAlgorithm) -> None:
    material = os.urandom(32)
    encrypted = import_wrap.wrap_key_material(pair.public_key_der, algorithm, material)
    assert import_wrap.unwrap_key_material(pair.private, algorithm, encrypted).material() == material


def test_hybrid_layout_is_rsa_block_then_rfc5649_wrap(pair: import_wrap.WrappingKeyPair) -> None:
    encrypted = import_wrap.wrap_key_material(
        pair.public_key_der, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256, os.urandom(32)
    )
    assert len(encrypted) == 256 + 40  # 2048-bit RSA block, then 32 bytes wrapped with an 8-byte check block


@pytest.mark.parametrize(
    ("wrapped_with", "opened_with"),
    [
        (WrappingAlgorithm.RSAES_OAEP_SHA_1, WrappingAlgorithm.RSAES_OAEP_SHA_256),
        (WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1),
        (WrappingAlgorithm.RSAES_OAEP_SHA_256, WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256),
        (WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1, WrappingAlgorithm.RSAES_OAEP_SHA_1),
    ],
)
def test_material_wrapped_with_another_algorithm_is_one_failure(
    pair: import_wrap.WrappingKeyPair, wrapped_with: WrappingAlgorithm, opened_with: WrappingAlgorithm
) -> None:
    encrypted = import_wrap.wrap_key_material(pair.public_key_der, wrapped_with, os.urandom(32))
    with pytest.raises(import_wrap.ImportUnwrapError):
        import_wrap.unwrap_key_material(pair.private, opened_with, encrypted)


@pytest.mark.parametrize("algorithm", list(WrappingAlgorithm))
def test_any_flipped_byte_or_truncation_is_one_failure(
    pair: import_wrap.WrappingKeyPair, algorithm: WrappingAlgorithm
) -> None:
    encrypted = bytearray(import_wrap.wrap_key_material(pair.public_key_der, algorithm, os.urandom(32)))
    for position in (0, len(encrypted) // 2, len(encrypted) - 1):
        tampered = bytearray(encrypted)
        tampered[position] ^= 0x01
        with pytest.raises(import_wrap.ImportUnwrapError):
            import_wrap.unwrap_key_material(pair.private, algorithm, bytes(tampered))
    with pytest.raises(import_wrap.ImportUnwrapError):
        import_wrap.unwrap_key_material(pair.private, algorithm, bytes(encrypted[:-8]))


def test_material_that_is_not_256_bits_is_refused_for_a_symmetric_key(pair: import_wrap.WrappingKeyPair) -> None:
    for size in (16, 31, 33, 64):
        encrypted = wrap_for_import(pair.public_key_der, "RSAES_OAEP_SHA_256", os.urandom(size))
        opened = import_wrap.unwrap_key_material(pair.private, WrappingAlgorithm.RSAES_OAEP_SHA_256, encrypted)
        with pytest.raises(keymaterial.MaterialError, match="256 bits"):
            keymaterial.check_imported(KeySpec.SYMMETRIC_DEFAULT, opened)


def test_another_wrapping_key_cannot_open_the_material(pair: import_wrap.WrappingKeyPair) -> None:
    other = import_wrap.generate_wrapping_key(WrappingKeySpec.RSA_2048)
    encrypted = import_wrap.wrap_key_material(pair.public_key_der, WrappingAlgorithm.RSAES_OAEP_SHA_1, os.urandom(32))
    with pytest.raises(import_wrap.ImportUnwrapError):
        import_wrap.unwrap_key_material(other.private, WrappingAlgorithm.RSAES_OAEP_SHA_1, encrypted)


def test_public_key_is_der_subject_public_key_info_of_the_requested_size() -> None:
    pair = import_wrap.generate_wrapping_key(WrappingKeySpec.RSA_3072)
    public = serialization.load_der_public_key(pair.public_key_der)
    assert isinstance(public, rsa.RSAPublicKey)
    assert (public.key_size, public.public_numbers().e) == (3072, 65537)
    assert pair.private.modulus_bytes == 384


def test_sealed_private_key_opens_only_for_its_key_and_token(pair: import_wrap.WrappingKeyPair) -> None:
    keyring = AesRootKeyring(bytes(range(32)))
    aad = wrap.private_key_aad(KEY_ID, TOKEN_ID)
    sealed = import_wrap.seal_private_key(keyring, pair.private, aad)
    opened = import_wrap.open_private_key(keyring, sealed, aad)
    encrypted = import_wrap.wrap_key_material(pair.public_key_der, WrappingAlgorithm.RSAES_OAEP_SHA_256, bytes(32))
    assert import_wrap.unwrap_key_material(opened, WrappingAlgorithm.RSAES_OAEP_SHA_256, encrypted).material() == bytes(
        32
    )
    for other_aad in (wrap.private_key_aad(OTHER_ID, TOKEN_ID), wrap.private_key_aad(KEY_ID, OTHER_ID)):
        with pytest.raises(KeyringError):
            import_wrap.open_private_key(keyring, sealed, other_aad)
    with pytest.raises(KeyringError):
        import_wrap.open_private_key(AesRootKeyring(bytes(32)), sealed, aad)


def test_private_key_is_redacted_and_refuses_pickling(pair: import_wrap.WrappingKeyPair) -> None:
    assert repr(pair.private) == str(pair.private) == "WrappingPrivateKey(<redacted>)"
    with pytest.raises(TypeError):
        pickle.dumps(pair.private)


def test_key_material_id_depends_on_key_and_material_and_reveals_neither() -> None:
    material = wrap.UnwrappedKey(bytes(range(32)))
    same = wrap.UnwrappedKey(bytes(range(32)))
    other = wrap.UnwrappedKey(bytes(32))
    ident = import_wrap.key_material_id(KEY_ID, material)
    assert len(ident) == 64 and all(c in "0123456789abcdef" for c in ident)
    assert import_wrap.key_material_id(KEY_ID, same) == ident
    assert import_wrap.key_material_id(OTHER_ID, material) != ident
    assert import_wrap.key_material_id(KEY_ID, other) != ident
    assert material.material().hex() not in ident
