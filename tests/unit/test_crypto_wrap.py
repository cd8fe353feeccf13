"""crypto.wrap: backing key material sealed under the root key, bound to key id and version."""

from __future__ import annotations

import pickle

import pytest

from regiond.crypto import aead, wrap
from regiond.crypto.errors import CryptoError, DecryptError
from regiond.crypto.keyring import AesRootKeyring, KeyringError

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ID = "2234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def keyring() -> AesRootKeyring:
    return AesRootKeyring(bytes(range(32)))


def test_wrapped_material_unwraps_to_the_same_key(keyring: AesRootKeyring) -> None:
    key = wrap.new_backing_key()
    wrapped = wrap.wrap(keyring, KEY_ID, 1, key)
    assert key.material() not in wrapped
    assert wrap.unwrap(keyring, KEY_ID, 1, wrapped).material() == key.material()


@pytest.mark.parametrize(("key_id", "version"), [(OTHER_ID, 1), (KEY_ID, 2)])
def test_material_moved_to_another_key_or_version_does_not_unwrap(
    keyring: AesRootKeyring, key_id: str, version: int
) -> None:
    wrapped = wrap.wrap(keyring, KEY_ID, 1, wrap.new_backing_key())
    with pytest.raises(KeyringError):
        wrap.unwrap(keyring, key_id, version, wrapped)


def test_material_does_not_unwrap_under_another_root_key(keyring: AesRootKeyring) -> None:
    wrapped = wrap.wrap(keyring, KEY_ID, 1, wrap.new_backing_key())
    with pytest.raises(KeyringError):
        wrap.unwrap(AesRootKeyring(bytes(32)), KEY_ID, 1, wrapped)


def test_aad_names_key_id_and_version_unambiguously() -> None:
    assert wrap.backing_key_aad(KEY_ID, 1) != wrap.backing_key_aad(KEY_ID, 256)
    assert wrap.backing_key_aad(KEY_ID, 1).endswith(b"\x00\x00\x00\x00\x01")
    with pytest.raises(ValueError):
        wrap.backing_key_aad(KEY_ID, 0)


def test_unwrapped_key_is_redacted_and_refuses_pickling() -> None:
    key = wrap.new_backing_key()
    assert repr(key) == str(key) == "UnwrappedKey(<redacted>)"
    assert key.material().hex() not in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(ValueError):
        wrap.UnwrappedKey(b"short")


def test_seal_and_unseal_with_a_backing_key() -> None:
    key = wrap.new_backing_key()
    sealed = wrap.seal(key, b"data", b"aad").to_bytes()
    assert wrap.unseal(key, sealed, b"aad") == b"data"
    for wrong_key, data, aad in ((key, sealed, b"other aad"), (wrap.new_backing_key(), sealed, b"aad"),
                                 (key, sealed[:10], b"aad")):  # fmt: skip
        with pytest.raises(DecryptError) as failure:
            wrap.unseal(wrong_key, data, aad)
        assert str(failure.value) == "decryption failed"  # one failure, whatever the cause


def test_aead_unseal_raises_the_crypto_error_not_cryptographys() -> None:
    raw = aead.generate_key()
    sealed = aead.seal(raw, b"data", b"aad")
    assert aead.unseal(raw, sealed, b"aad") == b"data"
    with pytest.raises(DecryptError):
        aead.unseal(raw, sealed, b"other")
    with pytest.raises(DecryptError):
        aead.AeadKey(raw).unseal(sealed, b"other")


def test_every_crypto_failure_descends_from_one_root() -> None:
    import importlib
    import inspect
    import pkgutil

    import regiond.crypto
    from regiond.crypto import errors, hpke, import_wrap

    for info in pkgutil.iter_modules(regiond.crypto.__path__):
        module = importlib.import_module(f"regiond.crypto.{info.name}")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module.__name__:
                assert issubclass(value, CryptoError), f"{module.__name__}.{name}"
                assert name in (errors.__doc__ or ""), f"{name} is not drawn in crypto/errors.py"
    assert issubclass(hpke.SealedMaterialError, DecryptError)
    assert issubclass(import_wrap.ImportUnwrapError, DecryptError)
