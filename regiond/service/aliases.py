"""Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases (per account and region).

Names are checked by ``regiond.domain.ids.validate_new_alias_name`` (the ``alias/`` prefix, the
character rules, the reserved ``alias/aws/`` prefix). Uniqueness is the database's primary key,
so two racing CreateAlias calls for one name give one success and one
``AlreadyExistsException``. Authorization follows AWS ("Controlling access to aliases"): the
caller needs the alias permission on the alias, in an IAM policy, and on the key the alias points
to (for UpdateAlias: on the old and the new key), as ``regiond.domain.permissions.alias_operation``
declares them.
"""

from __future__ import annotations

import datetime as dt

from regiond.domain import ids, permissions
from regiond.domain.key import Key, require_state
from regiond.domain.permissions import DecidedBy
from regiond.errors import InvalidMarkerException, NotFoundException, ValidationException
from regiond.service.authz import Authorizer, Requester
from regiond.service.keycache import KeyCache
from regiond.service.keys import KeyService, Page
from regiond.store import aliases as alias_store
from regiond.store import keys as key_store
from regiond.store.aliases import AliasRecord
from regiond.store.pool import Pool, connection, transaction

__all__ = ["AliasService"]

DEFAULT_LIST_LIMIT = 100


class AliasService:
    def __init__(self, pool: Pool, keys: KeyService, *, authz: Authorizer, cache: KeyCache) -> None:
        self._pool = pool
        self._keys = keys
        self._authz = authz
        self._cache = cache
        self._region = keys.region

    def _arn(self, account: str, alias_name: str) -> str:
        return ids.alias_arn(self._region, account, alias_name)

    def _not_found(self, account: str, alias_name: str) -> NotFoundException:
        return NotFoundException(f"Alias {ids.alias_arn_text(self._region, account, alias_name)} is not found.")

    async def _authorize(self, who: Requester, operation: str, alias_name: str, *keys: Key) -> None:
        """Every permission ``permissions.alias_operation`` declares, before anything changes."""
        by_arn = {key.arn: key for key in keys}
        for permission in permissions.alias_operation(operation, alias_name, *keys):
            key = by_arn[permission.resource] if permission.decided_by is DecidedBy.KEY else None
            await self._authz.require(who.principal, permission, who.values, key=key)

    async def create_alias(self, who: Requester, alias_name: str, target: str, now: dt.datetime) -> str:
        """Create ``alias_name`` -> ``target``; returns the key ARN it points to."""
        ids.validate_new_alias_name(alias_name)
        entry = await self._keys.resolve(who, target, allow_alias=False)
        if entry.key.account != who.account:
            raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
        await self._authorize(who, "CreateAlias", alias_name, entry.key)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, entry.key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
            require_state("CreateAlias", record.key)
            await alias_store.insert(
                con, who.account, alias_name, record.key.key_id, now, arn=self._arn(who.account, alias_name)
            )
        self._cache.invalidate(entry.key.key_id)
        return entry.key.arn

    async def update_alias(self, who: Requester, alias_name: str, target: str, now: dt.datetime) -> tuple[str, str]:
        """Point ``alias_name`` at ``target``; returns (old key ARN, new key ARN)."""
        ids.validate_new_alias_name(alias_name)
        new = await self._keys.resolve(who, target, allow_alias=False)
        if new.key.account != who.account:
            raise NotFoundException(f"Key '{new.key.arn}' does not exist")
        old_key_id = await self._cache.alias_target(who.account, alias_name)
        if old_key_id is None:
            raise self._not_found(who.account, alias_name)
        old = await self._keys.resolve(who, old_key_id)
        await self._authorize(who, "UpdateAlias", alias_name, old.key, new.key)
        if (old.key.key_usage, old.key.key_spec) != (new.key.key_usage, new.key.key_spec):
            raise ValidationException(
                "The current and new KMS keys of an alias must have the same key usage and key spec"
            )
        async with transaction(self._pool) as con:
            alias = await alias_store.get(con, who.account, alias_name, for_update=True)
            if alias is None:
                raise self._not_found(who.account, alias_name)
            if alias.key_id != old.key.key_id:  # moved by a concurrent UpdateAlias after we authorized
                raise NotFoundException(f"Alias {self._arn(who.account, alias_name)} changed; retry the request")
            record = await key_store.get_key(con, new.key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{new.key.arn}' does not exist")
            require_state("UpdateAlias", record.key)
            await alias_store.update_target(con, who.account, alias_name, record.key.key_id, now)
        self._cache.invalidate(new.key.key_id)
        return old.key.arn, new.key.arn

    async def delete_alias(self, who: Requester, alias_name: str) -> str:
        """Delete ``alias_name``; returns the ARN of the key it pointed to."""
        if not alias_name.startswith(ids.ALIAS_PREFIX):
            raise ValidationException(f'Alias must start with the prefix "{ids.ALIAS_PREFIX}".')
        key_id = await self._cache.alias_target(who.account, alias_name)
        if key_id is None:
            raise self._not_found(who.account, alias_name)
        entry = await self._keys.resolve(who, key_id)
        await self._authorize(who, "DeleteAlias", alias_name, entry.key)
        async with transaction(self._pool) as con:
            alias = await alias_store.get(con, who.account, alias_name, for_update=True)
            if alias is None:
                raise self._not_found(who.account, alias_name)
            if alias.key_id != key_id:
                raise NotFoundException(f"Alias {self._arn(who.account, alias_name)} changed; retry the request")
            await alias_store.delete(con, who.account, alias_name)
        self._cache.invalidate(key_id)
        return entry.key.arn

    async def list_aliases(
        self, who: Requester, key_param: str | None, *, limit: int | None, marker: str | None
    ) -> Page[AliasRecord]:
        await self._authz.authorize(who.principal, "kms:ListAliases", None, request_values=who.values)
        if marker is not None and not marker.startswith(ids.ALIAS_PREFIX):
            raise InvalidMarkerException("Invalid marker")
        key_id = None
        if key_param is not None:
            entry = await self._keys.resolve(who, key_param, allow_alias=False)
            if entry.key.account != who.account:
                raise NotFoundException(f"Key '{entry.key.arn}' does not exist")
            key_id = entry.key.key_id
        size = limit or DEFAULT_LIST_LIMIT
        async with connection(self._pool) as con:
            rows = await alias_store.list_for_account(con, who.account, key_id=key_id, after=marker, limit=size + 1)
        return Page(rows[:size], rows[size - 1].alias_name if len(rows) > size else None)
