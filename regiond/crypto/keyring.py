"""The region's root key: the one key that wraps every other secret at rest.

Access-key secrets, backing key material and identity keys are stored in PostgreSQL
sealed under the root key (AES-256-GCM) with AAD that binds the row they belong to, so a
sealed value copied into another row does not unwrap. The root key itself never touches
the database. Sources: a file made by ``regiond init`` (mode 0600) or a base64 value given
through the environment (read by ``regiond.config``, never here).

The root key has versions, so that it can be replaced online (``regiond rotate-root-key``,
regiond/cli/root_key.py): a keyring holds every version still needed to open stored values and
names one of them *active*; new values are sealed under the active version, and a stored value
names the version it was sealed under, so values of several versions can be opened side by side
while the re-wrap runs. Once nothing is sealed under an old version it is retired (dropped).

Wrapped layout, version 1 (root key version 1):
    1 byte 0x01 | 12-byte nonce | ciphertext | 16-byte tag
    AAD = b"regionkms-root-v1\\x00" || caller's AAD
Wrapped layout, version 2 (root key version N >= 2):
    1 byte 0x02 | u32be N | 12-byte nonce | ciphertext | 16-byte tag
    AAD = b"regionkms-root-v2\\x00" || u32be N || caller's AAD

A keyring whose active version is 1 still writes layout 1, so a region that never rotated keeps
the stored format it always had.

Keyring file, either of:
    32 bytes                                   root key version 1 alone (what ``regiond init`` writes)
    b"regionkms-root-keys-v1\\n" || u32be active version || n x (u32be version || 32-byte key)
``REGIOND_ROOT_KEY`` is the base64 of either form (``base64 -w0 root.key``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from regiond.crypto import aead
from regiond.crypto.errors import DecryptError, KeyringError

__all__ = [
    "ROOT_KEY_BYTES",
    "WRAP_VERSION",
    "AesRootKeyring",
    "FileRootKeyring",
    "KeyringError",
    "RootKeyring",
    "create_root_key_file",
    "env_keyring",
    "load_file_keyring",
    "parse_keyring",
    "sealed_prefix",
    "wrapped_root_version",
]

WRAP_VERSION = 1
_WRAP_VERSION_2 = 2
ROOT_KEY_BYTES = 32
_AAD_PREFIX = b"regionkms-root-v1\x00"
_AAD_PREFIX_2 = b"regionkms-root-v2\x00"
_FILE_MAGIC = b"regionkms-root-keys-v1\n"
_U32 = struct.Struct(">I")
_MAX_VERSIONS = 1000


class RootKeyring(Protocol):
    @property
    def key_check(self) -> str: ...

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


def _check(key: bytes) -> str:
    return hashlib.sha256(b"regionkms-key-check\x00" + key).hexdigest()[:16]


def wrapped_root_version(wrapped: bytes) -> int:
    """The root key version a stored value was sealed under (``KeyringError`` if it is no sealed value)."""
    if len(wrapped) >= 1 and wrapped[0] == WRAP_VERSION:
        return 1
    if len(wrapped) >= 5 and wrapped[0] == _WRAP_VERSION_2:
        version = int(_U32.unpack_from(wrapped, 1)[0])
        if version >= 2:
            return version
    raise KeyringError("unsupported wrapped value")


def sealed_prefix(version: int) -> bytes:
    """The leading bytes of every value sealed under root key ``version`` (what a re-wrap looks for)."""
    return bytes([WRAP_VERSION]) if version == 1 else bytes([_WRAP_VERSION_2]) + _U32.pack(version)


class AesRootKeyring:
    """Root key versions held in process memory (loaded from a file or the environment)."""

    __slots__ = ("_active", "_keys")

    def __init__(
        self, key: bytes | None = None, *, versions: Mapping[int, bytes] | None = None, active: int = 0
    ) -> None:
        """One key (version 1), or ``versions`` by number with ``active`` the one new values are
        sealed under (default: the newest)."""
        keys = dict(versions) if versions is not None else {1: key if key is not None else b""}
        if not keys or len(keys) > _MAX_VERSIONS:
            raise KeyringError("a keyring holds between 1 and 1000 root key versions")
        for number, material in keys.items():
            if number < 1 or number > 0xFFFFFFFF:
                raise KeyringError("root key versions are numbered from 1")
            if len(material) != ROOT_KEY_BYTES:
                raise KeyringError("root key must be 32 bytes")
        chosen = active or max(keys)
        if chosen not in keys:
            raise KeyringError("the active root key version is not in the keyring")
        self._keys = {n: bytes(k) for n, k in keys.items()}
        self._active = chosen

    def __repr__(self) -> str:
        return f"{type(self).__name__}(active={self._active}, key_check={self.key_check})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("the root keyring cannot be pickled")

    @property
    def key_check(self) -> str:
        """A non-secret fingerprint of the active version, so operators can tell which root key a node holds."""
        return _check(self._keys[self._active])

    @property
    def active_version(self) -> int:
        return self._active

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def key_checks(self) -> dict[int, str]:
        """Each version's fingerprint (non-secret), for ``regiond rotate-root-key``'s report."""
        return {n: _check(self._keys[n]) for n in sorted(self._keys)}

    def with_new_version(self, *, activate: bool) -> AesRootKeyring:
        """This keyring plus a fresh random version (the newest), active or only staged."""
        number = max(self._keys) + 1
        keys = {**self._keys, number: aead.generate_key()}
        return AesRootKeyring(versions=keys, active=number if activate else self._active)

    def activated(self, version: int) -> AesRootKeyring:
        return AesRootKeyring(versions=self._keys, active=version)

    def retired(self) -> AesRootKeyring:
        """Only the active version: what is left once nothing is sealed under the others."""
        return AesRootKeyring(versions={self._active: self._keys[self._active]})

    def to_bytes(self) -> bytes:
        """The keyring file's bytes (layout in the module docstring): secret, written with mode 0600 only."""
        if set(self._keys) == {1}:
            return self._keys[1]
        records = b"".join(_U32.pack(n) + self._keys[n] for n in sorted(self._keys))
        return _FILE_MAGIC + _U32.pack(self._active) + records

    def has_version(self, version: int) -> bool:
        return version in self._keys

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        number = self._active
        if number == 1:
            sealed = aead.seal(self._keys[1], plaintext, _AAD_PREFIX + aad)
            return bytes([WRAP_VERSION]) + sealed.to_bytes()
        header = bytes([_WRAP_VERSION_2]) + _U32.pack(number)
        sealed = aead.seal(self._keys[number], plaintext, _AAD_PREFIX_2 + header[1:] + aad)
        return header + sealed.to_bytes()

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        number = wrapped_root_version(wrapped)
        key = self._keys.get(number)
        if key is None:
            raise KeyringError("wrapped value is sealed under a root key version this keyring does not hold")
        if number == 1:
            body, full_aad = wrapped[1:], _AAD_PREFIX + aad
        else:
            body, full_aad = wrapped[5:], _AAD_PREFIX_2 + wrapped[1:5] + aad
        try:
            return aead.unseal(key, aead.Sealed.from_bytes(body), full_aad)
        except (DecryptError, ValueError) as exc:
            raise KeyringError("wrapped value does not unwrap under this root key") from exc


