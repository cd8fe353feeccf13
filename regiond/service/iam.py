"""Accounts, users, roles, access keys and identity policies (the IAM side of the service).

Secret access keys are generated here, shown to the caller once, and stored only wrapped
under the region's root key with AAD bound to the access key id.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from regiond.crypto.keyring import RootKeyring
from regiond.crypto.wrap import access_key_aad
from regiond.domain.policy import PolicyKind, parse_policy_for_write
from regiond.domain.principal import (
    POLICY_NAME,
    Principal,
    PrincipalKind,
    principal_arn,
    require_account_id,
    require_name,
)
from regiond.errors import MalformedPolicyDocumentException, UnsupportedOperationException, ValidationException
from regiond.store import iam as iam_store
from regiond.store.outbox import Outbox
from regiond.store.pool import Conn, Pool, connection, transaction
from replication.messages import (
    IamAccessKey,
    IamAccessKeyDeleted,
    IamAccessKeyStatus,
    IamAccount,
    IamChange,
    IamPolicy,
    IamPolicyDeleted,
    IamPrincipal,
)

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


@dataclass(frozen=True, slots=True)
class NewAccessKey:
    access_key_id: str
    secret_access_key: str
    arn: str

    def __repr__(self) -> str:
        return f"NewAccessKey(access_key_id={self.access_key_id!r}, arn={self.arn!r}, secret_access_key=<redacted>)"


class IamService:
    """IAM reads and writes. With an ``outbox`` (a replicated node), writes are allowed only in the
    IAM home region and each one is queued for every other region in its own transaction."""

    def __init__(self, pool: Pool, keyring: RootKeyring, *, outbox: Outbox | None = None) -> None:
        self._pool = pool
        self._keyring = keyring
        self._outbox = outbox
        self.on_change: list[Callable[[], None]] = []
        """Called after every committed write: this process's caches (authentication, identity
        policies) drop what they hold at once, before the NOTIFY that tells every other process
        arrives, so a new Deny or a deactivated key takes effect here with the answer."""

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def _require_home(self) -> None:
        if self._outbox is not None and not self._outbox.is_iam_home:
            raise UnsupportedOperationException(
                f"IAM is read-only in {self._outbox.region}: it is managed in the home region "
                f"{self._outbox.iam_home_region}; send this request to that region's endpoint"
            )

    async def _replicate(self, con: Conn, change: IamChange) -> None:
        if self._outbox is not None:
            await self._outbox.append_iam(con, change)

    async def create_account(self, account_id: str) -> Principal:
        require_account_id(account_id)
        root = Principal(
            principal_arn(account_id, PrincipalKind.ROOT, ""), account_id, PrincipalKind.ROOT, "", account_id
        )
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.insert_account(con, account_id)
            await iam_store.insert_principal(con, root)
            await self._replicate(con, IamAccount(account_id, root_principal_id=account_id))
        self._changed()
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
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.insert_principal(con, p)
            await self._replicate(con, IamPrincipal(p.arn, account_id, kind, name, p.principal_id))
        self._changed()
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
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.get_principal(con, principal_arn_)
            await iam_store.insert_access_key(con, access_key_id, principal_arn_, wrapped)
            # The secret is not in the entry: the sender reads it and seals it to each region.
            await self._replicate(con, IamAccessKey(access_key_id, principal_arn_, "Active"))
        self._changed()
        return NewAccessKey(access_key_id, secret, principal_arn_)

    async def import_access_key(self, principal_arn_: str, access_key_id: str, secret: str) -> None:
        """Store a known key pair (used to bootstrap every region of a dev cluster alike)."""
        wrapped = self._keyring.wrap(secret.encode(), access_key_aad(access_key_id))
        self._require_home()
        async with transaction(self._pool) as con:
            if await iam_store.get_access_key(con, access_key_id) is None:
                await iam_store.insert_access_key(con, access_key_id, principal_arn_, wrapped)
                await self._replicate(con, IamAccessKey(access_key_id, principal_arn_, "Active"))
        self._changed()

    async def list_access_keys(self, principal_arn_: str) -> list[tuple[str, str]]:
        async with connection(self._pool) as con:
            return await iam_store.list_access_keys(con, principal_arn_)

    async def set_access_key_status(self, principal_arn_: str, access_key_id: str, status: str) -> None:
        if status not in ("Active", "Inactive"):
            raise ValidationException("Status must be Active or Inactive")
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.set_access_key_status(con, principal_arn_, access_key_id, status)
            await self._replicate(con, IamAccessKeyStatus(access_key_id, status))
        self._changed()

    async def delete_access_key(self, principal_arn_: str, access_key_id: str) -> None:
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.delete_access_key(con, principal_arn_, access_key_id)
            await self._replicate(con, IamAccessKeyDeleted(access_key_id))
        self._changed()

    async def put_identity_policy(self, principal_arn_: str, name: str, document: str) -> None:
        if not POLICY_NAME.match(name):
            raise ValidationException("PolicyName must be 1-128 characters of letters, digits and +=,.@_-")
        validate_identity_policy(document)
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.get_principal(con, principal_arn_)
            await iam_store.put_identity_policy(con, principal_arn_, name, document)
            await self._replicate(con, IamPolicy(principal_arn_, name, document))
        self._changed()

    async def delete_identity_policy(self, principal_arn_: str, name: str) -> None:
        self._require_home()
        async with transaction(self._pool) as con:
            await iam_store.delete_identity_policy(con, principal_arn_, name)
            await self._replicate(con, IamPolicyDeleted(principal_arn_, name))
        self._changed()

    async def identity_policies(self, principal_arn_: str) -> dict[str, str]:
        async with connection(self._pool) as con:
            return await iam_store.identity_policies(con, principal_arn_)


def validate_identity_policy(document: str) -> None:
    """Refuse a document that is too large or that the policy grammar does not accept.

    The whole grammar is checked here, when the policy is written: a stored document that
    cannot be parsed would have to be ignored when deciding, and ignoring it would drop its
    Deny statements (``IamAuthorizer`` makes such a document deny everything instead)."""
    if len(document.encode()) > MAX_IDENTITY_POLICY_BYTES:
        raise MalformedPolicyDocumentException("identity policy exceeds 10240 bytes")
    parse_policy_for_write(document, PolicyKind.IDENTITY)
