"""``Recipient``: Nitro Enclaves / NitroTPM attestation, and how regionkms answers it.

AWS KMS accepts a ``Recipient`` (Decrypt, DeriveSharedSecret, GenerateDataKey,
GenerateDataKeyPair, GenerateRandom) only with an attestation document signed by the AWS Nitro
hypervisor or NitroTPM, whose certificate chain ends at AWS's attestation root; it then encrypts
the result to the document's public key (``CiphertextForRecipient``) instead of returning it.
A document that does not validate is refused. regionkms runs no attested environment and holds
no such root of trust, so no document can validate here: every request with a ``Recipient`` is
refused the way AWS refuses a document it cannot validate, with ValidationException, and the
plaintext is never returned in its place (failing open would hand an enclave's secret to its
host). The rule is the same for every operation that takes the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from regiond.errors import ValidationException

__all__ = ["RECIPIENT_MESSAGE", "refuse_recipient"]

RECIPIENT_MESSAGE = (
    "The attestation document in Recipient cannot be validated: regionkms has no AWS Nitro Enclaves or "
    "NitroTPM attestation root of trust, so it accepts no attestation document."
)


def refuse_recipient(recipient: Mapping[str, Any] | None) -> None:
    """ValidationException for any ``Recipient``; nothing for a request without one."""
    if recipient is not None:
        raise ValidationException(RECIPIENT_MESSAGE)