def parse_keyring(data: bytes) -> AesRootKeyring:
    """A keyring from its file bytes (either layout of the module docstring)."""
    if len(data) == ROOT_KEY_BYTES:
        return AesRootKeyring(data)
    if not data.startswith(_FILE_MAGIC):
        raise KeyringError("not a root key or keyring file")
    body = data[len(_FILE_MAGIC) :]
    record = _U32.size + ROOT_KEY_BYTES
    if len(body) < _U32.size + record or (len(body) - _U32.size) % record:
        raise KeyringError("truncated keyring file")
    active = int(_U32.unpack_from(body, 0)[0])
    keys: dict[int, bytes] = {}
    for offset in range(_U32.size, len(body), record):
        number = int(_U32.unpack_from(body, offset)[0])
        if number in keys:
            raise KeyringError("keyring file names a root key version twice")
        keys[number] = body[offset + _U32.size : offset + record]
    return AesRootKeyring(versions=keys, active=active)


class FileRootKeyring(AesRootKeyring):
    """A keyring read from a file that follows the file's changes without a restart.

    ``regiond rotate-root-key`` replaces the file (atomically) while nodes run: before sealing, a
    node checks whether the file changed (one ``stat``: sealing happens on key creation and
    rotation, never on the hot path) so that it seals under the version just made active, and a
    value sealed under a version it does not hold yet makes it re-read the file once before it
    fails. A file that no longer loads (removed, made readable by others) is ignored and the
    versions already held stay in use.
    """

    __slots__ = ("_path", "_stamp")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp = self._stat()
        loaded = _read_private(path)
        super().__init__(versions=loaded._keys, active=loaded._active)

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Re-read the file if it changed; whether the keyring changed."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            loaded = _read_private(self._path)
        except (OSError, KeyringError):
            return False
        self._stamp = stamp
        self._keys, self._active = loaded._keys, loaded._active
        return True

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        self.reload()
        return super().wrap(plaintext, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            number = wrapped_root_version(wrapped)
        except KeyringError:
            number = 0
        if number and number not in self._keys:
            self.reload()
        return super().unwrap(wrapped, aad)


def create_root_key_file(path: Path) -> None:
    """Write a new random root key to ``path`` with mode 0600; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(aead.generate_key())


def _read_private(path: Path) -> AesRootKeyring:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyringError(f"root key file {path.name} must not be readable by group or others")
        return parse_keyring(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyringError(f"root key file {path.name} not found: run `regiond init` first") from exc


def load_file_keyring(path: Path) -> FileRootKeyring:
    try:
        return FileRootKeyring(path)
    except FileNotFoundError as exc:
        raise KeyringError(f"root key file {path.name} not found: run `regiond init` first") from exc


def env_keyring(value: str) -> AesRootKeyring:
    try:
        return parse_keyring(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise KeyringError("root key in the environment is not valid base64 of a root key or keyring file") from exc
