"""Keyrings, as the AWS Encryption SDK specification names them (framework/aws-kms/*, multi-keyring).

Every encrypted data key (EDK) these keyrings write has provider id ``aws-kms`` and the KMS key
ARN that answered as provider info, so any ESDK opens it with its own KMS keyrings.

- ``AwsKmsKeyring`` (strict): one KMS key. Encrypt: GenerateDataKey (or Encrypt, when a data key
  exists already). Decrypt: only EDKs whose provider info equals the configured identifier, sent
  to that key's own region.
- ``AwsKmsMrkKeyring`` (MRK-aware strict): as strict, but an EDK of a multi-region key matches any
  replica of the configured key (same partition, account and ``mrk-`` id, any region), and the
  call goes to the nearest region holding a replica, the ARN rewritten to that region.
- ``AwsKmsDiscoveryKeyring``: decrypt only; tries whatever ``aws-kms`` EDK the message holds,
  limited by a ``DiscoveryFilter`` (partition and accounts). A single-region key's EDK goes to its
  ARN's region only; an mrk's (MRK-aware, the default) to the nearest replica.
- ``MultiKeyring``: a generator and children. Encrypt wraps one data key under every keyring, so
  the message opens wherever any of them is reachable; decrypt tries the keyrings nearest first
  and stops at the first that opens a data key.

A keyring checks what KMS answered: the key ARN must be a valid key ARN (and, on decrypt, the one
that was asked for) and the data key exactly 32 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kmsclient.client import KmsClient
from kmsclient.errors import ConfigurationError, KmsClientError, MaterialsError
from kmsclient.materials import DecryptionMaterials, EncryptionMaterials
from kmsclient.message import DATA_KEY_BYTES, EncryptedDataKey
from kmsclient.routing import KeyRef, parse_key_id

PROVIDER_ID = "aws-kms"


class Keyring(Protocol):
    async def on_encrypt(self, materials: EncryptionMaterials) -> EncryptionMaterials: ...

    async def on_decrypt(
        self, materials: DecryptionMaterials, edks: Sequence[EncryptedDataKey]
    ) -> DecryptionMaterials: ...

    def region_hint(self) -> str | None:
        """The region this keyring's calls go to first, if it knows (multi-keyring ordering)."""
        ...


def _key_arn(value: str) -> KeyRef:
    try:
        ref = parse_key_id(value)
    except ConfigurationError:
        raise MaterialsError("KMS answered with a key id that is not a key ARN") from None
    if not ref.is_arn or ref.resource_type != "key":
        raise MaterialsError("KMS answered with a key id that is not a key ARN")
    return ref


def mrk_match(a: str, b: str) -> bool:
    """The spec's ``AWS KMS MRK Match for Decrypt``: equal, or the same mrk in another region."""
    if a == b:
        return True
    try:
        ra, rb = parse_key_id(a), parse_key_id(b)
    except ConfigurationError:
        return False
    if not (ra.multi_region and rb.multi_region and ra.is_arn and rb.is_arn):
        return False
    return (ra.partition, ra.account, ra.resource_type, ra.resource_id) == (
        rb.partition,
        rb.account,
        rb.resource_type,
        rb.resource_id,
    )


class _KmsKeyring:
    mrk_aware = False

    def __init__(self, client: KmsClient, key_id: str, *, grant_tokens: Sequence[str] = ()) -> None:
        self.client = client
        self.key = parse_key_id(key_id)
        self.key_id = key_id
        self.grant_tokens = tuple(grant_tokens)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key_id!r})"

    def region_hint(self) -> str | None:
        return self.key.region or self.client.router.home_region

    def _matches(self, provider_info: str) -> bool:
        return provider_info == self.key_id

    async def on_encrypt(self, materials: EncryptionMaterials) -> EncryptionMaterials:
        context = materials.encryption_context
        if materials.data_key is None:
            made = await self.client.generate_data_key(
                self.key_id, context, number_of_bytes=DATA_KEY_BYTES, grant_tokens=self.grant_tokens,
                mrk_aware=self.mrk_aware,
            )  # fmt: skip
            _key_arn(made.key_arn)
            if len(made.plaintext) != DATA_KEY_BYTES:
                raise MaterialsError("KMS answered with a data key of the wrong length")
            return materials.with_data_key(
                made.plaintext, EncryptedDataKey(PROVIDER_ID, made.key_arn.encode(), made.ciphertext)
            )
        blob, arn = await self.client.encrypt(
            self.key_id, materials.data_key, context, grant_tokens=self.grant_tokens, mrk_aware=self.mrk_aware
        )
        _key_arn(arn)
        return materials.with_edk(EncryptedDataKey(PROVIDER_ID, arn.encode(), blob))

    async def on_decrypt(self, materials: DecryptionMaterials, edks: Sequence[EncryptedDataKey]) -> DecryptionMaterials:
        if materials.data_key is not None:
            raise MaterialsError("the decryption materials already hold a data key")
        errors: list[str] = []
        for edk in edks:
            if edk.provider_id != PROVIDER_ID:
                continue
            try:
                info = edk.provider_info.decode()
            except UnicodeDecodeError:
                continue
            if not self._matches(info):
                continue
            try:
                return await _decrypt_edk(self.client, materials, edk, self.key_id, self.grant_tokens, self.mrk_aware)
            except KmsClientError as exc:
                errors.append(str(exc))
        raise _no_data_key(errors, f"no encrypted data key of the message is for {self.key_id}")


class AwsKmsKeyring(_KmsKeyring):
    """Strict: only EDKs whose provider info is exactly the configured key identifier."""


