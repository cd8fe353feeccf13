"""Per-process cache of keys: metadata, parsed key policy and unwrapped backing keys.

This is what keeps Encrypt/Decrypt/GenerateDataKey off PostgreSQL in the steady state
(DESIGN section 6). An entry gets here in one of two ways, then is served from memory:

- on a miss, ``get`` loads it with one query (``key_store.load_key``: the key row, its wrapped
  versions, unwrapped here under the root key, and, when the grant cache lacks them, the key's
  grants, handed to that cache under its own generation rule);
- in bulk, off the request path: ``regiond.service.preload`` streams the region's keys in pages
  at worker start and after every "drop everything", and stores each row through ``fill``, which
  refuses a row whose key was invalidated after its page's query (``LoadWindow``) and never
  replaces an entry already cached. The cache holds ``MAX_CACHED_KEYS`` entries (least
  recently used go first), which also bounds the preload.

An entry lives until

- a NOTIFY on ``regionkms_keys`` names the key (any write to its row, its versions or an alias
  pointing at it: migration 0002's trigger), which reaches every worker and node of the region;
- the writing process itself drops it right after commit (``invalidate``), so a node never
  serves its own stale write while the notification is in flight;
- the listener drops everything when its connection is lost (or stops answering its ping,
  ``regiond.store.notify``) and re-established (the preload then fills the cache again);
- the TTL passes (``settings.cache_ttl_s``, an hour by default), the backstop for a change that
  was never notified.

Aliases are cached separately as ``(account, alias name) -> key id``. Any key notification
drops every alias entry: alias changes are rare, and the trigger names only key ids.

Unwrapped material is held in ``UnwrappedKey`` objects (redacted ``repr``, no pickling), and a
``CachedKey``'s ``repr`` leaves them out. A symmetric encryption key's versions are in
``backing``; any other key spec (HMAC, asymmetric) has one material, whose usable form is
``handle`` (``crypto.keymaterial``: a ``MacKey`` or a ``PrivateKey``, parsed on first use).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import structlog

from regiond.cache import LoadWindow, LoadWindows, TtlCache
from regiond.crypto import keymaterial, wrap
from regiond.crypto.keyring import KeyringError, RootKeyring
from regiond.domain import ciphertext
from regiond.domain.decision import GrantView
from regiond.domain.key import Key, KeySpec
from regiond.domain.policy import Policy, PolicyKind, parse_policy
from regiond.errors import KmsError, KMSInternalException, NotFoundException
from regiond.store import aliases as alias_store
from regiond.store import keys as key_store
from regiond.store.pool import Pool, connection

log = structlog.get_logger(__name__)

CHANNEL = "regionkms_keys"

MAX_CACHED_KEYS = 100_000
"""Entries a worker's key cache holds (least recently used go first); a bulk load stops there."""

MAX_SHARED_POLICIES = 256
"""Distinct policy texts whose parsed form is shared between keys (32 KiB each at most)."""

__all__ = ["CHANNEL", "MAX_CACHED_KEYS", "CachedKey", "GrantPrimer", "KeyCache"]


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A key as the hot path needs it; ``backing`` maps version number -> unwrapped key."""

    key: Key
    policy: Policy = field(repr=False)
    current_version: int | None
    aws_service: str | None
    backing: Mapping[int, wrap.UnwrappedKey] = field(repr=False, default_factory=dict)
    handle: keymaterial.KeyHandle | None = field(repr=False, default=None)  # non-symmetric keys only
    material_ids: Mapping[int, str] = field(repr=False, default_factory=dict)  # version -> KeyMaterialId
    arn: str = field(init=False, repr=False)  # ``key.arn``, which re-validates its parts on every read
    current_material_id: str | None = field(init=False, repr=False)  # ``CurrentKeyMaterialId``, computed once
    # The ciphertext header Encrypt writes (symmetric keys with material): kept per key, since with
    # many keys the header memo (``ciphertext.header``, bounded) would miss on most requests.
    sealing_header: bytes | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arn", self.key.arn)
        current = self.current_version
        object.__setattr__(self, "current_material_id", self.material_ids.get(current) if current else None)
        sealing = None
        if current is not None and current in self.backing:
            sealing = ciphertext.header_bytes(self.key.key_id, current)
        object.__setattr__(self, "sealing_header", sealing)

    @property
    def current(self) -> tuple[int, wrap.UnwrappedKey] | None:
        """The version that encrypts and its key, or ``None`` (no material yet, e.g. PendingImport)."""
        if self.current_version is None:
            return None
        material = self.backing.get(self.current_version)
        return (self.current_version, material) if material is not None else None


class GrantPrimer(Protocol):
    """The grant cache as the key cache feeds it: a cold key's grants come with its row."""

    @property
    def generation(self) -> int: ...

    def holds(self, key_id: str) -> bool:
        """Whether the grants of ``key_id`` are cached (then a key load need not read them)."""

    def prime(self, key_id: str, grants: tuple[GrantView, ...], *, generation: int) -> None:
        """Store grants read at ``generation`` (skipped if the cache was invalidated since)."""


