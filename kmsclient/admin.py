"""The regionkms IAM admin API (``RegionKmsIam.*`` targets), called through kmsclient's one signed caller.

Used by ``regiond iam --endpoint``; credentials come from the standard AWS environment variables
(``config.credentials_from_env``, the one reader) so operators use the same credentials as the AWS CLI.
Errors are the ``KmsClientError`` tree: an error answer is a ``ServiceError`` (``AdminApiError``).
"""

from __future__ import annotations

from typing import Any

from kmsclient.client import SyncKmsClient
from kmsclient.config import require_credentials_from_env
from kmsclient.errors import AdminApiError
from kmsclient.routing import Endpoint
from kmsclient.sigv4 import Credentials

IAM_TARGET_PREFIX = "RegionKmsIam"
TIMEOUT_S = 10.0

__all__ = ["IAM_TARGET_PREFIX", "AdminApiError", "call_iam", "credentials_from_env"]

credentials_from_env = require_credentials_from_env


def call_iam(
    endpoint: str, region: str, operation: str, params: dict[str, Any], credentials: Credentials | None = None
) -> dict[str, Any]:
    """One admin call to ``endpoint`` (no failover: IAM is written in its home region)."""
    target = Endpoint(region, endpoint.rstrip("/"))
    with SyncKmsClient([target], credentials or require_credentials_from_env(), timeout_s=TIMEOUT_S) as client:
        return client.call_in(target, operation, params, target_prefix=IAM_TARGET_PREFIX)
