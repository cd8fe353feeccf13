"""Accounts, users, roles, access keys and identity policies (the IAM side of the service).

Secret access keys are generated here, shown to the caller once, and stored only wrapped
under the region's root key with AAD bound to the access key id.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass

from regiond.crypto.keyring import RootKeyring
from regiond.domain.principal import (
    POLICY_NAME,
    Principal,
    PrincipalKind,
    principal_arn,
    require_account_id,
    require_name,
)
from regiond.errors import MalformedPolicyDocumentException, ValidationException
from regiond.store import iam as iam_store
from regiond.store.pool import Pool, connection, transaction

_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
SECRET_ACCESS_KEY_CHARS = 40
MAX_IDENTITY_POLICY_BYTES = 2048 * 5


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_access_key_id() -> str:
    return "AKIA" + _random(_ID_ALPHABET, 16)


def new_principal_id(kind: PrincipalKind) -> str:
    return {PrincipalKind.USER: "AIDA", PrincipalKind.ROLE: "AROA", PrincipalKind.ROOT: "ROOT"}[kind] + _random(
        _ID_ALPHABET, 17
    )


def access_key_aad(access_key_id: str) -> bytes:
    return b"access_key\x00" + access_key_id.encode()


@dataclass(frozen=True, slots=True)
class NewAccessKey:
    access_key_id: str
    secret_access_key: str
    arn: str

    def __repr__(self) -> str:
        return f"NewAccessKey(access_key_id={self.access_key_id!r}, arn={self.arn!r}, secret_access_key=<redacted>)"


class IamService:
    def __init__(self, pool: Pool, keyring: RootKeyring) -> None:
        self._pool = pool
        self._keyring = keyring

    async def create_account(self, account_id: str) -> Principal:
        require_account_id(account_id)
        root = Principal(
            principal_arn(account_id, PrincipalKind.ROOT, ""), account_id, PrincipalKind.ROOT, "", account_id
        )
        async with transaction(self._pool) as con:
            await iam_store.insert_account(con, account_id)
            await iam_store.insert_principal(con, root)
        return root

    async def ensure_account(self, account_id: str) -> Principal:
        async with connection(self._pool) as con:
            if await iam_store.account_exists(con, account_id):
                return await iam_store.get_principal(con, principal_arn(account_id, PrincipalKind.ROOT, ""))
        return await self.create_account(account_id)

    async def create_principal(self, account_id: str, kind: PrincipalKind, name: str) -> Principal:
        require_account_id(account_id)
        require_name(name, f"{kind.value} name")
        p = Principal(principal_arn(account_id, kind, name), account_id, kind, name, new_principal_id(kind))
        async with transaction(self._pool) as con:
            await iam_store.insert_principal(con, p)
        return p

    async def get_principal(self, arn: str) -> Principal:
        async with connection(self._pool) as con:
            return await iam_store.get_principal(con, arn)

    async def list_principals(self, account_id: str, kind: PrincipalKind) -> list[Principal]:
        async with connection(self._pool) as con:
            return await iam_store.list_principals(con, account_id, kind)

    async def create_access_key(self, principal_arn_: str) -> NewAccessKey:
        access_key_id = new_access_key_id()
        secret = _random(_SECRET_ALPHABET, SECRET_ACCESS_KEY_CHARS)
        wrapped = self._keyring.wrap(secret.encode(), access_key_aad(access_key_id))
        async with transaction(self._pool) as con:
            await iam_store.get_principal(con, principal_arn_)
            await iam_store.insert_access_key(con, access_key_id, principal_arn_, wrapped)
        return NewAccessKey(access_key_id, secret, principal_arn_)

    async def import_access_key(self, principal_arn_: str, access_key_id: str, secret: str) -> None:
        """Store a known key pair (used to bootstrap every region of a dev cluster alike)."""
        wrapped = self._keyring.wrap(secret.encode(), access_key_aad(access_key_id))
        async with transaction(self._pool) as con:
            if await iam_store.get_access_key(con, access_key_id) is None:
                await iam_store.insert_access_key(con, access_key_id, principal_arn_, wrapped)

    async def list_access_keys(self, principal_arn_: str) -> list[tuple[str, str]]:
        async with connection(self._pool) as con:
            return await iam_store.list_access_keys(con, principal_arn_)

    async def set_access_key_status(self, principal_arn_: str, access_key_id: str, status: str) -> None:
        if status not in ("Active", "Inactive"):
            raise ValidationException("Status must be Active or Inactive")
        async with transaction(self._pool) as con:
            await iam_store.set_access_key_status(con, principal_arn_, access_key_id, status)

    async def delete_access_key(self, principal_arn_: str, access_key_id: str) -> None:
        async with transaction(self._pool) as con:
            await iam_store.delete_access_key(con, principal_arn_, access_key_id)

    async def put_identity_policy(self, principal_arn_: str, name: str, document: str) -> None:
        if not POLICY_NAME.match(name):
            raise ValidationException("PolicyName must be 1-128 characters of letters, digits and +=,.@_-")
        validate_identity_policy(document)
        async with transaction(self._pool) as con:
            await iam_store.get_principal(con, principal_arn_)
            await iam_store.put_identity_policy(con, principal_arn_, name, document)

    async def delete_identity_policy(self, principal_arn_: str, name: str) -> None:
        async with transaction(self._pool) as con:
            await iam_store.delete_identity_policy(con, principal_arn_, name)

    async def identity_policies(self, principal_arn_: str) -> dict[str, str]:
        async with connection(self._pool) as con:
            return await iam_store.identity_policies(con, principal_arn_)


def validate_identity_policy(document: str) -> None:
    """Refuse documents that are not JSON objects or too large; the policy module checks the grammar."""
    if len(document.encode()) > MAX_IDENTITY_POLICY_BYTES:
        raise MalformedPolicyDocumentException("identity policy exceeds 10240 bytes")
    try:
        parsed = json.loads(document)
    except ValueError as exc:
        raise MalformedPolicyDocumentException("policy document is not valid JSON") from exc
    if not isinstance(parsed, dict) or "Statement" not in parsed:
        raise MalformedPolicyDocumentException("policy document must be an object with a Statement")
