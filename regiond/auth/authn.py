"""Authentication: who signed this request.

Access keys are looked up once and cached with their unwrapped secret's *signing keys*
only (per access key, date, region and service, as SigV4 allows), so the hot path does
no database round trip and no key derivation in the steady state. Any IAM change
(LISTEN/NOTIFY on ``regionkms_iam``) drops the cache.

A failure is logged with the source address and the access key id the request claimed (never
its signature), counted per access key id with bounded labels, and throttled per source
(``regiond.auth.failures``). It is not audited, as AWS does not record a call that
has no identity.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog

from kmsclient import sigv4 as core
from regiond.auth import sigv4
from regiond.auth.failures import FailureThrottle, KeyLabels
from regiond.cache import TtlCache
from regiond.crypto.keyring import KeyringError, RootKeyring
from regiond.crypto.wrap import access_key_aad
from regiond.domain.principal import Principal
from regiond.errors import KmsError, KMSInternalException, ThrottlingException, UnrecognizedClientException
from regiond.runtime.metrics import AUTH_FAILURES, AUTH_THROTTLED
from regiond.store import iam as iam_store
from regiond.store.pool import Pool, connection

log = structlog.get_logger("regiond.authn")

_INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    access_key_id: str


class Authenticated(NamedTuple):
    """Who signed the request, and the values of the headers the signature covers (what dispatch reads)."""

    caller: Caller
    signed: sigv4.SignedHeaders


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    principal: Principal
    active: bool
    caller: Caller  # what every request signed with this key authenticates as: built once
    secret: bytes = field(repr=False)
    # date (kms) or date/service -> the signing key for the region, as ``core.keyed_hmac`` (what
    # ``sigv4.verify`` uses fastest)
    signing_keys: dict[str, hmac.HMAC] = field(default_factory=dict, repr=False)


class Authenticator:
    def __init__(
        self,
        pool: Pool,
        keyring: RootKeyring,
        *,
        region: str,
        max_skew_s: int,
        ttl_s: float,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._region = region
        self._max_skew_s = max_skew_s
        # Only keys that exist are cached: a miss is not remembered, so ids an attacker makes up
        # cannot push real keys out (the throttle bounds what their lookups cost instead).
        self._keys: TtlCache[str, _KeyEntry] = TtlCache(ttl_s=ttl_s)
        self._throttle = FailureThrottle(burst=0, refill_per_s=0.0) if throttle is None else throttle
        self._labels = KeyLabels()

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
        if entry is not None:
            self._keys.put(access_key_id, entry, generation=generation)
        return entry

    def _signing_key(self, entry: _KeyEntry, date: str, service: str) -> hmac.HMAC:
        scope = date if service == sigv4.SERVICE else f"{date}/{service}"  # the hot path's key is the date alone
        key = entry.signing_keys.get(scope)
        if key is None:
            key = core.keyed_hmac(core.signing_key(entry.secret.decode(), date, self._region, service))
            if len(entry.signing_keys) >= 6:  # today or yesterday near midnight, for kms and sts
                entry.signing_keys.clear()
            entry.signing_keys[scope] = key
        return key

    async def authenticate(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: sigv4.HeaderView,
        body: bytes,
        now: dt.datetime,
        source_ip: str,
        auth: sigv4.ParsedAuthorization | None = None,
    ) -> Authenticated:
        """Who signed the request; ``auth`` is its Authorization header when already parsed (``sigv4.parse``)."""
        throttled = self._throttle.exhausted(source_ip)
        access_key_id: str | None = None
        label = "none"
        guess = False  # from the key lookup on, a failure tells the caller something: throttled
        try:
            if auth is None:
                auth = sigv4.parse(headers)
            access_key_id = auth.access_key_id
            if not sigv4.well_formed_access_key_id(access_key_id):
                label = "malformed"
                raise UnrecognizedClientException(_INVALID_TOKEN)
            label = "unknown"
            sigv4.check_scope(auth, region=self._region, now=now, max_skew_s=self._max_skew_s)
            if "x-amz-security-token" in headers:
                # A session token beside a long-term access key: AWS refuses it rather than ignore it.
                raise UnrecognizedClientException(_INVALID_TOKEN)
            guess = True
            entry = self._keys.get(access_key_id) if throttled else await self._entry(access_key_id)
            if entry is None:
                raise UnrecognizedClientException(_INVALID_TOKEN)
            label = self._labels.label(access_key_id)
            if not entry.active:
                raise UnrecognizedClientException(_INVALID_TOKEN)
            signed = sigv4.verify(
                auth,
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                signing_key=self._signing_key(entry, auth.date, auth.service),
            )
        except KmsError as exc:
            if exc.status >= 500:  # the lookup failed (the database failing over): no failed authentication
                raise
            self._failed(exc, source_ip=source_ip, access_key_id=access_key_id, label=label,
                         guess=guess, throttled=throttled)  # fmt: skip
            raise
        return Authenticated(entry.caller, signed)

    def _failed(
        self, exc: KmsError, *, source_ip: str, access_key_id: str | None, label: str, guess: bool, throttled: bool
    ) -> None:
        """Count and log one failed authentication. A failure past the parse (an access key id that
        does not exist or is inactive, a wrong signature) is what guessing looks like and is what
        the answer's difference gives away: it is throttled per source, and once the source is
        throttled it is answered ``ThrottlingException``. A request that is merely malformed or
        unsigned reveals nothing and costs no lookup: it keeps its own error."""
        AUTH_FAILURES.labels(label, exc.code).inc()
        emptied = guess and self._throttle.failed(source_ip)
        if guess and throttled:
            AUTH_THROTTLED.inc()
            raise ThrottlingException("Rate exceeded") from None
        shown = access_key_id if label != "malformed" else "<malformed>"
        log.info("auth.failed", source_ip=source_ip, access_key_id=shown, error=exc.code, reason=exc.message)
        if emptied:
            log.warning("auth.throttling_source", source_ip=source_ip)
