"""The root keyring: sealed values are bound to their row and to the root key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from regiond import private_files
from regiond.crypto.keyring import (
    AesRootKeyring,
    KeyringError,
    create_root_key_file,
    env_keyring,
    load_file_keyring,
    parse_keyring,
    sealed_prefix,
    wrapped_root_version,
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


def test_values_of_every_version_open_and_new_ones_seal_under_the_active() -> None:
    old = AesRootKeyring(os.urandom(32))
    sealed_v1 = old.wrap(b"secret", b"row")
    assert wrapped_root_version(sealed_v1) == 1 and sealed_v1[0] == 1  # a region that never rotated: layout 1
    staged = old.with_new_version(activate=False)
    assert staged.active_version == 1 and staged.versions == (1, 2)
    assert wrapped_root_version(staged.wrap(b"x", b"row")) == 1  # staged: opened, never sealed under
    ring = staged.activated(2)
    sealed_v2 = ring.wrap(b"secret", b"row")
    assert wrapped_root_version(sealed_v2) == 2 and sealed_v2.startswith(sealed_prefix(2))
    assert ring.unwrap(sealed_v1, b"row") == ring.unwrap(sealed_v2, b"row") == b"secret"
    with pytest.raises(KeyringError, match="does not hold"):
        old.unwrap(sealed_v2, b"row")  # a node without the new version cannot open it
    with pytest.raises(KeyringError):
        ring.unwrap(sealed_v2, b"other-row")
    tampered = bytearray(sealed_v2)
    tampered[4] = 3  # claims another version: no key, or another key's AAD
    with pytest.raises(KeyringError):
        ring.unwrap(bytes(tampered), b"row")
    retired = ring.retired()
    assert retired.versions == (2,) and retired.unwrap(sealed_v2, b"row") == b"secret"
    with pytest.raises(KeyringError):
        retired.unwrap(sealed_v1, b"row")


def test_keyring_file_round_trips_and_env_takes_either_form(tmp_path: Path) -> None:
    ring = AesRootKeyring(os.urandom(32)).with_new_version(activate=True).with_new_version(activate=False)
    data = ring.to_bytes()
    back = parse_keyring(data)
    assert back.versions == (1, 2, 3) and back.active_version == 2 and back.key_checks() == ring.key_checks()
    assert env_keyring(base64.b64encode(data).decode()).key_checks() == ring.key_checks()
    one = AesRootKeyring(os.urandom(32))
    assert one.to_bytes() == parse_keyring(one.to_bytes()).to_bytes() and len(one.to_bytes()) == 32
    magic = len(b"regionkms-root-keys-v1\n")
    no_such_active = data[:magic] + (9).to_bytes(4, "big") + data[magic + 4 :]
    for bad in (data[:-1], b"x" * 40, data[: magic + 2], no_such_active):
        with pytest.raises(KeyringError):
            parse_keyring(bad)


def test_file_keyring_follows_the_file_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    create_root_key_file(path)
    node = load_file_keyring(path)
    sealed_v1 = node.wrap(b"s", b"row")
    rotated = parse_keyring(path.read_bytes()).with_new_version(activate=True)
    private_files.write_file(path, rotated.to_bytes(), durable=True)
    sealed_elsewhere = rotated.wrap(b"t", b"row")
    assert node.unwrap(sealed_elsewhere, b"row") == b"t"  # an unknown version re-reads the file
    assert wrapped_root_version(node.wrap(b"u", b"row")) == 2  # sealing follows the active version
    assert node.unwrap(sealed_v1, b"row") == b"s"
    path.chmod(0o644)  # a file others can read is not taken: the versions held stay in use
    private_files.write_file(path, rotated.retired().to_bytes())
    path.chmod(0o644)
    assert not node.reload()
    assert node.unwrap(sealed_v1, b"row") == b"s"
