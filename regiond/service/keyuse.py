"""The checks every non-symmetric cryptographic operation makes before it touches material.

In AWS's order, as the symmetric hot path (``service.cryptops``) makes them: resolve the
``KeyId`` (NotFoundException), authorize with the one ``Authorizer.authorize`` (key policy, IAM,
grants and grant tokens; AccessDeniedException), the key state (DisabledException,
KMSInvalidStateException: ``domain.key.require_usable_for_crypto``), then the key usage
(InvalidKeyUsageException, with AWS's wording). Only then may a caller's ``DryRun`` be answered.

``values`` carries the operation's own condition keys (``kms:SigningAlgorithm``,
``kms:MessageType``, ``kms:MacAlgorithm``, ``kms:KeyAgreementAlgorithm``,
``kms:EncryptionAlgorithm``) beside the request's global ones, so a key policy can restrict them.
"""

from __future__ import annotations

from collections.abc import Mapping

from regiond.crypto import keymaterial
from regiond.domain.key import Key, KeyUsage, require_usable_for_crypto
from regiond.errors import InvalidKeyUsageException, KMSInvalidStateException
from regiond.service.authz import Authorizer, Requester
from regiond.service.keycache import CachedKey
from regiond.service.keys import KeyService

__all__ = ["DRY_RUN_MESSAGE", "invalid_usage", "usable_key"]

DRY_RUN_MESSAGE = "The request would have succeeded, but the DryRun option is set."


def invalid_usage(key: Key, operation: str) -> InvalidKeyUsageException:
    return InvalidKeyUsageException(f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}.")


async def usable_key(
    keys: KeyService, authz: Authorizer, who: Requester, key_param: str, operation: str, usage: KeyUsage,
    *, values: Mapping[str, str] | None = None,
) -> tuple[CachedKey, keymaterial.KeyHandle]:  # fmt: skip
    """The key ``key_param`` names and its material's handle, once every check has passed."""
    who = keys.naming(who, key_param)  # kms:RequestAlias
    entry = await keys.resolve(who, key_param)
    request_values = who.values
    if values:
        request_values = {**who.values, **{k: (v,) for k, v in values.items()}}
    await authz.authorize(
        who.principal, f"kms:{operation}", entry.key,
        request_values=request_values, grant_tokens=who.grant_tokens, key_policy=entry.policy,
    )  # fmt: skip
    require_usable_for_crypto(entry.key, operation)
    if entry.key.key_usage is not usage:
        raise invalid_usage(entry.key, operation)
    handle = entry.handle
    if handle is None:  # an Enabled key always has material; guard against a torn state
        raise KMSInvalidStateException(f"{entry.key.arn} has no key material.")
    return entry, handle
