"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, GenerateRandom: the hot path.

No database round trip in the steady state (DESIGN section 6): keys, aliases, parsed key
policies and unwrapped backing keys come from ``KeyCache``; identity policies from
``IamAuthorizer``'s cache. Every operation authorizes first, then checks the key state
(``domain.key.require_usable_for_crypto``), then does cryptography.

Blobs are ``domain.ciphertext`` format version 1: ``header || nonce || ciphertext || tag`` with
AAD = header || canonical encryption context (``domain.context``), sealed by the key's current
backing version. Decrypt reads the key id and backing version from the header, so it needs
no KeyId. Every way a blob can fail to open (bad framing, missing backing version, wrong
context, any changed byte) is the same ``InvalidCiphertextException`` with no message (STYLE.md
item 4): a prober learns nothing about which part was wrong. A blob whose key is not in this
Region (another Region's single-Region key, a deleted key) is AccessDeniedException with AWS's
wording, which names no key.

An RSA key (``ENCRYPT_DECRYPT`` with an asymmetric spec) encrypts with RSAES-OAEP instead; its
ciphertexts carry no header, so Decrypt needs the KeyId (``service.asymmetric``). The hot path
tells the two apart by one attribute, ``CachedKey.handle``, which only non-symmetric keys have.

``DryRun`` with ``DryRunModifiers`` IGNORE_CIPHERTEXT (Decrypt, ReEncrypt) checks only the key
named by KeyId (SourceKeyId): authorization, state and usage, and no ciphertext.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

from regiond.crypto import wrap
from regiond.crypto.errors import DecryptError
from regiond.domain import ciphertext
from regiond.domain.context import canonical_bytes, normalize
from regiond.domain.key import EncryptionAlgorithm, Key, KeySpec, KeyUsage, require_usable_for_crypto
from regiond.errors import (
    AccessDeniedException,
    DryRunOperationException,
    IncorrectKeyException,
    InvalidKeyUsageException,
    KMSInvalidStateException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.service.asymmetric import AsymmetricService
from regiond.service.authz import Authorizer, Requester
from regiond.service.keycache import CachedKey, KeyCache
from regiond.service.keys import KeyService, UsageTracker

__all__ = ["DATA_KEY_SPEC_BYTES", "CryptoService", "Decrypted", "Encrypted"]

DATA_KEY_SPEC_BYTES = {"AES_256": 32, "AES_128": 16}
DRY_RUN_MESSAGE = "The request would have succeeded, but the DryRun option is set."
INCORRECT_KEY_MESSAGE = "The key ID in the request does not identify a CMK that can perform this operation."
KEY_NOT_HERE_MESSAGE = (
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
    "or you are not allowed to access."
)
IGNORE_CIPHERTEXT = "IGNORE_CIPHERTEXT"
SYMMETRIC = EncryptionAlgorithm.SYMMETRIC_DEFAULT.value


# Named tuples rather than frozen dataclasses: one is built per call, at half the cost.
class Encrypted(NamedTuple):
    blob: bytes
    key: Key
    key_arn: str  # ``key.arn``, as the cache computed it once
    algorithm: str = SYMMETRIC
    key_material_id: str | None = None  # symmetric keys only, as AWS reports it


class Decrypted(NamedTuple):
    plaintext: bytes
    key: Key
    key_arn: str
    algorithm: str = SYMMETRIC
    key_material_id: str | None = None


Values = Mapping[str, tuple[str, ...]]
_SAME_KEY = "kms:ReEncryptOnSameKey"
_ALGORITHM = "kms:EncryptionAlgorithm"


def _re_encrypt_values(who: Requester, source: CachedKey, destination: CachedKey | None) -> Values | None:
    """ReEncrypt's ``kms:ReEncryptOnSameKey`` (conditions-kms: true when the destination KMS key is the
    source key), for the ReEncryptFrom check on ``source``; ``None`` for Decrypt."""
    if destination is None:
        return None
    return {**who.values, _SAME_KEY: ("true" if source.key.key_id == destination.key.key_id else "false",)}


def _require_symmetric(key: Key, operation: str, algorithm: str | None) -> None:
    if key.key_usage is not KeyUsage.ENCRYPT_DECRYPT or key.key_spec is not KeySpec.SYMMETRIC_DEFAULT:
        raise InvalidKeyUsageException(f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}.")
    if algorithm is not None and algorithm != EncryptionAlgorithm.SYMMETRIC_DEFAULT:
        raise InvalidKeyUsageException(f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.")


class CryptoService:
    def __init__(
        self, keys: KeyService, asymmetric: AsymmetricService, *, authz: Authorizer, cache: KeyCache,
        usage: UsageTracker,
    ) -> None:  # fmt: skip
        self._keys = keys
        self._cache = cache
        self._authz = authz
        self._usage = usage
        self.asymmetric = asymmetric

    async def _usable(
        self, who: Requester, entry: CachedKey, operation: str, *, action: str | None = None,
        context: Mapping[str, str], algorithm: str | None = None, values: Values | None = None,
    ) -> None:  # fmt: skip
        """Authorize, then the state and usage checks every cryptographic operation shares.

        ``values``: the request's condition values, when the operation adds its own to ``who.values``.
        ``kms:EncryptionAlgorithm`` is the request's algorithm, or SYMMETRIC_DEFAULT when it names
        none (conditions-kms: a condition "works even when the parameter doesn't appear in the
        request"; GenerateDataKey* take no algorithm and use SYMMETRIC_DEFAULT)."""
        values = {**(values or who.values), _ALGORITHM: (algorithm or SYMMETRIC,)}
        await self._authorized(who, entry, operation, action=action, context=context, values=values)
        _require_symmetric(entry.key, operation, algorithm)

    async def _authorized(
        self, who: Requester, entry: CachedKey, operation: str, *, action: str | None, context: Mapping[str, str],
        values: Values | None = None,
    ) -> None:  # fmt: skip
        await self._authz.authorize(
            who.principal, action or f"kms:{operation}", entry.key,
            encryption_context=context, request_values=values or who.values, grant_tokens=who.grant_tokens,
            key_policy=entry.policy,
        )  # fmt: skip
        require_usable_for_crypto(entry.key, operation)

    async def _authorized_asymmetric(
        self, who: Requester, entry: CachedKey, operation: str, *, action: str | None, context: Mapping[str, str],
        algorithm: str | None, values: Values | None = None,
    ) -> None:  # fmt: skip
        values = {**(values or who.values), _ALGORITHM: (algorithm or SYMMETRIC,)}
        await self._authorized(who, entry, operation, action=action, context=context, values=values)

    def _seal(self, entry: CachedKey, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        current, header_bytes = entry.current, entry.sealing_header  # the header: the current version's
        if current is None or header_bytes is None:  # an Enabled key always has material; guard a torn state
            raise KMSInvalidStateException(f"{entry.key.arn} has no key material.")
        material = current[1]
        sealed = wrap.seal(material, plaintext, ciphertext.aad(header_bytes, canonical_bytes(context)))
        return ciphertext.pack_bytes(header_bytes, sealed.to_bytes())

    async def encrypt(
        self, who: Requester, key_param: str, plaintext: bytes, context: Mapping[str, str] | None,
        *, algorithm: str | None = None, dry_run: bool = False,
    ) -> Encrypted:  # fmt: skip
        ctx = normalize(context)
        who = self._keys.naming(who, key_param)  # kms:RequestAlias
        entry = await self._keys.resolve(who, key_param)
        if entry.handle is not None:  # an HMAC or asymmetric key
            return await self._encrypt_asymmetric(who, entry, "Encrypt", None, plaintext, ctx, algorithm, dry_run)
        await self._usable(who, entry, "Encrypt", context=ctx, algorithm=algorithm)
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        blob = self._seal(entry, plaintext, ctx)
        self._usage.record(entry.key.key_id, "Encrypt", who.request_id)
        return Encrypted(blob, entry.key, entry.arn)

    async def _encrypt_asymmetric(
        self, who: Requester, entry: CachedKey, operation: str, action: str | None, plaintext: bytes,
        ctx: Mapping[str, str], algorithm: str | None, dry_run: bool, values: Values | None = None,
    ) -> Encrypted:  # fmt: skip
        await self._authorized_asymmetric(
            who, entry, operation, action=action, context=ctx, algorithm=algorithm, values=values
        )
        if dry_run:
            self.asymmetric.check_encryption_key(entry, operation, algorithm, ctx)
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        blob, chosen = self.asymmetric.encrypt(entry, operation, plaintext, algorithm, ctx)
        self._usage.record(entry.key.key_id, operation, who.request_id)
        return Encrypted(blob, entry.key, entry.arn, chosen.value)

    async def _open(
        self, who: Requester, blob: bytes, context: Mapping[str, str], key_param: str | None,
        *, operation: str, action: str, algorithm: str | None, ignore_ciphertext: bool = False,
        destination: CachedKey | None = None,
    ) -> Decrypted:  # fmt: skip
        """Open ``blob``; with ``ignore_ciphertext`` (a DryRun), check the named key and raise DryRun.

        ``destination``: ReEncrypt's destination key, for ``kms:ReEncryptOnSameKey``."""
        if key_param is not None:
            named = await self._keys.resolve(who, key_param)
            values = _re_encrypt_values(who, named, destination)
            if ignore_ciphertext:
                await self._check_only(who, named, operation, action, context, algorithm, values)
            if named.handle is not None:  # an HMAC or asymmetric key: RSAES-OAEP, no header
                await self._authorized_asymmetric(
                    who, named, operation, action=action, context=context, algorithm=algorithm, values=values
                )
                plaintext, chosen = self.asymmetric.decrypt(named, operation, blob, algorithm, context)
                return Decrypted(plaintext, named.key, named.arn, chosen.value)
            header, sealed = ciphertext.unpack(blob)
            if named.key.key_id != header.key_id:
                raise IncorrectKeyException(INCORRECT_KEY_MESSAGE)
        elif ignore_ciphertext:
            raise ValidationException("KeyId is required when DryRunModifiers includes IGNORE_CIPHERTEXT.")
        else:
            header, sealed = ciphertext.unpack(blob)
        entry = await self._cache.get(header.key_id)
        if entry is None:
            raise AccessDeniedException(KEY_NOT_HERE_MESSAGE)
        values = _re_encrypt_values(who, entry, destination)
        await self._usable(who, entry, operation, action=action, context=context, algorithm=algorithm, values=values)
        material = entry.backing.get(header.backing_version)
        if material is None:
            raise ciphertext.invalid_ciphertext()
        aad = ciphertext.aad(blob[: ciphertext.HEADER_BYTES], canonical_bytes(context))
        try:
            opened = wrap.unseal(material, sealed, aad)
        except DecryptError:
            raise ciphertext.invalid_ciphertext() from None
        return Decrypted(opened, entry.key, entry.arn, SYMMETRIC, entry.material_ids.get(header.backing_version))

    async def _check_only(
        self, who: Requester, entry: CachedKey, operation: str, action: str | None, context: Mapping[str, str],
        algorithm: str | None, values: Values | None = None,
    ) -> None:  # fmt: skip
        """DryRun with IGNORE_CIPHERTEXT: the key's checks, then DryRunOperationException."""
        if entry.handle is not None:
            await self._authorized_asymmetric(
                who, entry, operation, action=action, context=context, algorithm=algorithm, values=values
            )
            self.asymmetric.check_encryption_key(entry, operation, algorithm, context)
        else:
            await self._usable(
                who, entry, operation, action=action, context=context, algorithm=algorithm, values=values
            )
        raise DryRunOperationException(DRY_RUN_MESSAGE)

    async def decrypt(
        self, who: Requester, blob: bytes | None, context: Mapping[str, str] | None, key_param: str | None = None,
        *, algorithm: str | None = None, dry_run: bool = False, ignore_ciphertext: bool = False,
    ) -> Decrypted:  # fmt: skip
        ctx = normalize(context)
        if key_param is not None:
            who = self._keys.naming(who, key_param)  # kms:RequestAlias
        result = await self._open(
            who, blob or b"", ctx, key_param, operation="Decrypt", action="kms:Decrypt", algorithm=algorithm,
            ignore_ciphertext=dry_run and ignore_ciphertext,
        )  # fmt: skip
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        self._usage.record(result.key.key_id, "Decrypt", who.request_id)
        return result

    async def re_encrypt(
        self, who: Requester, blob: bytes | None, *, source_context: Mapping[str, str] | None,
        source_key: str | None, destination_key: str, destination_context: Mapping[str, str] | None,
        source_algorithm: str | None = None, destination_algorithm: str | None = None, dry_run: bool = False,
        ignore_ciphertext: bool = False,
    ) -> tuple[Decrypted, Encrypted]:  # fmt: skip
        """Decrypt under the source key and encrypt under the destination: (source side, result)."""
        src_ctx, dst_ctx = normalize(source_context), normalize(destination_context)
        # kms:RequestAlias: each side sees the alias its own KeyId parameter names
        src_who = self._keys.naming(who, source_key) if source_key is not None else who
        who = self._keys.naming(who, destination_key)
        # The destination is resolved first: both permissions see kms:ReEncryptOnSameKey.
        destination = await self._keys.resolve(who, destination_key)
        opened = await self._open(
            src_who, blob or b"", src_ctx, source_key,
            operation="ReEncrypt", action="kms:ReEncryptFrom", algorithm=source_algorithm,
            ignore_ciphertext=dry_run and ignore_ciphertext, destination=destination,
        )  # fmt: skip
        same = {**who.values, _SAME_KEY: ("true" if opened.key.key_id == destination.key.key_id else "false",)}
        if destination.handle is not None:
            result = await self._encrypt_asymmetric(
                who, destination, "ReEncrypt", "kms:ReEncryptTo", opened.plaintext, dst_ctx, destination_algorithm,
                dry_run, values=same,
            )  # fmt: skip
            self._usage.record(opened.key.key_id, "ReEncrypt", who.request_id)
            return opened, result
        await self._usable(
            who, destination, "ReEncrypt", action="kms:ReEncryptTo", context=dst_ctx, algorithm=destination_algorithm,
            values=same,
        )  # fmt: skip
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        new_blob = self._seal(destination, opened.plaintext, dst_ctx)
        self._usage.record(opened.key.key_id, "ReEncrypt", who.request_id)
        self._usage.record(destination.key.key_id, "ReEncrypt", who.request_id)
        return opened, Encrypted(new_blob, destination.key, destination.arn, SYMMETRIC, destination.current_material_id)

    async def generate_data_key(
        self, who: Requester, key_param: str, context: Mapping[str, str] | None,
        *, key_spec: str | None, number_of_bytes: int | None, with_plaintext: bool, dry_run: bool = False,
    ) -> tuple[bytes, Encrypted]:  # fmt: skip
        """A fresh data key and its blob; the caller drops the plaintext for ...WithoutPlaintext."""
        operation = "GenerateDataKey" if with_plaintext else "GenerateDataKeyWithoutPlaintext"
        if key_spec is None and number_of_bytes is None:
            raise ValidationException("Please specify either number of bytes or key spec.")
        if key_spec is not None and number_of_bytes is not None:
            raise ValidationException("Please specify either number of bytes or key spec, not both.")
        size = DATA_KEY_SPEC_BYTES[key_spec] if key_spec is not None else number_of_bytes
        assert size is not None
        ctx = normalize(context)
        who = self._keys.naming(who, key_param)  # kms:RequestAlias
        entry = await self._keys.resolve(who, key_param)
        await self._usable(who, entry, operation, context=ctx)
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        data_key = os.urandom(size)
        blob = self._seal(entry, data_key, ctx)
        self._usage.record(entry.key.key_id, operation, who.request_id)
        return data_key, Encrypted(blob, entry.key, entry.arn, SYMMETRIC, entry.current_material_id)

    async def seal_new(
        self, who: Requester, key_param: str, context: Mapping[str, str] | None, *, operation: str,
        make: Callable[[], Awaitable[bytes]], dry_run: bool = False, values: Values | None = None,
    ) -> tuple[bytes, Encrypted]:  # fmt: skip
        """Like GenerateDataKey, for secrets that ``make`` produces once the key has passed every
        check (GenerateDataKeyPair*: a private key); ``values``, the operation's own condition keys,
        are added to the request's (``kms:DataKeyPairSpec``)."""
        ctx = normalize(context)
        who = self._keys.naming(who, key_param)  # kms:RequestAlias
        entry = await self._keys.resolve(who, key_param)
        await self._usable(who, entry, operation, context=ctx, values={**who.values, **(values or {})})
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        secret = await make()
        blob = self._seal(entry, secret, ctx)
        self._usage.record(entry.key.key_id, operation, who.request_id)
        return secret, Encrypted(blob, entry.key, entry.arn, SYMMETRIC, entry.current_material_id)

    async def generate_random(
        self, who: Requester, number_of_bytes: int | None, *, custom_key_store_id: str | None = None
    ) -> bytes:
        await self._authz.authorize(who.principal, "kms:GenerateRandom", None, request_values=who.values)
        if custom_key_store_id is not None:
            raise UnsupportedOperationException("Custom key stores are not supported by regionkms")
        if number_of_bytes is None:
            raise ValidationException("Please specify the number of bytes (NumberOfBytes) to generate.")
        return os.urandom(number_of_bytes)
