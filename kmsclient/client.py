"""KmsClient: SigV4-signed AWS KMS JSON calls, routed to where the key lives, retried safely.

``call_in`` is the one signed caller of kmsclient (KMS and the ``RegionKmsIam`` admin targets
both go through it). ``call`` adds routing and retries on top:

- the regions tried come from ``Router.place`` for the call's key (its own region for a
  single-region key; nearest replica first for a multi-region key, the ARN rewritten);
- a connection error, a timeout, a 5xx answer or throttling is retried with exponential backoff
  (full jitter), moving to the next eligible region when there is one;
- a call that is not idempotent is retried only when it surely was not applied (the connection
  was never made, or the service throttled it); a call that may have been applied is never
  repeated, here or elsewhere.

``SyncKmsClient`` is the thin blocking wrapper: it owns an event loop and runs the async
client's coroutines on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kmsclient.errors import (
    ConfigurationError,
    KmsClientError,
    NoRegionAvailableError,
    ServiceError,
    TransportError,
    error_for,
)
from kmsclient.routing import Endpoint, Placement, Router
from kmsclient.sigv4 import Credentials, sign_headers
from kmsclient.transport import DEFAULT_TIMEOUT_S, AiohttpTransport, Transport

KMS_TARGET_PREFIX = "TrentService"
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.0

IDEMPOTENT_OPERATIONS = frozenset(
    {
        "Decrypt",
        "DescribeKey",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "GenerateRandom",
        "GetKeyPolicy",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "ListAliases",
        "ListGrants",
        "ListKeys",
        "ListResourceTags",
        "ReEncrypt",
        "Sign",
        "Verify",
        "VerifyMac",
    }
)
"""Calls with no effect but their answer: repeating one (in any region) changes nothing."""

REPLICA_UNUSABLE_CODES = frozenset(
    {"NotFoundException", "KMSInvalidStateException", "DisabledException", "KeyUnavailableException"}
)
"""Answers that say a region's replica of a multi-region key cannot serve: another region's may."""

T = TypeVar("T")


@dataclass(frozen=True)
class DataKey:
    plaintext: bytes = field(repr=False)
    ciphertext: bytes
    key_arn: str


@dataclass(frozen=True)
class Decrypted:
    plaintext: bytes = field(repr=False)
    key_arn: str
    requested_key_id: str | None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, region: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError("the answer holds a malformed base64 field", region=region) from None


class KmsClient:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        credentials: Credentials,
        *,
        home_region: str | None = None,
        transport: Transport | None = None,
        router: Router | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if not endpoints:
            raise ConfigurationError("at least one endpoint is needed")
        self._credentials = credentials
        self._transport = transport or AiohttpTransport()
        self.router = router or Router(list(endpoints), home_region or endpoints[0].region, self._transport)
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)

    async def __aenter__(self) -> KmsClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.router.close()
        await self._transport.close()

    # --- the one signed caller ----------------------------------------------------------------

    async def call_in(
        self,
        endpoint: Endpoint,
        operation: str,
        params: Mapping[str, Any],
        *,
        target_prefix: str = KMS_TARGET_PREFIX,
    ) -> dict[str, Any]:
        """One signed call to ``endpoint``, no retry; an error answer raises its ``ServiceError`` leaf."""
        body = json.dumps(params).encode()
        url = endpoint.url + "/"
        headers = sign_headers(
            credentials=self._credentials,
            method="POST",
            url=url,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"{target_prefix}.{operation}"},
            body=body,
            region=endpoint.region,
            service="kms",
            now=dt.datetime.now(dt.UTC),
        )
        try:
            status, payload = await self._transport.send("POST", url, headers, body, timeout_s=self.timeout_s)
        except TransportError as exc:
            raise TransportError(exc.message, sent=exc.sent, region=endpoint.region) from None
        try:
            parsed = json.loads(payload) if payload else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            parsed = {}
            if status == 200:
                raise ServiceError("the answer is not a JSON object", status=status, region=endpoint.region)
        if status != 200:
            code = str(parsed.get("__type") or f"HTTP{status}").rsplit("#", 1)[-1]
            message = str(parsed.get("message") or parsed.get("Message") or "")
            raise error_for(code, message, status=status, region=endpoint.region)
        return parsed

    # --- routed calls -------------------------------------------------------------------------

    async def placement(self, key_id: str, *, mrk_aware: bool = True) -> Placement:
        return await self.router.place(key_id, mrk_aware=mrk_aware)

    async def call(
        self,
        operation: str,
        params: Mapping[str, Any],
        *,
        key_id: str | None = None,
        mrk_aware: bool = True,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        """Call where ``key_id`` (default: ``params["KeyId"]``) may be served; see the module docstring.

        Without a key the call goes to the home region. The answer gains ``"_region"``.
        """
        key_id = key_id if key_id is not None else params.get("KeyId")
        if key_id is None:
            placement = None
            regions: tuple[str, ...] = (self.router.home_region,)
        else:
            placement = await self.router.place(str(key_id), mrk_aware=mrk_aware)
            regions = placement.regions
        safe_to_repeat = operation in IDEMPOTENT_OPERATIONS if idempotent is None else idempotent
        errors: list[KmsClientError] = []
        skipped: set[str] = set()
        for attempt in range(self.max_attempts):
            live = [r for r in regions if r not in skipped]
            if not live:
                break
            # A region that just failed is ranked behind the healthy ones, so the retry moves on.
            region = self.router.nearest_first(live)[0] if attempt and len(live) > 1 else live[0]
            request = dict(params)
            if placement is not None and "KeyId" in request:
                request["KeyId"] = placement.key_id_in(region)
            started = time.monotonic()
            try:
                out = await self.call_in(self.router.endpoint(region), operation, request)
            except KmsClientError as exc:
                errors.append(exc)
                if (
                    placement is not None
                    and placement.key.multi_region
                    and len(regions) > 1
                    and exc.code in REPLICA_UNUSABLE_CODES
                ):
                    # This region holds no usable replica (none, or one that is still being created,
                    # disabled there, or pending deletion): refused, so surely not applied; try the next.
                    if exc.code == "NotFoundException":
                        self.router.mark_no_replica(placement.key, region)
                    skipped.add(region)
                    continue
                if not exc.retryable or not (safe_to_repeat or exc.surely_not_applied):
                    raise
                if exc.code != "ThrottlingException":
                    self.router.mark_failed(region)
                await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))  # noqa: S311
                continue
            self.router.observe(region, time.monotonic() - started)
            out["_region"] = region
            return out
        last = errors[-1] if errors else None
        if isinstance(last, ServiceError) and last.code in REPLICA_UNUSABLE_CODES:
            raise last
        tried = ", ".join(dict.fromkeys(e.region or "?" for e in errors))
        raise NoRegionAvailableError(
            f"{operation} failed in every region that may serve it ({tried}): {last.message if last else ''}"
        )

    # --- the calls the keyrings make ----------------------------------------------------------

    async def generate_data_key(
        self,
        key_id: str,
        context: Mapping[str, str] | None = None,
        *,
        number_of_bytes: int = 32,
        grant_tokens: Sequence[str] = (),
        mrk_aware: bool = True,
    ) -> DataKey:
        params: dict[str, Any] = {"KeyId": key_id, "NumberOfBytes": number_of_bytes}
        if context:
            params["EncryptionContext"] = dict(context)
        if grant_tokens:
            params["GrantTokens"] = list(grant_tokens)
        out = await self.call("GenerateDataKey", params, mrk_aware=mrk_aware)
        region = out["_region"]
        return DataKey(
            _unb64(out.get("Plaintext"), region), _unb64(out.get("CiphertextBlob"), region), str(out["KeyId"])
        )

    async def encrypt(
        self,
        key_id: str,
        plaintext: bytes,
        context: Mapping[str, str] | None = None,
        *,
        grant_tokens: Sequence[str] = (),
        mrk_aware: bool = True,
    ) -> tuple[bytes, str]:
        params: dict[str, Any] = {"KeyId": key_id, "Plaintext": _b64(plaintext)}
        if context:
            params["EncryptionContext"] = dict(context)
        if grant_tokens:
            params["GrantTokens"] = list(grant_tokens)
        out = await self.call("Encrypt", params, mrk_aware=mrk_aware)
        return _unb64(out.get("CiphertextBlob"), out["_region"]), str(out["KeyId"])

    async def decrypt(
        self,
        blob: bytes,
        context: Mapping[str, str] | None = None,
        *,
        key_id: str | None = None,
        grant_tokens: Sequence[str] = (),
        mrk_aware: bool = True,
        route_key_id: str | None = None,
    ) -> Decrypted:
        """Decrypt ``blob``; ``key_id`` is sent as KeyId (rewritten to the serving region for an mrk).

        ``route_key_id`` routes a call that sends no KeyId (the blob names its key).
        """
        params: dict[str, Any] = {"CiphertextBlob": _b64(blob)}
        if key_id is not None:
            params["KeyId"] = key_id
        if context:
            params["EncryptionContext"] = dict(context)
        if grant_tokens:
            params["GrantTokens"] = list(grant_tokens)
        route = key_id if key_id is not None else route_key_id
        out = await self.call("Decrypt", params, key_id=route, mrk_aware=mrk_aware)
        region = out["_region"]
        requested = None
        if key_id is not None:
            requested = (await self.router.place(key_id, mrk_aware=mrk_aware)).key_id_in(region)
        return Decrypted(_unb64(out.get("Plaintext"), region), str(out.get("KeyId", "")), requested)


class SyncKmsClient:
    """The blocking face of ``KmsClient``: same calls, run on an event loop this object owns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self._async = self._runner.run(self._make(*args, **kwargs))

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> KmsClient:
        return KmsClient(*args, **kwargs)

    @property
    def aio(self) -> KmsClient:
        return self._async

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run any coroutine of the async API (``client.run(kmsclient.encrypt(client.aio, ...))``)."""
        return self._runner.run(coro)

    def call(self, operation: str, params: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self.run(self._async.call(operation, params, **kwargs))

    def call_in(self, endpoint: Endpoint, operation: str, params: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        return self.run(self._async.call_in(endpoint, operation, params, **kw))

    def close(self) -> None:
        try:
            self._runner.run(self._async.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncKmsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
