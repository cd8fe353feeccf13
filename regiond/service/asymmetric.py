"""Asymmetric KMS keys: Sign, Verify, GetPublicKey, DeriveSharedSecret, Encapsulate, Decapsulate,
and RSAES-OAEP Encrypt/Decrypt (reached from ``service.cryptops`` when the key is asymmetric).

Every operation makes the checks of ``service.keyuse`` (resolve, authorize, key state, key
usage) before anything else, answers ``DryRun`` after them, and records the key's last use
only when the operation succeeded. What AWS documents per operation:

- Sign/Verify: ``domain.signing`` checks the algorithm and message type; a signature that does
  not verify is KMSInvalidSignatureException (never ``SignatureValid: false``).
- GetPublicKey: DER SubjectPublicKeyInfo with the key's spec, usage and algorithm lists;
  allowed while the key is Disabled (observed AWS behaviour, ``domain.key``). A symmetric or HMAC
  key has no public key: UnsupportedOperationException.
- Encrypt/Decrypt with RSA keys: ``EncryptionAlgorithm`` must be RSAES_OAEP_SHA_1 or _256 (the
  default, SYMMETRIC_DEFAULT, is incompatible: InvalidKeyUsageException); the plaintext limit is
  the key size's (ValidationException beyond it); an encryption context is refused ("The
  standard asymmetric encryption algorithms ... do not support an encryption context"); every
  way a ciphertext fails to open is the one InvalidCiphertextException.
- DeriveSharedSecret: ECDH with the peer's DER public key on the key's curve (ValidationException
  otherwise); the raw shared secret.
- Encapsulate/Decapsulate: ML-KEM; a ciphertext of the wrong length is InvalidCiphertextException.
- ``Recipient`` (Nitro Enclaves / NitroTPM attestation): ``service.recipient``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from regiond.crypto import asymmetric
from regiond.crypto.asymmetric import PrivateKey
from regiond.domain.ciphertext import invalid_ciphertext
from regiond.domain.key import (
    EncryptionAlgorithm,
    Key,
    KeyAgreementAlgorithm,
    KeyUsage,
    SigningAlgorithm,
    require_state,
)
from regiond.domain.keyspec import KeyFamily, family
from regiond.domain.signing import signing_input
from regiond.errors import (
    DryRunOperationException,
    InvalidKeyUsageException,
    KMSInvalidSignatureException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.service.authz import Authorizer, Requester
from regiond.service.keycache import CachedKey
from regiond.service.keys import KeyService, UsageTracker
from regiond.service.keyuse import DRY_RUN_MESSAGE, invalid_usage, usable_key

__all__ = ["AsymmetricService", "PublicKeyInfo", "Signed"]


class Signed(NamedTuple):
    signature: bytes  # empty for Verify
    key: Key
    key_arn: str
    algorithm: SigningAlgorithm


class PublicKeyInfo(NamedTuple):
    key: Key
    key_arn: str
    public_key: bytes


class Secret(NamedTuple):
    """A shared secret (DeriveSharedSecret, Encapsulate, Decapsulate) and, for Encapsulate, its ciphertext."""

    shared_secret: bytes
    ciphertext: bytes
    key: Key
    key_arn: str


def _private(entry: CachedKey, operation: str, handle: object) -> PrivateKey:
    if not isinstance(handle, PrivateKey):
        raise invalid_usage(entry.key, operation)
    return handle


def _dry_run(dry_run: bool) -> None:
    if dry_run:
        raise DryRunOperationException(DRY_RUN_MESSAGE)


class AsymmetricService:
    def __init__(self, keys: KeyService, *, authz: Authorizer, usage: UsageTracker) -> None:
        self._keys = keys
        self._authz = authz
        self._usage = usage

    # --- Sign / Verify ------------------------------------------------------------------------

    async def sign(
        self, who: Requester, key_param: str, message: bytes, algorithm: str, message_type: str | None,
        *, dry_run: bool = False,
    ) -> Signed:  # fmt: skip
        values = {"kms:SigningAlgorithm": algorithm, "kms:MessageType": message_type or "RAW"}
        entry, handle = await usable_key(
            self._keys, self._authz, who, key_param, "Sign", KeyUsage.SIGN_VERIFY, values=values
        )
        private = _private(entry, "Sign", handle)
        request = signing_input(entry.key, algorithm, message_type, message)
        _dry_run(dry_run)
        signature = private.sign(request)
        self._usage.record(entry.key.key_id, "Sign", who.request_id)
        return Signed(signature, entry.key, entry.arn, request.algorithm)

    async def verify(
        self, who: Requester, key_param: str, message: bytes, signature: bytes, algorithm: str,
        message_type: str | None, *, dry_run: bool = False,
    ) -> Signed:  # fmt: skip
        values = {"kms:SigningAlgorithm": algorithm, "kms:MessageType": message_type or "RAW"}
        entry, handle = await usable_key(
            self._keys, self._authz, who, key_param, "Verify", KeyUsage.SIGN_VERIFY, values=values
        )
        private = _private(entry, "Verify", handle)
        request = signing_input(entry.key, algorithm, message_type, message)
        _dry_run(dry_run)
        if not private.verify(request, signature):
            raise KMSInvalidSignatureException("The signature is not valid for this key, message and algorithm.")
        self._usage.record(entry.key.key_id, "Verify", who.request_id)
        return Signed(b"", entry.key, entry.arn, request.algorithm)

    # --- GetPublicKey ---------------------------------------------------------------------------

    async def get_public_key(self, who: Requester, key_param: str) -> PublicKeyInfo:
        who = self._keys.naming(who, key_param)  # kms:RequestAlias
        entry = await self._keys.resolve(who, key_param)
        await self._authz.authorize(
            who.principal, "kms:GetPublicKey", entry.key,
            request_values=who.values, grant_tokens=who.grant_tokens, key_policy=entry.policy,
        )  # fmt: skip
        require_state("GetPublicKey", entry.key)
        handle = entry.handle
        if not isinstance(handle, PrivateKey):
            raise UnsupportedOperationException(
                f"{entry.key.arn} key spec is {entry.key.key_spec}, which has no public key: "
                "GetPublicKey is for asymmetric KMS keys."
            )
        return PublicKeyInfo(entry.key, entry.arn, handle.public_key_der())

    # --- RSAES-OAEP (from service.cryptops) ---------------------------------------------------

    def _rsa(
        self, entry: CachedKey, operation: str, algorithm: str | None, context: Mapping[str, str]
    ) -> tuple[PrivateKey, EncryptionAlgorithm]:
        """The checks after authorization and state, for a key that is not SYMMETRIC_DEFAULT."""
        key = entry.key
        if key.key_usage is not KeyUsage.ENCRYPT_DECRYPT:
            raise invalid_usage(key, operation)
        chosen = EncryptionAlgorithm(algorithm or EncryptionAlgorithm.SYMMETRIC_DEFAULT.value)
        if chosen not in key.encryption_algorithms:
            raise InvalidKeyUsageException(f"Algorithm {chosen} is incompatible with key spec {key.key_spec}.")
        if context:
            raise ValidationException(
                "EncryptionContext is not supported with asymmetric KMS keys: the RSAES-OAEP algorithms do not "
                "take an encryption context."
            )
        return _private(entry, operation, entry.handle), chosen

    def encrypt(
        self, entry: CachedKey, operation: str, plaintext: bytes, algorithm: str | None, context: Mapping[str, str]
    ) -> tuple[bytes, EncryptionAlgorithm]:
        private, chosen = self._rsa(entry, operation, algorithm, context)
        limit = asymmetric.max_plaintext_bytes(entry.key.key_spec, chosen)
        if len(plaintext) > limit:
            raise ValidationException(
                f"Plaintext is {len(plaintext)} bytes: {chosen} with a {entry.key.key_spec} key encrypts at most "
                f"{limit} bytes."
            )
        return private.encrypt(chosen, plaintext), chosen

    def check_encryption_key(
        self, entry: CachedKey, operation: str, algorithm: str | None, context: Mapping[str, str]
    ) -> EncryptionAlgorithm:
        """The key checks of Encrypt/Decrypt without plaintext or ciphertext (DryRun)."""
        return self._rsa(entry, operation, algorithm, context)[1]

    def decrypt(
        self, entry: CachedKey, operation: str, blob: bytes, algorithm: str | None, context: Mapping[str, str]
    ) -> tuple[bytes, EncryptionAlgorithm]:
        private, chosen = self._rsa(entry, operation, algorithm, context)
        try:
            return private.decrypt(chosen, blob), chosen
        except asymmetric.DecryptionError:
            raise invalid_ciphertext() from None

    # --- DeriveSharedSecret / Encapsulate / Decapsulate ---------------------------------------

    async def derive_shared_secret(
        self, who: Requester, key_param: str, algorithm: str, public_key: bytes, *, dry_run: bool = False
    ) -> Secret:
        values = {"kms:KeyAgreementAlgorithm": algorithm}
        entry, handle = await usable_key(
            self._keys, self._authz, who, key_param, "DeriveSharedSecret", KeyUsage.KEY_AGREEMENT, values=values
        )
        private = _private(entry, "DeriveSharedSecret", handle)
        chosen = KeyAgreementAlgorithm(algorithm)
        if chosen not in entry.key.key_agreement_algorithms:
            raise InvalidKeyUsageException(f"Algorithm {chosen} is incompatible with key spec {entry.key.key_spec}.")
        _dry_run(dry_run)
        try:
            secret = private.derive_shared_secret(public_key)
        except asymmetric.PeerKeyError as exc:
            raise ValidationException(str(exc)) from None
        self._usage.record(entry.key.key_id, "DeriveSharedSecret", who.request_id)
        return Secret(secret, b"", entry.key, entry.arn)

    async def _ml_kem(self, who: Requester, key_param: str, operation: str) -> tuple[CachedKey, PrivateKey]:
        entry, handle = await usable_key(
            self._keys, self._authz, who, key_param, operation, KeyUsage.ENCAPSULATE_DECAPSULATE
        )
        if family(entry.key.key_spec) is not KeyFamily.ML_KEM:
            raise invalid_usage(entry.key, operation)
        return entry, _private(entry, operation, handle)

    async def encapsulate(self, who: Requester, key_param: str, *, dry_run: bool = False) -> Secret:
        entry, private = await self._ml_kem(who, key_param, "Encapsulate")
        _dry_run(dry_run)
        secret, ciphertext = private.encapsulate()
        self._usage.record(entry.key.key_id, "Encapsulate", who.request_id)
        return Secret(secret, ciphertext, entry.key, entry.arn)

    async def decapsulate(self, who: Requester, key_param: str, ciphertext: bytes, *, dry_run: bool = False) -> Secret:
        entry, private = await self._ml_kem(who, key_param, "Decapsulate")
        _dry_run(dry_run)
        try:
            secret = private.decapsulate(ciphertext)
        except asymmetric.DecryptionError:
            raise invalid_ciphertext() from None
        self._usage.record(entry.key.key_id, "Decapsulate", who.request_id)
        return Secret(secret, b"", entry.key, entry.arn)
