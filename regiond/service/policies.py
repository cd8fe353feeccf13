"""Key policies: GetKeyPolicy, PutKeyPolicy, ListKeyPolicies.

A key has one key policy, named ``default``. PutKeyPolicy parses the document strictly
(``regiond.domain.policy.parse_policy``: MalformedPolicyDocumentException with the reason, the
32 KiB limit) and applies AWS's lockout safety check: a policy that would no longer let the
caller call PutKeyPolicy is refused unless ``BypassPolicyLockoutSafetyCheck`` is true. The
write locks the key row and updates it, so the ``regionkms_keys`` NOTIFY makes every process
of the region drop the cached key and its parsed policy; this process drops it at once.

Key policies are a per-region property (DESIGN section 8), never replicated.
"""

from __future__ import annotations

import datetime as dt

import structlog

from regiond.domain.key import Key, KeyManager, require_state
from regiond.domain.key_conditions import bypass_values
from regiond.domain.policy import PolicyKind, parse_policy_for_write
from regiond.errors import InvalidMarkerException, MalformedPolicyDocumentException, NotFoundException
from regiond.service.authz import Authorizer, Requester, access_denied
from regiond.service.keycache import KeyCache
from regiond.service.keys import LOCKOUT_MESSAGE, KeyService, Page
from regiond.store import keys as key_store
from regiond.store import policies as policy_store
from regiond.store.pool import Pool, connection, transaction

log = structlog.get_logger(__name__)

__all__ = ["DEFAULT_POLICY_NAME", "KeyPolicyService"]

DEFAULT_POLICY_NAME = "default"


def _require_default(policy_name: str | None) -> None:
    if policy_name is not None and policy_name != DEFAULT_POLICY_NAME:
        raise NotFoundException(f"Key policy {policy_name[:128]} does not exist: the only key policy is 'default'")


class KeyPolicyService:
    def __init__(self, pool: Pool, keys: KeyService, *, authz: Authorizer, cache: KeyCache) -> None:
        self._pool = pool
        self._keys = keys
        self._authz = authz
        self._cache = cache

    async def get_key_policy(self, who: Requester, key_param: str, policy_name: str | None) -> tuple[Key, str]:
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        await self._authz.authorize(who.principal, "kms:GetKeyPolicy", entry.key, request_values=who.values)
        _require_default(policy_name)
        async with connection(self._pool) as con:
            document = await policy_store.get_policy(con, entry.key.key_id)
        if document is None:
            raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
        return entry.key, document

    async def list_key_policies(
        self, who: Requester, key_param: str, *, limit: int | None, marker: str | None
    ) -> tuple[Key, Page[str]]:
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        await self._authz.authorize(who.principal, "kms:ListKeyPolicies", entry.key, request_values=who.values)
        if marker is not None:  # one policy: there is never a second page to ask for
            raise InvalidMarkerException("Invalid marker")
        del limit  # at least 1, so the single name always fits
        return entry.key, Page([DEFAULT_POLICY_NAME], None)

    async def put_key_policy(
        self, who: Requester, key_param: str, policy_name: str | None, document: str, *,
        bypass_lockout_check: bool | None, now: dt.datetime,
    ) -> Key:  # fmt: skip
        """``bypass_lockout_check`` is ``None`` when the request did not send the parameter (then the
        ``kms:BypassPolicyLockoutSafetyCheck`` condition key is absent, as in AWS)."""
        entry = await self._keys.resolve(who, key_param, allow_alias=False)
        key = entry.key
        await self._authz.authorize(
            who.principal, "kms:PutKeyPolicy", key, request_values={**who.values, **bypass_values(bypass_lockout_check)}
        )
        if key.key_manager is KeyManager.AWS:  # their policy allows no PutKeyPolicy; a second line
            raise access_denied(who.principal, "kms:PutKeyPolicy", key.arn)
        _require_default(policy_name)
        parsed = parse_policy_for_write(document, PolicyKind.KEY)
        if not bypass_lockout_check and not await self._authz.allows_put_key_policy_later(
            who.principal, parsed, key_arn=key.arn, key_account=key.account, request_values=who.values
        ):
            raise MalformedPolicyDocumentException(LOCKOUT_MESSAGE)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            require_state("PutKeyPolicy", record.key)
            await policy_store.set_policy(con, key.key_id, document, now)
        self._cache.invalidate(key.key_id)
        log.info("key.policy_changed", key_id=key.key_id, statements=len(parsed.statements))
        return key
