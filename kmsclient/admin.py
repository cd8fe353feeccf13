"""A minimal signed caller for the regionkms IAM admin API (``RegionKmsIam.*`` targets).

Used by ``regiond iam --endpoint``; credentials come from the standard AWS environment
variables so operators use the same credentials as the AWS CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.request
from typing import Any

from kmsclient.sigv4 import Credentials, sign_headers

IAM_TARGET_PREFIX = "RegionKmsIam"
TIMEOUT_S = 10.0


class AdminApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def credentials_from_env() -> Credentials:
    try:
        return Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    except KeyError as exc:
        raise AdminApiError("MissingCredentials", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc


def call_iam(
    endpoint: str, region: str, operation: str, params: dict[str, Any], credentials: Credentials | None = None
) -> dict[str, Any]:
    body = json.dumps(params).encode()
    headers = sign_headers(
        credentials=credentials or credentials_from_env(),
        method="POST",
        url=endpoint,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"{IAM_TARGET_PREFIX}.{operation}"},
        body=body,
        region=region,
        service="kms",
        now=dt.datetime.now(dt.UTC),
    )
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            result: dict[str, Any] = json.loads(response.read() or b"{}")
            return result
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}")
        raise AdminApiError(error.get("__type", str(exc.code)), error.get("message", "")) from exc
