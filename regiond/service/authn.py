"""Authentication: who signed this request.

Access keys are looked up once and cached with their unwrapped secret's *signing keys*
only (per access key, date, region and service, as SigV4 allows), so the hot path does
no database round trip and no key derivation in the steady state. Any IAM change
(LISTEN/NOTIFY on ``regionkms_iam``) drops the cache.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from kmsclient import sigv4 as core
from regiond.cache import TtlCache
from regiond.crypto.keyring import KeyringError, RootKeyring
from regiond.domain.principal import Principal
from regiond.errors import KMSInternalException, UnrecognizedClientException
from regiond.protocol import sigv4
from regiond.service.iam import access_key_aad
from regiond.store import iam as iam_store
from regiond.store.pool import Pool, connection


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    access_key_id: str


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    principal: Principal
    active: bool
    caller: Caller  # what every request signed with this key authenticates as: built once
    secret: bytes = field(repr=False)
    # date -> the signing key for (region, kms), as ``core.keyed_hmac`` (what ``sigv4.verify`` uses fastest)
    signing_keys: dict[str, hmac.HMAC] = field(default_factory=dict, repr=False)


class Authenticator:
    def __init__(self, pool: Pool, keyring: RootKeyring, *, region: str, max_skew_s: int, ttl_s: float) -> None:
        self._pool = pool
        self._keyring = keyring
        self._region = region
        self._max_skew_s = max_skew_s
        self._keys: TtlCache[str, _KeyEntry | None] = TtlCache(ttl_s=ttl_s)

    def invalidate(self, _payload: str | None = None) -> None:
        self._keys.invalidate()

    async def _entry(self, access_key_id: str) -> _KeyEntry | None:
        generation = self._keys.generation
        hit = self._keys.get(access_key_id)
        if hit is not None:
            return hit
        async with connection(self._pool) as con:
            row = await iam_store.get_access_key(con, access_key_id)
        entry = None
        if row is not None:
            try:
                secret = self._keyring.unwrap(row.secret_wrapped, access_key_aad(access_key_id)).decode()
            except KeyringError as exc:
                raise KMSInternalException("stored credentials cannot be read with this node's root key") from exc
            entry = _KeyEntry(
                row.principal, row.status == "Active", Caller(row.principal, access_key_id), secret.encode()
            )
        self._keys.put(access_key_id, entry, generation=generation)
        return entry

    def _signing_key(self, entry: _KeyEntry, date: str) -> hmac.HMAC:
        key = entry.signing_keys.get(date)
        if key is None:
            key = core.keyed_hmac(core.signing_key(entry.secret.decode(), date, self._region, sigv4.SERVICE))
            if len(entry.signing_keys) >= 3:  # a request's date is today, or yesterday near midnight
                entry.signing_keys.clear()
            entry.signing_keys[date] = key
        return key

    async def authenticate(
        self, *, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, now: dt.datetime
    ) -> Caller:
        auth = sigv4.parse(headers)
        sigv4.check_scope(auth, region=self._region, now=now, max_skew_s=self._max_skew_s)
        entry = await self._entry(auth.access_key_id)
        if entry is None or not entry.active:
            raise UnrecognizedClientException("The security token included in the request is invalid.")
        sigv4.verify(
            auth,
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            signing_key=self._signing_key(entry, auth.date),
        )
        return entry.caller
