"""Cryptographic materials managers (ESDK framework/default-cmm, required-encryption-context-cmm,
caching-cmm, local-cryptographic-materials-cache).

- ``DefaultCmm`` wraps a keyring: picks the suite (default 0x0578), makes the per-message signing
  key and puts its public half in the context, refuses caller context keys under the reserved
  ``aws-crypto-`` prefix; on decrypt it merges the caller's reproduced context with the stored one
  (a differing value is refused; pairs not stored become "authenticate only").
- ``RequiredEncryptionContextCmm``: the listed context keys must be given on encrypt and again on
  decrypt; they are authenticated but not stored in the message.
- ``CachingCmm``: reuses materials for up to ``max_age_s``, ``max_messages`` messages and
  ``max_bytes`` plaintext bytes per data key, in a ``LocalCache`` of ``capacity`` entries shared by
  ``partition``; ``metrics`` counts hits and misses. A cached data key sits in this process's
  memory for its age: the trade is fewer KMS calls for a longer-lived plaintext key.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

from kmsclient.errors import ConfigurationError, MaterialsError, RequiredContextError
from kmsclient.keyrings import Keyring
from kmsclient.materials import DecryptionMaterials, EncryptionMaterials
from kmsclient.message import (
    DATA_KEY_BYTES,
    DEFAULT_SUITE,
    PUBLIC_KEY_CONTEXT_KEY,
    RESERVED_CONTEXT_PREFIX,
    EncryptedDataKey,
    Suite,
    serialize_context,
)
from kmsclient.signature import SigningKey


@dataclass(frozen=True)
class EncryptionRequest:
    encryption_context: Mapping[str, str]
    suite: Suite | None = None
    plaintext_length: int | None = None
    required_context_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DecryptionRequest:
    suite: Suite
    encrypted_data_keys: tuple[EncryptedDataKey, ...]
    stored_context: Mapping[str, str]
    reproduced_context: Mapping[str, str] = field(default_factory=dict)
    required_context_keys: frozenset[str] = frozenset()


class Cmm(Protocol):
    async def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials: ...

    async def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials: ...


class DefaultCmm:
    def __init__(self, keyring: Keyring, *, suite: Suite = DEFAULT_SUITE) -> None:
        self.keyring = keyring
        self.suite = suite

    async def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        reserved = [k for k in request.encryption_context if k.startswith(RESERVED_CONTEXT_PREFIX)]
        if reserved:
            raise MaterialsError(f"encryption context keys starting with {RESERVED_CONTEXT_PREFIX} are reserved")
        suite = request.suite or self.suite
        context = dict(request.encryption_context)
        signing_key = None
        if suite.signed:
            signing_key = SigningKey()
            context[PUBLIC_KEY_CONTEXT_KEY] = signing_key.public_key_b64
        materials = EncryptionMaterials(suite, context, request.required_context_keys, signing_key=signing_key)
        materials = await self.keyring.on_encrypt(materials)
        if materials.data_key is None or len(materials.data_key) != DATA_KEY_BYTES or not materials.encrypted_data_keys:
            raise MaterialsError("the keyring produced no data key")
        return materials

    async def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        context = dict(request.stored_context)
        required = set(request.required_context_keys)
        for key, value in request.reproduced_context.items():
            if key in context:
                if context[key] != value:
                    raise MaterialsError(f"the encryption context differs from the message's at key {key!r}")
            else:
                context[key] = value
                required.add(key)
        verification_key = context.get(PUBLIC_KEY_CONTEXT_KEY)
        if request.suite.signed and verification_key is None:
            raise MaterialsError("a signed message carries no verification key")
        if not request.suite.signed and verification_key is not None:
            raise MaterialsError("an unsigned message carries a verification key")
        materials = DecryptionMaterials(request.suite, context, frozenset(required), verification_key=verification_key)
        materials = await self.keyring.on_decrypt(materials, request.encrypted_data_keys)
        if materials.data_key is None or len(materials.data_key) != DATA_KEY_BYTES:
            raise MaterialsError("the keyring produced no data key")
        return materials


def as_cmm(keyring_or_cmm: Keyring | Cmm) -> Cmm:
    """A CMM as given, or a keyring wrapped in a ``DefaultCmm``."""
    if hasattr(keyring_or_cmm, "get_encryption_materials"):
        return cast(Cmm, keyring_or_cmm)
    return DefaultCmm(keyring_or_cmm)


class RequiredEncryptionContextCmm:
    def __init__(self, underlying: Keyring | Cmm, required_keys: Iterable[str]) -> None:
        self.underlying = as_cmm(underlying)
        self.required_keys = frozenset(required_keys)
        if not self.required_keys:
            raise ConfigurationError("a required-encryption-context CMM needs at least one key")

    async def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        missing = sorted(self.required_keys - set(request.encryption_context))
        if missing:
            raise RequiredContextError(f"the encryption context lacks the required key(s) {', '.join(missing)}")
        request = replace(request, required_context_keys=request.required_context_keys | self.required_keys)
        materials = await self.underlying.get_encryption_materials(request)
        if not self.required_keys <= materials.required_context_keys:
            raise RequiredContextError("the underlying materials manager dropped a required context key")
        return materials

    async def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        missing = sorted(self.required_keys - set(request.reproduced_context))
        if missing:
            raise RequiredContextError(f"decrypting needs the required context key(s) {', '.join(missing)}")
        request = replace(request, required_context_keys=request.required_context_keys | self.required_keys)
        return await self.underlying.decrypt_materials(request)


# --- caching --------------------------------------------------------------------------------------


@dataclass
class _Entry:
    materials: EncryptionMaterials | DecryptionMaterials
    created_at: float
    messages: int = 0
    bytes: int = 0


class LocalCache:
    """A least-recently-used map of at most ``capacity`` entries (several CMMs may share one)."""

    def __init__(self, capacity: int = 1000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ConfigurationError("a cache holds at least one entry")
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def get(self, key: bytes) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def evict(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class CacheMetrics:
    encrypt_hits: int = 0
    encrypt_misses: int = 0
    decrypt_hits: int = 0
    decrypt_misses: int = 0


MAX_MESSAGES_PER_KEY = 2**32


class CachingCmm:
    def __init__(
        self,
        underlying: Keyring | Cmm,
        *,
        cache: LocalCache | None = None,
        max_age_s: float,
        max_messages: int = MAX_MESSAGES_PER_KEY,
        max_bytes: int = 2**63 - 1,
        partition: str | None = None,
    ) -> None:
        if max_age_s <= 0 or not 1 <= max_messages <= MAX_MESSAGES_PER_KEY or max_bytes < 0:
            raise ConfigurationError("max_age_s > 0, 1 <= max_messages <= 2^32 and max_bytes >= 0 are needed")
        self.underlying = as_cmm(underlying)
        self.cache = cache if cache is not None else LocalCache()
        self.max_age_s = max_age_s
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.partition = (partition or os.urandom(16).hex()).encode()
        self.metrics = CacheMetrics()

    def _fresh(self, entry: _Entry) -> bool:
        return self.cache.clock() - entry.created_at < self.max_age_s

    def _encrypt_id(self, request: EncryptionRequest) -> bytes:
        h = hashlib.sha512(b"encrypt\x00" + self.partition + b"\x00")
        h.update(struct.pack(">H", request.suite.id if request.suite else 0))
        h.update(serialize_context(request.encryption_context))
        h.update(b"\x00".join(k.encode() for k in sorted(request.required_context_keys)))
        return h.digest()

    def _decrypt_id(self, request: DecryptionRequest) -> bytes:
        h = hashlib.sha512(b"decrypt\x00" + self.partition + b"\x00")
        h.update(struct.pack(">H", request.suite.id))
        for digest in sorted(_edk_digest(e) for e in request.encrypted_data_keys):
            h.update(digest)
        h.update(serialize_context(request.stored_context))
        h.update(serialize_context(request.reproduced_context))
        h.update(b"\x00".join(k.encode() for k in sorted(request.required_context_keys)))
        return h.digest()

    async def get_encryption_materials(self, request: EncryptionRequest) -> EncryptionMaterials:
        length = request.plaintext_length
        if length is None or length > self.max_bytes:
            self.metrics.encrypt_misses += 1  # unknown or too long for a cached key: never cached
            return await self.underlying.get_encryption_materials(request)
        key = self._encrypt_id(request)
        entry = self.cache.get(key)
        if entry is not None:
            if (
                self._fresh(entry)
                and entry.messages + 1 <= self.max_messages
                and entry.bytes + length <= self.max_bytes
                and isinstance(entry.materials, EncryptionMaterials)
            ):
                entry.messages += 1
                entry.bytes += length
                self.metrics.encrypt_hits += 1
                return entry.materials
            self.cache.evict(key)
        self.metrics.encrypt_misses += 1
        materials = await self.underlying.get_encryption_materials(request)
        self.cache.put(key, _Entry(materials, self.cache.clock(), messages=1, bytes=length))
        return materials

    async def decrypt_materials(self, request: DecryptionRequest) -> DecryptionMaterials:
        key = self._decrypt_id(request)
        entry = self.cache.get(key)
        if entry is not None and isinstance(entry.materials, DecryptionMaterials):
            if self._fresh(entry):
                self.metrics.decrypt_hits += 1
                return entry.materials
            self.cache.evict(key)
        self.metrics.decrypt_misses += 1
        materials = await self.underlying.decrypt_materials(request)
        self.cache.put(key, _Entry(materials, self.cache.clock()))
        return materials


def _edk_digest(edk: EncryptedDataKey) -> bytes:
    h = hashlib.sha512()
    for part in (edk.provider_id.encode(), edk.provider_info, edk.ciphertext):
        h.update(struct.pack(">I", len(part)) + part)
    return h.digest()


__all__: Sequence[str] = (
    "CacheMetrics",
    "CachingCmm",
    "Cmm",
    "DecryptionRequest",
    "DefaultCmm",
    "EncryptionRequest",
    "LocalCache",
    "RequiredEncryptionContextCmm",
)
