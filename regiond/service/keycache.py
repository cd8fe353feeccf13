"""Per-process cache of keys: metadata, parsed key policy and unwrapped backing keys.

This is what keeps Encrypt/Decrypt/GenerateDataKey off PostgreSQL in the steady state
(DESIGN section 6). An entry is loaded once (two queries on one connection: the key row and
its wrapped versions, unwrapped here under the root key) and then served from memory until

- a NOTIFY on ``regionkms_keys`` names the key (any write to its row, its versions or an alias
  pointing at it: migration 0002's trigger), which reaches every worker and node of the region;
- the writing process itself drops it right after commit (``invalidate``), so a node never
  serves its own stale write while the notification is in flight;
- the listener drops everything when its connection is lost (or stops answering its ping,
  ``regiond.store.notify``) and re-established;
- the TTL passes (``settings.cache_ttl_s``, an hour by default), the backstop for a change that
  was never notified.

Aliases are cached separately as ``(account, alias name) -> key id``. Any key notification
drops every alias entry: alias changes are rare, and the trigger names only key ids.

Unwrapped material is held in ``UnwrappedKey`` objects (redacted ``repr``, no pickling), and a
``CachedKey``'s ``repr`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import structlog

from regiond.cache import TtlCache
from regiond.crypto import wrap
from regiond.crypto.keyring import KeyringError, RootKeyring
from regiond.domain.key import Key
from regiond.domain.policy import Policy, PolicyKind, parse_policy
from regiond.errors import KmsError, KMSInternalException, NotFoundException
from regiond.store import aliases as alias_store
from regiond.store import keys as key_store
from regiond.store.pool import Pool, connection

log = structlog.get_logger(__name__)

CHANNEL = "regionkms_keys"

__all__ = ["CHANNEL", "CachedKey", "KeyCache"]


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A key as the hot path needs it; ``backing`` maps version number -> unwrapped key."""

    key: Key
    policy: Policy = field(repr=False)
    current_version: int | None
    aws_service: str | None
    backing: Mapping[int, wrap.UnwrappedKey] = field(repr=False, default_factory=dict)
    arn: str = field(init=False, repr=False)  # ``key.arn``, which re-validates its parts on every read

    def __post_init__(self) -> None:
        object.__setattr__(self, "arn", self.key.arn)

    @property
    def current(self) -> tuple[int, wrap.UnwrappedKey] | None:
        """The version that encrypts and its key, or ``None`` (no material yet, e.g. PendingImport)."""
        if self.current_version is None:
            return None
        material = self.backing.get(self.current_version)
        return (self.current_version, material) if material is not None else None


class KeyCache:
    def __init__(self, pool: Pool, keyring: RootKeyring, *, ttl_s: float) -> None:
        self._pool = pool
        self._keyring = keyring
        self._keys: TtlCache[str, CachedKey] = TtlCache(ttl_s=ttl_s)
        self._aliases: TtlCache[tuple[str, str], str] = TtlCache(ttl_s=ttl_s)
        self.loads = 0  # database loads since start: a cheap gauge for tests and metrics

    def invalidate(self, payload: str | None = None) -> None:
        """Listener callback: ``payload`` is a key id, or ``None`` for "drop everything"."""
        self._keys.invalidate(payload)
        self._aliases.invalidate()

    async def get(self, key_id: str) -> CachedKey | None:
        """The cached key, loading it on a miss; ``None`` if the key does not exist."""
        hit = self._keys.get(key_id)
        if hit is not None:
            return hit
        generation = self._keys.generation
        self.loads += 1
        async with connection(self._pool) as con:
            record = await key_store.get_key(con, key_id)
            if record is None:
                return None
            wrapped = await key_store.versions(con, key_id)
        entry = self._build(record, wrapped)
        self._keys.put(key_id, entry, generation=generation)
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

    def _build(self, record: key_store.KeyRecord, wrapped: list[key_store.WrappedVersion]) -> CachedKey:
        try:
            policy = parse_policy(record.policy, PolicyKind.KEY)
        except KmsError as exc:
            # Policies are parsed before they are stored; an unparseable one is corruption.
            log.error("key.policy_unreadable", key_id=record.key.key_id)
            raise KMSInternalException("The key policy of this key cannot be read") from exc
        backing: dict[int, wrap.UnwrappedKey] = {}
        for version in wrapped:
            try:
                backing[version.version] = wrap.unwrap(
                    self._keyring, record.key.key_id, version.version, version.material_wrapped
                )
            except KeyringError as exc:
                log.error("key.material_unwrap_failed", key_id=record.key.key_id, version=version.version)
                raise KMSInternalException("Key material cannot be read with this node's root key") from exc
        return CachedKey(
            key=record.key,
            policy=policy,
            current_version=record.current_version,
            aws_service=record.aws_service,
            backing=MappingProxyType(backing),
        )

    async def key_policy(self, key: Key) -> Policy:
        """``KeyPolicySource`` for the authorizer: the cached parsed policy of ``key``."""
        entry = await self.get(key.key_id)
        if entry is None:
            raise NotFoundException(f"Key '{key.arn}' does not exist")
        return entry.policy
