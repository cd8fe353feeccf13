"""POST / : the one endpoint of the AWS KMS JSON protocol, plus health and metrics.

Every request takes the same path: request id -> read body (1 MiB cap) -> SigV4 ->
``X-Amz-Target`` lookup -> JSON -> shape validation -> handler -> render -> audit ->
response. Headers are read through one ``sigv4.HeaderView`` (SigV4's canonical values, a
repeated header being the comma-joined list of its values), and the operation is looked up
from the signed headers ``verify`` returns: a request is dispatched on exactly what its
signature covers (DESIGN section 2). Any ``KmsError`` becomes ``{"__type", "message"}`` with its status; anything
else is logged with its traceback and answered as ``KMSInternalException`` without
detail. The audit event is durable before the response leaves (DESIGN section 7).

This is written as one function rather than a middleware stack because it is the hot
path: each aiohttp middleware layer costs a coroutine per request.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from regiond.audit.calls import AuditSink, CallRecord
from regiond.auth import sigv4
from regiond.auth.authn import Authenticated
from regiond.errors import (
    KmsError,
    KMSInternalException,
    RequestEntityTooLargeException,
    RequestTimeoutException,
    SerializationException,
    UnknownOperationException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.protocol import iam_shapes, shapes
from regiond.protocol.context import OpContext, OpHandler
from regiond.protocol.ops import IAM_OPERATIONS, KMS_OPERATIONS
from regiond.randomids import uuid4_str
from regiond.runtime.listener import BodyTimeout, read_body_within
from regiond.runtime.metrics import REQUEST_LATENCY, REQUESTS
from regiond.service.container import Services

log = structlog.get_logger("regiond.request")

MAX_BODY_BYTES = 1024 * 1024
KMS_PREFIX = "TrentService"
CONTENT_TYPE = "application/x-amz-json-1.1"
EVENT_SOURCE_KMS = "kms.amazonaws.com"
EVENT_SOURCE_IAM = "iam.amazonaws.com"

SERVICES = web.AppKey("services", Services)
AUDIT = web.AppKey("audit", AuditSink)


_OK_COUNTERS: dict[str, Any] = {}
_LATENCIES: dict[str, Any] = {}


def _ok_counter(operation: str) -> Any:
    """The labelled ``REQUESTS`` child for a success, cached: ``labels()`` costs more than ``inc()``.

    ``operation`` is a model or IAM operation name (``_resolve`` rejects others), so the
    cache is bounded by the operation tables.
    """
    child = _OK_COUNTERS.get(operation)
    if child is None:
        child = _OK_COUNTERS[operation] = REQUESTS.labels(operation, "ok")
    return child


def _latency(operation: str) -> Any:
    child = _LATENCIES.get(operation)
    if child is None:
        child = _LATENCIES[operation] = REQUEST_LATENCY.labels(operation)
    return child


_LOG_CONTEXT_KEYS = ("request_id", "principal")
"""Every key ``handle`` binds in structlog's context-local context, and no other code binds any."""


def _bind_log_context(request_id: str) -> None:
    """Start the request's log context: ``request_id`` bound, ``principal`` unbound until authenticated.

    ``clear_contextvars`` would do the same, since only ``handle`` binds (``_LOG_CONTEXT_KEYS``),
    but it copies the whole ``contextvars`` context to find them, most of what the three calls
    cost (benchmarks/README.md, "Design figures"). Unbinding matters where requests share a context (tests, benchmarks):
    a request that fails authentication must not log the previous request's principal.
    """
    structlog.contextvars.unbind_contextvars("principal")
    structlog.contextvars.bind_contextvars(request_id=request_id)


def _error_response(exc: KmsError, request_id: str) -> web.Response:
    body = orjson.dumps({"__type": exc.code, "message": exc.message})
    return web.Response(
        status=exc.status,
        body=body,
        headers={"x-amzn-RequestId": request_id, "Content-Type": CONTENT_TYPE},
    )


