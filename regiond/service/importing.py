"""Imported key material: GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial,
and expiry (called by ``regiond.background.import_expiry``).

A key created with Origin EXTERNAL has no material and waits in PendingImport. The operator
asks for a wrapping public key and an import token (valid 24 hours), encrypts 256 bits of
material under the public key (``crypto.import_wrap`` documents the four algorithms), and
imports it with the token. The first material becomes version 1 and current; the key goes
PendingImport -> Enabled.

Import token, format version 1 (17 bytes, opaque to clients)::

    1 byte version = 0x01 | 16 bytes token id (UUID; primary key of ``import_parameters``)

The token names a stored wrapping key pair; that row binds it to one KMS key and holds the
private half sealed under the root key with AAD naming key and token. A token of another key
or unknown to this Region is InvalidImportTokenException; one past its 24 hours is
ExpiredImportTokenException. A token may be used more than once while it is valid (AWS says
only that public key and token must come from the same response).

Material identity (``KeyMaterialId``, ``import_wrap.key_material_id``) decides every "same or
different material" question, compared in constant time:

- ImportType EXISTING_KEY_MATERIAL (the default once material was imported) must match a
  material already associated with the key (and ``KeyMaterialId`` if given); it restores the
  material's bytes on the same version number, so ciphertexts of that era decrypt again, and
  resets its expiry. Different material: IncorrectKeyMaterialException.
- ImportType NEW_KEY_MATERIAL (the default for the first import) must not match one; after the
  first import it adds material in state PENDING_ROTATION for RotateKeyOnDemand (one at a
  time; delete it to import different new material instead).

Key state: the key is Enabled only while every material associated with it (the current one
and all older ones) is imported, as AWS: "you will need to import all of the key materials
associated with the KMS key to change its state to Enabled". Deleting or expiring any of them
moves the key to PendingImport (PendingDeletion keys keep their state). Material still pending
rotation is not associated yet: deleting it forgets it and leaves the state alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from regiond.crypto import import_wrap, keymaterial, wrap
from regiond.crypto.import_wrap import WrappingAlgorithm, WrappingKeySpec
from regiond.crypto.keyring import KeyringError, RootKeyring
from regiond.domain.key import ExpirationModel, Key, KeyEvent, KeySpec, Origin, apply, require_state
from regiond.domain.keyspec import KeyFamily, family
from regiond.errors import (
    ExpiredImportTokenException,
    IncorrectKeyMaterialException,
    InvalidCiphertextException,
    InvalidImportTokenException,
    KMSInternalException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.service.authz import Authorizer, Requester, access_denied
from regiond.service.keycache import KeyCache
from regiond.service.keys import KeyService
from regiond.store import imports as import_store
from regiond.store import keys as key_store
from regiond.store import rotation as rotation_store
from regiond.store.pool import Conn, Pool, connection, transaction
from regiond.store.rotation import MaterialRecord

log = structlog.get_logger(__name__)

__all__ = [
    "IMPORT_TOKEN_VERSION",
    "MAX_VALID_TO",
    "PARAMETERS_VALID_FOR",
    "ImportMaterialRequest",
    "ImportService",
    "ParametersForImport",
    "parse_import_token",
]

IMPORT_TOKEN_VERSION = 1
_TOKEN_BYTES = 17
PARAMETERS_VALID_FOR = dt.timedelta(hours=24)
"""GetParametersForImport: "The public key and import token ... are valid for 24 hours"."""
MAX_VALID_TO = dt.timedelta(days=365)
"""ImportKeyMaterial ValidTo: "The maximum value is 365 days from the request date"."""
NEW_KEY_MATERIAL = "NEW_KEY_MATERIAL"
EXISTING_KEY_MATERIAL = "EXISTING_KEY_MATERIAL"


@dataclass(frozen=True, slots=True)
class ParametersForImport:
    key: Key
    import_token: bytes
    public_key: bytes
    valid_to: dt.datetime


@dataclass(frozen=True, slots=True)
class ImportMaterialRequest:
    import_token: bytes
    encrypted_key_material: bytes
    expiration_model: str | None = None
    valid_to: dt.datetime | None = None
    import_type: str | None = None
    description: str | None = None
    key_material_id: str | None = None


def _import_token(token_id: uuid.UUID) -> bytes:
    return bytes([IMPORT_TOKEN_VERSION]) + token_id.bytes


def parse_import_token(token: bytes) -> uuid.UUID:
    """The token id in ``token``; InvalidImportTokenException for anything not a v1 token."""
    if len(token) != _TOKEN_BYTES or token[0] != IMPORT_TOKEN_VERSION:
        raise InvalidImportTokenException("The import token is not valid.")
    return uuid.UUID(bytes=token[1:])


def _expiry(request: ImportMaterialRequest, now: dt.datetime) -> tuple[ExpirationModel, dt.datetime | None]:
    """ExpirationModel (default KEY_MATERIAL_EXPIRES) and ValidTo, checked as the API reference says."""
    model = ExpirationModel(request.expiration_model or ExpirationModel.KEY_MATERIAL_EXPIRES.value)
    valid_to = request.valid_to
    if model is ExpirationModel.KEY_MATERIAL_DOES_NOT_EXPIRE:
        if valid_to is not None:
            raise ValidationException("ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.")
        return model, None
    if valid_to is None:
        raise ValidationException(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default); "
            "use KEY_MATERIAL_DOES_NOT_EXPIRE for material that does not expire."
        )
    if valid_to <= now:
        raise ValidationException("ValidTo must be a future date and time.")
    if valid_to > now + MAX_VALID_TO:
        raise ValidationException("ValidTo must be at most 365 days from the request date.")
    return model, valid_to


def _expiry_values(request: ImportMaterialRequest) -> dict[str, tuple[str, ...]]:
    """``kms:ExpirationModel`` (the parameter or its default: conditions-kms, "works even when the
    parameter doesn't appear in the request") and ``kms:ValidTo`` (when sent), as AWS's examples
    compare it: seconds since the epoch (``NumericLessThanEquals``)."""
    model = request.expiration_model or ExpirationModel.KEY_MATERIAL_EXPIRES.value
    values: dict[str, tuple[str, ...]] = {"kms:ExpirationModel": (model,)}
    if request.valid_to is not None:
        values["kms:ValidTo"] = (str(int(request.valid_to.timestamp())),)
    return values


def _require_wrapping_fits(spec: KeySpec, algorithm: WrappingAlgorithm, wrapping_spec: WrappingKeySpec) -> None:
    """AWS's "Select a wrapping algorithm": RSA private keys need an RSA_AES algorithm; RSAES_OAEP_*
    with an RSA_2048 wrapping key cannot carry ECC_NIST_P521 material (it does not fit OAEP)."""
    if family(spec) is KeyFamily.RSA and algorithm not in import_wrap.RSA_PRIVATE_KEY_ALGORITHMS:
        raise ValidationException(
            f"To import RSA key material ({spec}) use an RSA_AES wrapping algorithm (RSA_AES_KEY_WRAP_SHA_1 or "
            f"RSA_AES_KEY_WRAP_SHA_256), not {algorithm}."
        )
    if (
        spec is KeySpec.ECC_NIST_P521 and wrapping_spec is WrappingKeySpec.RSA_2048
        and algorithm not in import_wrap.RSA_PRIVATE_KEY_ALGORITHMS
    ):  # fmt: skip
        raise ValidationException(
            f"{algorithm} with an RSA_2048 wrapping key cannot wrap ECC_NIST_P521 key material: use an RSA_3072 "
            "or RSA_4096 wrapping key, or an RSA_AES wrapping algorithm."
        )


def _associated(materials: list[MaterialRecord], current_version: int | None) -> list[MaterialRecord]:
    """Materials permanently associated with the key: the current one and every older one."""
    if current_version is None:
        return []
    return [m for m in materials if m.version <= current_version]


class ImportService:
    def __init__(
        self, pool: Pool, keyring: RootKeyring, keys: KeyService, *, authz: Authorizer, cache: KeyCache
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._keys = keys
        self._authz = authz
        self._cache = cache

    def invalidate(self, key_id: str) -> None:
        """Drop this process's cached copy of a key changed outside a request (the expiry sweeper)."""
        self._cache.invalidate(key_id)

    async def _external_key(
        self, who: Requester, value: str, operation: str, values: Mapping[str, tuple[str, ...]]
    ) -> Key:
        """Resolve (key id or ARN), authorize (``values``: the operation's own condition keys, added to
        the request's), same account only, Origin EXTERNAL only."""
        action = f"kms:{operation}"
        entry = await self._keys.resolve(who, value, allow_alias=False)
        await self._authz.authorize(who.principal, action, entry.key, request_values={**who.values, **values})
        key = entry.key
        if key.account != who.account:
            raise access_denied(who.principal, action, key.arn)
        if key.origin is not Origin.EXTERNAL:
            raise UnsupportedOperationException(
                f"{key.arn} origin is {key.origin} which is not valid for this operation: "
                "imported key material needs a key created with Origin EXTERNAL."
            )
        return key

    # --- GetParametersForImport ---------------------------------------------------------------

    async def get_parameters_for_import(
        self, who: Requester, value: str, algorithm: str, spec: str, now: dt.datetime
    ) -> ParametersForImport:
        # conditions-kms: kms:WrappingAlgorithm and kms:WrappingKeySpec, the request's parameters
        key = await self._external_key(
            who, value, "GetParametersForImport",
            {"kms:WrappingAlgorithm": (algorithm,), "kms:WrappingKeySpec": (spec,)},
        )  # fmt: skip
        require_state("GetParametersForImport", key)
        try:
            wrapping_algorithm = WrappingAlgorithm(algorithm)
        except ValueError:
            raise UnsupportedOperationException(
                f"WrappingAlgorithm {algorithm} is not supported: use RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, "
                "RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256."
            ) from None
        try:
            wrapping_spec = WrappingKeySpec(spec)
        except ValueError:
            raise UnsupportedOperationException(
                f"WrappingKeySpec {spec} is not supported: use RSA_2048, RSA_3072 or RSA_4096."
            ) from None
        _require_wrapping_fits(key.key_spec, wrapping_algorithm, wrapping_spec)
        pair = await asyncio.to_thread(import_wrap.generate_wrapping_key, wrapping_spec)
        token_id = uuid.uuid4()
        sealed = import_wrap.seal_private_key(
            self._keyring, pair.private, wrap.private_key_aad(key.key_id, str(token_id))
        )
        valid_to = now + PARAMETERS_VALID_FOR
        async with transaction(self._pool) as con:
            await import_store.insert_parameters(
                con,
                import_store.ImportParameters(
                    token_id, key.key_id, wrapping_algorithm.value, wrapping_spec.value, sealed, now, valid_to
                ),
            )
        log.info("key.import_parameters_issued", key_id=key.key_id, algorithm=wrapping_algorithm.value)
        return ParametersForImport(key, _import_token(token_id), pair.public_key_der, valid_to)

    # --- ImportKeyMaterial --------------------------------------------------------------------

    async def _open_material(self, key: Key, token: bytes, encrypted: bytes, now: dt.datetime) -> wrap.SecretMaterial:
        token_id = parse_import_token(token)
        async with connection(self._pool) as con:
            params = await import_store.get_parameters(con, token_id)
        if params is None or params.key_id != key.key_id:
            raise InvalidImportTokenException(f"The import token is not valid for {key.arn}.")
        if params.valid_to <= now:
            raise ExpiredImportTokenException(
                "The import token has expired: call GetParametersForImport for a new public key and token."
            )
        try:
            private = import_wrap.open_private_key(
                self._keyring, params.private_key_sealed, wrap.private_key_aad(key.key_id, str(token_id))
            )
        except KeyringError as exc:
            log.error("key.import_wrapping_key_unreadable", key_id=key.key_id)
            raise KMSInternalException("The wrapping key of this import token cannot be read") from exc
        try:
            opened = import_wrap.unwrap_key_material(private, WrappingAlgorithm(params.wrapping_algorithm), encrypted)
        except import_wrap.ImportUnwrapError:
            raise InvalidCiphertextException(
                "The encrypted key material could not be decrypted with the wrapping key and algorithm of this token."
            ) from None
        try:
            # Parsed completely (RSA's consistency check takes up to a second): off the event loop.
            return await asyncio.to_thread(keymaterial.check_imported, key.key_spec, opened)
        except keymaterial.MaterialError as exc:
            raise IncorrectKeyMaterialException(f"{exc} for a {key.key_spec} key.") from None

    async def import_key_material(
        self, who: Requester, value: str, request: ImportMaterialRequest, now: dt.datetime
    ) -> tuple[Key, str]:
        """Import (or re-import) material; returns the key and the material's KeyMaterialId."""
        key = await self._external_key(who, value, "ImportKeyMaterial", _expiry_values(request))
        require_state("ImportKeyMaterial", key)
        model, valid_to = _expiry(request, now)
        if request.import_type == NEW_KEY_MATERIAL and request.key_material_id is not None:
            raise ValidationException("KeyMaterialId cannot be specified with ImportType NEW_KEY_MATERIAL.")
        material = await self._open_material(key, request.import_token, request.encrypted_key_material, now)
        ident = import_wrap.key_material_id(key.key_id, material)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            require_state("ImportKeyMaterial", record.key)
            known = await rotation_store.materials(con, key.key_id)
            match = next((m for m in known if hmac.compare_digest(m.key_material_id, ident)), None)
            import_type = request.import_type or (EXISTING_KEY_MATERIAL if known else NEW_KEY_MATERIAL)
            if import_type == NEW_KEY_MATERIAL:
                version = await self._add_new(con, record, known, match, material, ident, model, valid_to, request, now)
            else:
                version = await self._restore(con, record, match, material, ident, model, valid_to, request, now)
            updated = await self._settle_state(con, record, KeyEvent.IMPORT_MATERIAL, now)
        self._cache.invalidate(key.key_id)
        log.info("key.material_imported", key_id=key.key_id, version=version, import_type=import_type)
        return updated, ident

    async def _add_new(
        self, con: Conn, record: key_store.KeyRecord, known: list[MaterialRecord], match: MaterialRecord | None,
        material: wrap.SecretMaterial, ident: str, model: ExpirationModel, valid_to: dt.datetime | None,
        request: ImportMaterialRequest, now: dt.datetime,
    ) -> int:  # fmt: skip
        key = record.key
        if match is not None:
            raise IncorrectKeyMaterialException(
                f"This key material is already associated with {key.arn}: import it with ImportType "
                "EXISTING_KEY_MATERIAL to re-import it."
            )
        if known:
            if key.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
                raise UnsupportedOperationException(
                    f"{key.arn} key spec {key.key_spec} does not rotate: new key material (for RotateKeyOnDemand) "
                    "is only for symmetric encryption keys. Re-import the key's material with EXISTING_KEY_MATERIAL."
                )
            if key.multi_region:
                raise UnsupportedOperationException(
                    f"{key.arn}: new key material for multi-Region keys with imported key material is not supported."
                )
            if any(m.version > (record.current_version or 0) for m in known):
                raise IncorrectKeyMaterialException(
                    f"{key.arn} already has new key material pending rotation: rotate it (RotateKeyOnDemand) or "
                    "delete it (DeleteImportedKeyMaterial with its KeyMaterialId) before importing different material."
                )
        version = await rotation_store.next_version(con, key.key_id)
        await rotation_store.insert_material(
            con, key.key_id, version, ident, now, imported=True, expiration_model=model.value, valid_to=valid_to,
            description=request.description,
        )  # fmt: skip
        await import_store.put_version(
            con, key.key_id, version, wrap.wrap(self._keyring, key.key_id, version, material), now
        )
        if record.current_version is None:  # the first material becomes current at once
            await rotation_store.set_current_version(con, key.key_id, version, now)
            await import_store.set_key_expiration(con, key.key_id, model.value, valid_to, now)
        return version

    async def _restore(
        self, con: Conn, record: key_store.KeyRecord, match: MaterialRecord | None, material: wrap.SecretMaterial,
        ident: str, model: ExpirationModel, valid_to: dt.datetime | None, request: ImportMaterialRequest,
        now: dt.datetime,
    ) -> int:  # fmt: skip
        key = record.key
        if request.key_material_id is not None and not hmac.compare_digest(request.key_material_id, ident):
            raise IncorrectKeyMaterialException(
                f"The key material does not match KeyMaterialId {request.key_material_id}."
            )
        if match is None:
            raise IncorrectKeyMaterialException(
                f"The key material is not the key material previously imported into {key.arn}."
            )
        version = match.version
        await import_store.put_version(
            con, key.key_id, version, wrap.wrap(self._keyring, key.key_id, version, material), now
        )
        await import_store.set_imported(
            con, key.key_id, version, expiration_model=model.value, valid_to=valid_to, description=request.description
        )
        if version == record.current_version:
            await import_store.set_key_expiration(con, key.key_id, model.value, valid_to, now)
        return version

    async def _settle_state(self, con: Conn, record: key_store.KeyRecord, event: KeyEvent, now: dt.datetime) -> Key:
        """Move the key's state after its materials changed: Enabled only if all associated
        material is present (``event`` IMPORT_MATERIAL), else the refusal/keep rules of ``event``."""
        current = await key_store.get_key(con, record.key.key_id)  # current_version may have moved
        assert current is not None
        materials = _associated(await rotation_store.materials(con, record.key.key_id), current.current_version)
        complete = bool(materials) and all(m.imported is not False for m in materials)
        key = record.key
        if event is KeyEvent.IMPORT_MATERIAL and not complete:
            return key  # still PendingImport until every associated material is back
        updated = apply(key, event, now=now)
        if updated != key:
            await key_store.update_state(con, updated, now)
        return updated

    # --- DeleteImportedKeyMaterial and expiry -------------------------------------------------

    async def delete_imported_key_material(
        self, who: Requester, value: str, key_material_id: str | None, now: dt.datetime
    ) -> tuple[Key, str]:
        """Delete one material's bytes (default: the current material); returns the key and the id
        deleted ("" when the key never had material: "no effect" in PendingImport)."""
        key = await self._external_key(who, value, "DeleteImportedKeyMaterial", {})
        require_state("DeleteImportedKeyMaterial", key)
        async with transaction(self._pool) as con:
            record = await key_store.get_key(con, key.key_id, for_update=True)
            if record is None:
                raise NotFoundException(f"Key '{key.arn}' does not exist")
            require_state("DeleteImportedKeyMaterial", record.key)
            known = await rotation_store.materials(con, key.key_id)
            if key_material_id is not None:
                target = next((m for m in known if hmac.compare_digest(m.key_material_id, key_material_id)), None)
                if target is None:
                    raise NotFoundException(f"Key material {key_material_id} is not associated with {key.arn}.")
            else:
                target = next((m for m in known if m.version == record.current_version), None)
            if target is None:
                return record.key, ""
            updated = await self._remove(
                con, record, target, KeyEvent.DELETE_IMPORTED_MATERIAL, now, forget_pending=True
            )
        self._cache.invalidate(key.key_id)
        log.info("key.material_deleted", key_id=key.key_id, version=target.version)
        return updated, target.key_material_id

    async def _remove(
        self, con: Conn, record: key_store.KeyRecord, target: MaterialRecord, event: KeyEvent, now: dt.datetime,
        *, forget_pending: bool,
    ) -> Key:  # fmt: skip
        key_id = record.key.key_id
        if target.version > (record.current_version or 0):
            # Pending rotation: not associated with the key yet, so the key's state is unaffected.
            if forget_pending:
                await import_store.delete_material(con, key_id, target.version)
            else:
                await import_store.delete_version(con, key_id, target.version)
                await import_store.set_pending_import(con, key_id, target.version)
            return record.key
        await import_store.delete_version(con, key_id, target.version)
        await import_store.set_pending_import(con, key_id, target.version)
        if target.version == record.current_version:
            await import_store.set_key_expiration(con, key_id, None, None, now)
        return await self._settle_state(con, record, event, now)

    async def expire_material(self, con: Conn, key_id: str, version: int, now: dt.datetime) -> bool:
        """Delete ``version``'s bytes if its ValidTo has passed (the expiry sweeper, in its
        transaction, with the key row locked); True if something expired."""
        record = await key_store.get_key(con, key_id, for_update=True)
        target = await rotation_store.material(con, key_id, version)
        if record is None or target is None or not target.imported or target.valid_to is None:
            return False
        if target.valid_to > now:
            return False
        updated = await self._remove(con, record, target, KeyEvent.MATERIAL_EXPIRED, now, forget_pending=False)
        log.info("key.material_expired", key_id=key_id, version=version, state=updated.key_state.value)
        return True
