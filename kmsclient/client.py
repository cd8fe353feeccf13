"""KmsClient: SigV4-signed AWS KMS JSON calls with nearest-healthy-region routing.

The transport is injectable (``Transport``): production uses aiohttp; tests may pass any
object with the same ``send`` method, e.g. one bound to an in-process application.
A call goes to the preferred region first (see ``routing.Router``); when that region does
not answer, answers 5xx or throttles, the call is retried in the next healthy region. Calls
that name a regional resource (a key ARN of one region) should use a multi-region key id so
that another region can serve them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from kmsclient.errors import KmsClientError, NoHealthyRegionError
from kmsclient.routing import Endpoint, Router
from kmsclient.sigv4 import Credentials, sign_headers

TARGET_PREFIX = "TrentService"
CONTENT_TYPE = "application/x-amz-json-1.1"
DEFAULT_TIMEOUT_S = 10.0


class Transport(Protocol):
    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, data=body, headers=dict(headers)) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KmsClientError("ConnectionError", f"{type(exc).__name__} talking to {url}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class KmsClient:
    def __init__(
        self,
        endpoints: list[Endpoint],
        credentials: Credentials,
        *,
        transport: Transport | None = None,
        router: Router | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._credentials = credentials
        self._transport = transport or AiohttpTransport()
        self.router = router or Router(endpoints)

    async def __aenter__(self) -> KmsClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()
        await self.router.close()

    async def call_in(self, endpoint: Endpoint, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(params).encode()
        headers = sign_headers(
            credentials=self._credentials,
            method="POST",
            url=endpoint.url + "/",
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"{TARGET_PREFIX}.{operation}"},
            body=body,
            region=endpoint.region,
            service="kms",
            now=dt.datetime.now(dt.UTC),
        )
        status, payload = await self._transport.send(endpoint.url + "/", headers, body)
        try:
            parsed: dict[str, Any] = json.loads(payload) if payload else {}
        except ValueError:
            parsed = {}
        if status != 200:
            code = str(parsed.get("__type", f"HTTP{status}")).rsplit("#", 1)[-1]
            raise KmsClientError(code, str(parsed.get("message", "")), status=status, region=endpoint.region)
        return parsed

    async def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Call in the preferred region, failing over to the next healthy one."""
        last: KmsClientError | None = None
        for endpoint in await self.router.ordered():
            try:
                result = await self.call_in(endpoint, operation, params)
            except KmsClientError as exc:
                if not exc.retryable_elsewhere:
                    raise
                self.router.mark_failed(endpoint)
                last = exc
                continue
            self.router.mark_ok(endpoint)
            return result
        raise NoHealthyRegionError(f"no region could serve {operation}: {last.message if last else 'none healthy'}")

    # Convenience wrappers for the calls the envelope layer needs.
    async def generate_data_key(
        self, key_id: str, context: Mapping[str, str] | None = None, *, key_spec: str = "AES_256"
    ) -> tuple[bytes, bytes, str]:
        params: dict[str, Any] = {"KeyId": key_id, "KeySpec": key_spec}
        if context:
            params["EncryptionContext"] = dict(context)
        out = await self.call("GenerateDataKey", params)
        return base64.b64decode(out["Plaintext"]), base64.b64decode(out["CiphertextBlob"]), str(out["KeyId"])

    async def decrypt(self, blob: bytes, context: Mapping[str, str] | None = None) -> bytes:
        params: dict[str, Any] = {"CiphertextBlob": base64.b64encode(blob).decode()}
        if context:
            params["EncryptionContext"] = dict(context)
        out = await self.call("Decrypt", params)
        return base64.b64decode(out["Plaintext"])