async def _not_implemented(ctx: OpContext, _params: dict[str, Any]) -> dict[str, Any]:
    raise UnsupportedOperationException(
        f"{ctx.record.operation} is not implemented by this regionkms version (see docs/API.md)"
    )


def _resolve(target: str) -> tuple[str, str, OpHandler]:
    prefix, _, operation = target.partition(".")
    if prefix == KMS_PREFIX:
        if not shapes.is_kms_operation(operation):
            raise UnknownOperationException(f"Unknown operation {operation[:64]!r}")
        return EVENT_SOURCE_KMS, operation, KMS_OPERATIONS.get(operation, _not_implemented)
    if prefix == iam_shapes.TARGET_PREFIX and operation in IAM_OPERATIONS:
        return EVENT_SOURCE_IAM, operation, IAM_OPERATIONS[operation]
    raise UnknownOperationException(f"Unknown operation {target[:80]!r}")


def _source_ip(request: web.Request, headers: sigv4.HeaderView, trusted_proxies: tuple[str, ...]) -> str:
    """The caller's address: the peer, or behind trusted proxies the nearest untrusted hop of
    X-Forwarded-For (all of its headers, joined as one list). That hop was written by one of our
    proxies, so it must be an IP address; anything else is a proxy that does not append, and is
    refused rather than passed on to ``aws:SourceIp`` conditions as a value no condition can read."""
    peer = request.remote or ""
    if not (trusted_proxies and peer in trusted_proxies):
        return peer
    try:
        forwarded = headers.get("x-forwarded-for") or ""
    except sigv4.NotUtf8Header:
        forwarded = "\ufffd"
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    # Walk from the nearest hop outwards, skipping our own proxies.
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            raise ValidationException(
                "X-Forwarded-For from a trusted proxy holds a hop that is not an IP address"
            ) from None
        if address not in trusted_proxies:
            return address
    return peer


def _refuse_content_encoding(headers: sigv4.HeaderView) -> None:
    """KMS takes no compressed requests. aiohttp would inflate a Content-Encoding body before the
    handler reads it, so the bytes hashed for the signature would not be the bytes signed, and
    bytes that do not inflate would fail the read; refuse it before reading instead."""
    try:
        encoding = headers.get("content-encoding")
    except sigv4.NotUtf8Header:
        encoding = "?"
    if encoding is not None and encoding.lower() not in ("", "identity"):
        raise SerializationException(
            f"Content-Encoding {encoding[:32]!r} is not supported: send the request body uncompressed"
        )


