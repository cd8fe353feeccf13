"""The official AWS Encryption SDK (``aws-encryption-sdk``) pointed at regionkms nodes."""

from __future__ import annotations

from typing import Any

import aws_encryption_sdk
import botocore.session
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384
from tests.support.cluster import Identity

OFFICIAL_SUITES = {
    COMMIT_KEY.id: Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
    COMMIT_KEY_ECDSA_P384.id: Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
}


class EndpointSession(botocore.session.Session):  # type: ignore[misc]  # botocore is untyped
    """A botocore session whose KMS clients go to regionkms: each region to its own endpoint."""

    def __init__(self, endpoints: dict[str, str], identity: Identity) -> None:
        super().__init__()
        self._endpoints = endpoints
        self.set_credentials(identity.access_key_id, identity.secret_access_key)

    def create_client(self, service_name: str, region_name: str | None = None, **kwargs: Any) -> Any:
        kwargs["endpoint_url"] = self._endpoints[region_name or ""]
        return super().create_client(service_name, region_name, **kwargs)


def official_client() -> Any:
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
