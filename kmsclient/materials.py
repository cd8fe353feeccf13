"""Encryption and decryption materials: what a CMM hands the message layer (ESDK structures.md).

Encryption materials hold the suite, the full encryption context (the caller's pairs, plus the
verification key for a signed suite), which of its keys are required (authenticated but not
stored in the message), the plaintext data key, its encrypted copies and the signing key.
Decryption materials hold the suite, the context (stored plus the caller's reproduced required
pairs), the plaintext data key once a keyring opened one, and the verification key.
The data key is never printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kmsclient.message import EncryptedDataKey, Suite
from kmsclient.signature import SigningKey


@dataclass(frozen=True)
class EncryptionMaterials:
    suite: Suite
    encryption_context: dict[str, str]
    required_context_keys: frozenset[str] = frozenset()
    data_key: bytes | None = field(default=None, repr=False)
    encrypted_data_keys: tuple[EncryptedDataKey, ...] = ()
    signing_key: SigningKey | None = None

    def with_data_key(self, data_key: bytes, edk: EncryptedDataKey) -> EncryptionMaterials:
        return replace(self, data_key=data_key, encrypted_data_keys=(*self.encrypted_data_keys, edk))

    def with_edk(self, edk: EncryptedDataKey) -> EncryptionMaterials:
        return replace(self, encrypted_data_keys=(*self.encrypted_data_keys, edk))

    def __reduce__(self) -> str:
        raise TypeError("encryption materials are not picklable")


@dataclass(frozen=True)
class DecryptionMaterials:
    suite: Suite
    encryption_context: dict[str, str]
    required_context_keys: frozenset[str] = frozenset()
    data_key: bytes | None = field(default=None, repr=False)
    verification_key: str | None = None

    def with_data_key(self, data_key: bytes) -> DecryptionMaterials:
        return replace(self, data_key=data_key)

    def __reduce__(self) -> str:
        raise TypeError("decryption materials are not picklable")