async def expect_continue(request: web.Request) -> None:
    """The route's Expect handler: ``100-continue`` is answered as aiohttp does, any other
    expectation is ignored (RFC 9110 lets a server do either) so the request still gets an AWS
    answer with a request id. aiohttp's own handler answers 417 and, for an Expect value that
    is not UTF-8, fails with a 500 while writing that answer."""
    try:
        expect = sigv4.HeaderView(request.headers).get("expect")
    except sigv4.NotUtf8Header:
        return
    if expect is not None and expect.lower() == "100-continue" and request.version == (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


def _parse_json(body: bytes) -> Any:
    if not body:
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SerializationException("Request body is not valid JSON") from exc


class _ClientGone(Exception):
    """The client closed (or lost) its connection before its request body was read."""


async def _read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole request body within the body timeout, aiohttp's failures as the AWS errors."""
    try:
        return await read_body_within(request, timeout_s)
    except BodyTimeout:
        raise RequestTimeoutException(
            "Your socket connection to the server was not read from or written to within the timeout period"
        ) from None
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestEntityTooLargeException("Request body exceeds the 1 MiB limit") from exc
    except web.RequestPayloadError as exc:  # a malformed chunked encoding or compressed body
        raise SerializationException("The request body could not be read") from exc
    except OSError as exc:  # ConnectionResetError: aiohttp's "Connection lost"
        raise _ClientGone from exc


async def handle(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    audit = request.app[AUDIT]
    request_id = uuid4_str()  # x-amzn-RequestId: a random UUID (randomids: a third of uuid.uuid4's cost)
    started = time.perf_counter()
    _bind_log_context(request_id)
    operation = "unknown"
    source_ip = request.remote or ""
    record: CallRecord | None = None
    try:
        headers = sigv4.HeaderView(request.headers)
        _refuse_content_encoding(headers)
        content_length = request.content_length
        if content_length is not None and content_length > MAX_BODY_BYTES:
            raise RequestEntityTooLargeException("Request body exceeds the 1 MiB limit")
        try:
            body = await _read_body(request, services.settings.http_body_timeout_s)
        except _ClientGone as exc:
            # Nothing was authenticated (the signature covers the body), so nothing is audited,
            # and there is no one to answer: not a server error, not worth a traceback.
            log.info("request.client_disconnected", source_ip=source_ip, error=type(exc.__cause__).__name__)
            REQUESTS.labels(operation, "ClientDisconnected").inc()
            return web.Response(status=400, headers={"x-amzn-RequestId": request_id})  # never delivered
        now = services.clock.now()
        path, _, query = request.raw_path.partition("?")  # as sent: SigV4 signs the encoded target
        source_ip = _source_ip(request, headers, services.settings.trusted_proxies)
        authenticated: Authenticated = await services.authn.authenticate(
            method=request.method, path=path, query=query, headers=headers, body=body, now=now, source_ip=source_ip
        )
        caller = authenticated.caller
        structlog.contextvars.bind_contextvars(principal=caller.principal.arn)
        event_source, operation, handler = _resolve(authenticated.signed.get("x-amz-target", ""))
        record = CallRecord(
            operation=operation,
            event_source=event_source,
            request_id=request_id,
            event_time=now,
            region=services.settings.region,
            source_ip=source_ip,
            user_agent=headers.lossy("user-agent")[:1024],
            secure_transport=request.secure,
            principal=caller.principal,
            access_key_id=caller.access_key_id,
        )
        raw = _parse_json(body)
        if event_source == EVENT_SOURCE_KMS:
            params = shapes.validate_request(operation, raw)
        else:
            params = iam_shapes.validate_request(operation, raw)
        record.params = params
        result = await handler(OpContext(services, caller, record, now), params)
        record.result = result
        payload = (
            shapes.render_response(operation, result) if event_source == EVENT_SOURCE_KMS else orjson.dumps(result)
        )
        await audit.submit(record)
        _ok_counter(operation).inc()
        return web.Response(body=payload, headers={"x-amzn-RequestId": request_id, "Content-Type": CONTENT_TYPE})
    except KmsError as exc:
        failure: KmsError = exc
    except Exception:
        log.exception("request.failed", operation=operation)
        failure = KMSInternalException("An internal error occurred; see the server log for this request id")
    finally:
        _latency(operation).observe(time.perf_counter() - started)
    if record is not None:
        record.error, record.result = failure, None
        refused_on = getattr(failure, "resource", None)
        if refused_on and refused_on not in record.resources:
            record.resources.append(refused_on)
        try:
            await audit.submit(record)
        except Exception:
            log.exception("audit.write_failed", operation=operation)
            # Nothing is returned as a success, but a state-changing operation may already have
            # committed: say so rather than claim it was not performed.
            failure = KMSInternalException(
                "The audit trail could not record this request, so no result is returned; "
                "a state-changing operation may have taken effect"
            )
    REQUESTS.labels(operation, failure.code).inc()
    if failure.status >= 500:
        log.error("request.error", operation=operation, error=failure.code, source_ip=source_ip)
    else:
        log.info("request.rejected", operation=operation, error=failure.code, source_ip=source_ip)
    return _error_response(failure, request_id)
