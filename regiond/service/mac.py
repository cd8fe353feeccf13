"""GenerateMac and VerifyMac with HMAC KMS keys.

The message (1-4096 bytes, the model's limit) is MACed with the key's one algorithm; any other
``MacAlgorithm`` is InvalidKeyUsageException ("the algorithm must be compatible with the HMAC
key spec"). VerifyMac recomputes the tag and compares it in constant time; a tag that does not
match is KMSInvalidMacException, never ``MacValid: false`` (AWS's rule). Neither the message
nor a MAC appears in a log or an audit event.
"""

from __future__ import annotations

from typing import NamedTuple

from regiond.crypto.mac import MacKey
from regiond.domain.key import Key, KeyUsage, MacAlgorithm
from regiond.errors import DryRunOperationException, InvalidKeyUsageException, KMSInvalidMacException
from regiond.service.authz import Authorizer, Requester
from regiond.service.keys import KeyService, UsageTracker
from regiond.service.keyuse import DRY_RUN_MESSAGE, invalid_usage, usable_key

__all__ = ["MacResult", "MacService"]


class MacResult(NamedTuple):
    mac: bytes  # empty for VerifyMac
    key: Key
    key_arn: str
    algorithm: MacAlgorithm


class MacService:
    def __init__(self, keys: KeyService, *, authz: Authorizer, usage: UsageTracker) -> None:
        self._keys = keys
        self._authz = authz
        self._usage = usage

    async def _mac_key(
        self, who: Requester, key_param: str, operation: str, algorithm: str
    ) -> tuple[Key, str, MacKey, MacAlgorithm]:
        entry, handle = await usable_key(
            self._keys, self._authz, who, key_param, operation, KeyUsage.GENERATE_VERIFY_MAC,
            values={"kms:MacAlgorithm": algorithm},
        )  # fmt: skip
        if not isinstance(handle, MacKey):
            raise invalid_usage(entry.key, operation)
        chosen = MacAlgorithm(algorithm)
        if chosen not in entry.key.mac_algorithms:
            raise InvalidKeyUsageException(f"Algorithm {chosen} is incompatible with key spec {entry.key.key_spec}.")
        return entry.key, entry.arn, handle, chosen

    async def generate_mac(
        self, who: Requester, key_param: str, message: bytes, algorithm: str, *, dry_run: bool = False
    ) -> MacResult:
        key, arn, handle, chosen = await self._mac_key(who, key_param, "GenerateMac", algorithm)
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        mac = handle.generate(message)
        self._usage.record(key.key_id, "GenerateMac", who.request_id)
        return MacResult(mac, key, arn, chosen)

    async def verify_mac(
        self, who: Requester, key_param: str, message: bytes, algorithm: str, mac: bytes, *, dry_run: bool = False
    ) -> MacResult:
        key, arn, handle, chosen = await self._mac_key(who, key_param, "VerifyMac", algorithm)
        if dry_run:
            raise DryRunOperationException(DRY_RUN_MESSAGE)
        if not handle.verify(message, mac):
            raise KMSInvalidMacException("The MAC is not valid for this key, message and MAC algorithm.")
        self._usage.record(key.key_id, "VerifyMac", who.request_id)
        return MacResult(b"", key, arn, chosen)