class KeyCache:
    def __init__(self, pool: Pool, keyring: RootKeyring, *, ttl_s: float, grants: GrantPrimer | None = None) -> None:
        self._pool = pool
        self._keyring = keyring
        self._grants = grants
        self._keys: TtlCache[str, CachedKey] = TtlCache(ttl_s=ttl_s, max_entries=MAX_CACHED_KEYS)
        self._aliases: TtlCache[tuple[str, str], str] = TtlCache(ttl_s=ttl_s)
        self._windows = LoadWindows()
        self._policies: dict[str, Policy] = {}
        self.loads = 0  # database loads on the request path since start: a cheap gauge for tests and metrics

    @property
    def capacity(self) -> int:
        return MAX_CACHED_KEYS

    def __len__(self) -> int:
        return len(self._keys)

    def invalidate(self, payload: str | None = None) -> None:
        """Listener callback: ``payload`` is a key id, or ``None`` for "drop everything"."""
        self._keys.invalidate(payload)
        self._windows.note(payload)
        self._aliases.invalidate()

    def load_window(self) -> contextlib.AbstractContextManager[LoadWindow]:
        """Open before a bulk load's query; pass to ``fill`` (``regiond.service.preload``)."""
        return self._windows.open(self._keys.generation)

    def fill(self, loaded: key_store.LoadedKey, window: LoadWindow) -> bool:
        """Store a bulk-loaded key unless it is cached already or was invalidated since ``window``
        opened; true if stored. Unreadable material or policy raises ``KMSInternalException``
        (nothing is stored), without logging: the bulk loader counts and reports those."""
        key_id = loaded.record.key.key_id
        if not window.admits(key_id, self._keys.generation) or self._keys.get(key_id) is not None:
            return False
        entry = self._build(loaded.record, loaded.versions, log_failure=False)
        self._keys.put(key_id, entry)  # no await since ``admits``: nothing can have changed
        return True

    async def get(self, key_id: str) -> CachedKey | None:
        """The cached key, loading it on a miss; ``None`` if the key does not exist.

        A miss is one query (``key_store.load_key``): the key row, its wrapped versions and, when
        the grant cache does not hold them yet, the key's grants, which it then primes.
        """
        hit = self._keys.get(key_id)
        if hit is not None:
            return hit
        generation = self._keys.generation
        grants = self._grants if self._grants is not None and not self._grants.holds(key_id) else None
        grant_generation = grants.generation if grants is not None else 0
        self.loads += 1
        async with connection(self._pool) as con:
            loaded = await key_store.load_key(con, key_id, with_grants=grants is not None)
        if loaded is None:
            return None
        entry = self._build(loaded.record, loaded.versions)
        self._keys.put(key_id, entry, generation=generation)
        if grants is not None and loaded.grants is not None:
            grants.prime(key_id, loaded.grants, generation=grant_generation)
        return entry

    async def alias_target(self, account: str, alias_name: str) -> str | None:
        """The key id ``alias_name`` points to in ``account``; misses are not cached."""
        hit = self._aliases.get((account, alias_name))
        if hit is not None:
            return hit
        generation = self._aliases.generation
        self.loads += 1
        async with connection(self._pool) as con:
            key_id = await alias_store.resolve(con, account, alias_name)
        if key_id is not None:
            self._aliases.put((account, alias_name), key_id, generation=generation)
        return key_id

    def _parse_policy(self, document: str) -> Policy:
        """``parse_policy``, shared by keys whose policy text is the same (most keys of an account
        keep the default one): parsed once, and one object in memory instead of one per key.
        Policies are immutable, and the authorizer's memo compares them by identity, so sharing
        changes no decision; it lets keys share the authorizer's entries (``service.authz``)."""
        policy = self._policies.get(document)
        if policy is None:
            policy = parse_policy(document, PolicyKind.KEY)
            if len(self._policies) >= MAX_SHARED_POLICIES:
                self._policies.clear()
            self._policies[document] = policy
        return policy

    def _build(
        self, record: key_store.KeyRecord, wrapped: list[key_store.WrappedVersion], *, log_failure: bool = True
    ) -> CachedKey:
        try:
            policy = self._parse_policy(record.policy)
        except KmsError as exc:
            # Policies are parsed before they are stored; an unparseable one is corruption.
            if log_failure:
                log.error("key.policy_unreadable", key_id=record.key.key_id)
            raise KMSInternalException("The key policy of this key cannot be read") from exc
        backing: dict[int, wrap.UnwrappedKey] = {}
        handle: keymaterial.KeyHandle | None = None
        spec = record.key.key_spec
        material_ids = {v.version: v.key_material_id for v in wrapped if v.key_material_id is not None}
        for version in wrapped:
            try:
                if spec is KeySpec.SYMMETRIC_DEFAULT:
                    backing[version.version] = wrap.unwrap(
                        self._keyring, record.key.key_id, version.version, version.material_wrapped
                    )
                elif version.version == record.current_version:
                    opened = wrap.unwrap_material(
                        self._keyring, record.key.key_id, version.version, version.material_wrapped
                    )
                    handle = keymaterial.handle(spec, opened)
            except KeyringError as exc:
                if log_failure:
                    log.error("key.material_unwrap_failed", key_id=record.key.key_id, version=version.version)
                raise KMSInternalException("Key material cannot be read with this node's root key") from exc
        return CachedKey(
            key=record.key,
            policy=policy,
            current_version=record.current_version,
            aws_service=record.aws_service,
            backing=MappingProxyType(backing),
            handle=handle,
            material_ids=MappingProxyType(material_ids),
        )

    async def key_policy(self, key: Key) -> Policy:
        """``KeyPolicySource`` for the authorizer: the cached parsed policy of ``key``."""
        entry = await self.get(key.key_id)
        if entry is None:
            raise NotFoundException(f"Key '{key.arn}' does not exist")
        return entry.policy
