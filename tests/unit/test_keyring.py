"""The root keyring: sealed values are bound to their row and to the root key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from regiond.crypto.keyring import (
    AesRootKeyring,
    KeyringError,
    create_root_key_file,
    env_keyring,
    load_file_keyring,
)


def test_wrap_round_trip_and_aad_binding() -> None:
    ring = AesRootKeyring(os.urandom(32))
    wrapped = ring.wrap(b"secret", b"row-1")
    assert b"secret" not in wrapped
    assert ring.unwrap(wrapped, b"row-1") == b"secret"
    with pytest.raises(KeyringError):
        ring.unwrap(wrapped, b"row-2")
    with pytest.raises(KeyringError):
        AesRootKeyring(os.urandom(32)).unwrap(wrapped, b"row-1")
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(KeyringError):
        ring.unwrap(bytes(tampered), b"row-1")


def test_repr_and_pickle_reveal_nothing() -> None:
    key = os.urandom(32)
    ring = AesRootKeyring(key)
    assert key.hex() not in repr(ring)
    with pytest.raises(TypeError):
        ring.__reduce__()


def test_root_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    create_root_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        create_root_key_file(path)
    load_file_keyring(path)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="readable"):
        load_file_keyring(path)


def test_env_keyring_requires_32_bytes_of_base64() -> None:
    key = os.urandom(32)
    assert env_keyring(base64.b64encode(key).decode()).key_check == AesRootKeyring(key).key_check
    with pytest.raises(KeyringError):
        env_keyring("not base64!")
    with pytest.raises(KeyringError):
        env_keyring(base64.b64encode(b"short").decode())