class AwsKmsMrkKeyring(_KmsKeyring):
    """MRK-aware strict: a replica of the configured multi-region key in any region matches."""

    mrk_aware = True

    def _matches(self, provider_info: str) -> bool:
        return mrk_match(self.key_id, provider_info)


@dataclass(frozen=True)
class DiscoveryFilter:
    accounts: frozenset[str]
    partition: str = "aws"

    def __post_init__(self) -> None:
        if not self.accounts or not all(a.isdigit() and len(a) == 12 for a in self.accounts):
            raise ConfigurationError("a discovery filter needs one or more 12-digit account ids")


class AwsKmsDiscoveryKeyring:
    """Decrypt with whatever ``aws-kms`` key the message names, within the filter."""

    def __init__(
        self,
        client: KmsClient,
        *,
        discovery_filter: DiscoveryFilter | None = None,
        grant_tokens: Sequence[str] = (),
        mrk_aware: bool = True,
    ) -> None:
        self.client = client
        self.discovery_filter = discovery_filter
        self.grant_tokens = tuple(grant_tokens)
        self.mrk_aware = mrk_aware

    def region_hint(self) -> str | None:
        return None

    async def on_encrypt(self, materials: EncryptionMaterials) -> EncryptionMaterials:
        raise MaterialsError("a discovery keyring only decrypts: give the keys to encrypt under")

    async def on_decrypt(self, materials: DecryptionMaterials, edks: Sequence[EncryptedDataKey]) -> DecryptionMaterials:
        if materials.data_key is not None:
            raise MaterialsError("the decryption materials already hold a data key")
        errors: list[str] = []
        candidates: list[tuple[str, EncryptedDataKey]] = []
        for edk in edks:
            if edk.provider_id != PROVIDER_ID:
                continue
            try:
                ref = _key_arn(edk.provider_info.decode())
            except (UnicodeDecodeError, MaterialsError):
                errors.append("an aws-kms encrypted data key names no valid key ARN")
                continue
            f = self.discovery_filter
            if f is not None and (ref.partition != f.partition or ref.account not in f.accounts):
                continue
            candidates.append((ref.raw, edk))
        # Nearest first: an EDK whose key is served by a nearer region is tried before the others.
        order = self.client.router.nearest_first(list(dict.fromkeys(self.client.router.regions)))
        rank = {r: i for i, r in enumerate(order)}

        def distance(item: tuple[str, EncryptedDataKey]) -> int:
            ref = parse_key_id(item[0])
            return 0 if ref.multi_region and self.mrk_aware else rank.get(ref.region or "", len(rank))

        for arn, edk in sorted(candidates, key=distance):
            try:
                return await _decrypt_edk(self.client, materials, edk, arn, self.grant_tokens, self.mrk_aware)
            except KmsClientError as exc:
                errors.append(str(exc))
        raise _no_data_key(errors, "no encrypted data key of the message passes the discovery filter")


class MultiKeyring:
    """One data key under several keyrings; decrypt tries the nearest keyring first."""

    def __init__(self, generator: Keyring | None, children: Sequence[Keyring] = (), *, client: KmsClient | None = None):
        if generator is None and not children:
            raise ConfigurationError("a multi-keyring needs a generator or children")
        self.generator = generator
        self.children = tuple(children)
        self.client = client

    def region_hint(self) -> str | None:
        return self.generator.region_hint() if self.generator is not None else None

    async def on_encrypt(self, materials: EncryptionMaterials) -> EncryptionMaterials:
        if self.generator is not None:
            materials = await self.generator.on_encrypt(materials)
        if materials.data_key is None:
            raise MaterialsError("a multi-keyring without a generator needs a data key to wrap")
        for child in self.children:
            materials = await child.on_encrypt(materials)
        return materials

    def _nearest_first(self) -> list[Keyring]:
        keyrings = ([self.generator] if self.generator is not None else []) + list(self.children)
        if self.client is None:
            return keyrings
        order = self.client.router.nearest_first()
        rank = {r: i for i, r in enumerate(order)}
        return sorted(keyrings, key=lambda k: rank.get(k.region_hint() or "", len(rank)))

    async def on_decrypt(self, materials: DecryptionMaterials, edks: Sequence[EncryptedDataKey]) -> DecryptionMaterials:
        if materials.data_key is not None:
            raise MaterialsError("the decryption materials already hold a data key")
        errors: list[str] = []
        for keyring in self._nearest_first():
            try:
                return await keyring.on_decrypt(materials, edks)
            except KmsClientError as exc:
                errors.append(str(exc))
        raise _no_data_key(errors, "no keyring could open a data key")


async def _decrypt_edk(
    client: KmsClient,
    materials: DecryptionMaterials,
    edk: EncryptedDataKey,
    key_id: str,
    grant_tokens: Sequence[str],
    mrk_aware: bool,
) -> DecryptionMaterials:
    out = await client.decrypt(
        edk.ciphertext, materials.encryption_context, key_id=key_id, grant_tokens=grant_tokens, mrk_aware=mrk_aware
    )
    if out.key_arn != out.requested_key_id:
        raise MaterialsError("KMS decrypted the data key under another key than the one asked for")
    if len(out.plaintext) != DATA_KEY_BYTES:
        raise MaterialsError("KMS answered with a data key of the wrong length")
    return materials.with_data_key(out.plaintext)


def _no_data_key(errors: list[str], otherwise: str) -> MaterialsError:
    if not errors:
        return MaterialsError(otherwise)
    return MaterialsError("no data key could be decrypted: " + "; ".join(dict.fromkeys(errors)))
