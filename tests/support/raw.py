"""Hand-made signed requests, for the protocol errors boto3 would never send."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import aiohttp

from kmsclient.sigv4 import Credentials, sign_headers
from tests.support.cluster import Identity


async def signed_post(
    endpoint: str,
    region: str,
    identity: Identity | None,
    target: str | None,
    body: bytes,
    *,
    now: dt.datetime | None = None,
    scope_region: str | None = None,
    secret: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/x-amz-json-1.1", **(extra_headers or {})}
    if target is not None:
        headers["X-Amz-Target"] = target
    if identity is not None:
        creds = Credentials(identity.access_key_id, secret or identity.secret_access_key)
        headers = sign_headers(
            credentials=creds,
            method="POST",
            url=endpoint + "/",
            headers=headers,
            body=body,
            region=scope_region or region,
            service="kms",
            now=now or dt.datetime.now(dt.UTC),
        )
    headers.pop("Host", None)
    async with (
        aiohttp.ClientSession() as session,
        session.post(endpoint + "/", data=io.BytesIO(body), headers=headers) as resp,
    ):
        payload = await resp.json(content_type=None)
        return resp.status, payload, dict(resp.headers)
