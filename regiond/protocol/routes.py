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
from multidict import CIMultiDict

from regiond import logging as regiond_logging
from regiond.audit.calls import AuditSink, CallRecord
from regiond.auth import sigv4
from regiond.auth.authn import Authenticated
from regiond.auth.failures import source_bucket
from regiond.errors import (
    DependencyTimeoutException,
    KmsError,
    KMSInternalException,
    RequestEntityTooLargeException,
    RequestTimeoutException,
    SerializationException,
    UnknownOperationException,
    UnsupportedOperationException,
    ValidationException,
)
from regiond.protocol import forwarding, iam_shapes, shapes, sts
from regiond.protocol.context import OpContext, OpHandler
from regiond.protocol.forwarding import PeerForwarder
from regiond.protocol.ops import IAM_OPERATIONS, KMS_OPERATIONS
from regiond.randomids import uuid4_str
from regiond.runtime.listener import BodyTimeout, read_body_within
from regiond.runtime.metrics import FORWARD_LATENCY, FORWARDED, REQUESTS
from regiond.service.container import Services

log = structlog.get_logger("regiond.request")

MAX_BODY_BYTES = 1024 * 1024
KMS_PREFIX = "TrentService"
CONTENT_TYPE = "application/x-amz-json-1.1"
EVENT_SOURCE_KMS = "kms.amazonaws.com"
EVENT_SOURCE_IAM = "iam.amazonaws.com"

SERVICES = web.AppKey("services", Services)
AUDIT = web.AppKey("audit", AuditSink)
FORWARDER: web.AppKey[PeerForwarder] = web.AppKey("forwarder")


def _error_response(exc: KmsError, request_id: str) -> web.Response:
    body = orjson.dumps({"__type": exc.code, "message": exc.message})
    return web.Response(
        status=exc.status,
        body=body,
        headers={"x-amzn-RequestId": request_id, "Content-Type": CONTENT_TYPE},
    )


def _failure_response(exc: KmsError, request_id: str, headers: sigv4.HeaderView | None, as_sts: bool) -> web.Response:
    """The AWS error in the protocol of the call: KMS's JSON, or STS's (``sts.render_error``)."""
    if not as_sts or headers is None:
        return _error_response(exc, request_id)
    status, body, out = sts.render_error(exc, request_id, headers)
    return web.Response(status=status, body=body, headers=out)


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
    log_context = regiond_logging.start_request(request_id)
    source_ip = request.remote or ""
    headers = sigv4.HeaderView(request.headers)
    try:
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
            REQUESTS.count("unknown", "ClientDisconnected")
            return web.Response(status=400, headers={"x-amzn-RequestId": request_id})  # never delivered
        source_ip = _source_ip(request, headers, services.settings.trusted_proxies)
        auth = _scope(headers)
        forwarder = request.app.get(FORWARDER)
        if (
            auth is not None and auth.region != services.settings.region and forwarder is not None
            and auth.region in forwarder.forward_regions
        ):  # fmt: skip
            return await _forward(
                request, forwarder, auth, body, request_id, services.settings.forward_timeout_s, source_ip
            )
    except KmsError as exc:
        REQUESTS.observe("unknown", time.perf_counter() - started)
        REQUESTS.count("unknown", exc.code)
        log.info("request.rejected", operation="unknown", error=exc.code, source_ip=source_ip)
        return _failure_response(exc, request_id, headers, sts.is_sts(_scope(headers), headers))
    except Exception:
        log.exception("request.failed", operation="unknown")
        REQUESTS.count("unknown", KMSInternalException.code)
        failed = KMSInternalException("An internal error occurred; see the server log for this request id")
        return _failure_response(failed, request_id, headers, sts.is_sts(_scope(headers), headers))
    return await _serve(
        services, audit, request_id=request_id, started=started, method=request.method, raw_path=request.raw_path,
        headers=headers, body=body, source_ip=source_ip, secure=request.secure, auth=auth, log_context=log_context,
    )  # fmt: skip


def _scope(headers: sigv4.HeaderView) -> sigv4.ParsedAuthorization | None:
    """The request's parsed Authorization (its credential scope), or None when it does not parse:
    then authentication parses it again and answers the AWS error, counted and throttled there."""
    try:
        return sigv4.parse(headers)
    except KmsError:
        return None


async def _forward(
    request: web.Request, forwarder: PeerForwarder, auth: sigv4.ParsedAuthorization, body: bytes,
    request_id: str, timeout_s: float, source_ip: str,
) -> web.Response:  # fmt: skip
    """Relay the request to the region its signature names, and its answer back (``forwarding``)."""
    region = auth.region
    envelope = forwarding.encode_request(forwarding.ForwardedRequest(
        request.method, request.raw_path.encode("utf-8", "surrogateescape"),
        forwarding.end_to_end_headers(request.raw_headers, auth.signed_headers), body, request.secure,
        source_ip[:64],
    ))  # fmt: skip
    started = time.perf_counter()
    failure: KmsError
    try:
        reply = forwarding.decode_reply(await forwarder.forward(region, envelope, timeout_s=timeout_s))
    except TimeoutError:
        outcome = "timeout"
        failure = DependencyTimeoutException(f"The request to {region} timed out; try again")
    except ConnectionError as exc:
        outcome = "unreachable"
        log.warning("request.forward_failed", region=region, error=str(exc)[:200])
        failure = KMSInternalException(f"Region {region} could not be reached from this node; try again")
    except forwarding.ForwardError as exc:
        outcome = "bad_reply"
        log.error("request.forward_bad_reply", region=region, error=str(exc))
        failure = KMSInternalException(f"Region {region} sent an unreadable answer")
    else:
        FORWARD_LATENCY.labels(region).observe(time.perf_counter() - started)
        FORWARDED.labels(region, "ok" if reply.status < 400 else "error").inc()
        return web.Response(status=reply.status, body=reply.body, headers=CIMultiDict(reply.headers))
    FORWARD_LATENCY.labels(region).observe(time.perf_counter() - started)
    FORWARDED.labels(region, outcome).inc()
    return _error_response(failure, request_id)


async def serve_forwarded(app: web.Application, peer_region: str, peer_address: str, envelope: bytes) -> bytes:
    """Serve a request another region forwarded (``forwarding``) as this region's own call.

    The request is authenticated, authorized and audited here; it is never forwarded again (the
    loop guard): signed for any other region, it fails the scope check. Its source address is
    the forwarding node's (what this node can verify), and ``aws:SecureTransport`` holds only if
    the client's own connection to that node was TLS. The client's address as that node reports
    it only names the failed-authentication throttle bucket (``forwarding``).
    """
    request = forwarding.decode_request(envelope)  # ForwardError: the channel answers 400
    request_id = uuid4_str()
    log_context = regiond_logging.start_request(request_id)
    headers = sigv4.HeaderView(request.header_multidict())
    response = await _serve(
        app[SERVICES], app[AUDIT], request_id=request_id, started=time.perf_counter(), method=request.method,
        raw_path=request.raw_path, headers=headers, body=request.body, source_ip=peer_address,
        secure=request.client_tls, auth=None, log_context=log_context, forwarded_from=peer_region,
        throttle_source=f"{source_bucket(request.client_address or peer_address)} via {peer_region}",
    )  # fmt: skip
    body = response.body if isinstance(response.body, bytes) else b""
    return forwarding.encode_reply(forwarding.ForwardedReply(response.status, tuple(response.headers.items()), body))


async def _serve(
    services: Services, audit: AuditSink, *, request_id: str, started: float, method: str, raw_path: str,
    headers: sigv4.HeaderView, body: bytes, source_ip: str, secure: bool, auth: sigv4.ParsedAuthorization | None,
    log_context: regiond_logging.RequestLogContext, forwarded_from: str | None = None,
    throttle_source: str | None = None,
) -> web.Response:  # fmt: skip
    """Authenticate, dispatch, audit and answer one call whose body has been read; ``throttle_source``
    names the failed-authentication throttle bucket when it is not ``source_ip`` (a forwarded call)."""
    operation = "unknown"
    record: CallRecord | None = None
    if auth is None:
        auth = _scope(headers)
    as_sts = sts.is_sts(auth, headers)
    try:
        now = services.clock.now()
        path, _, query = raw_path.partition("?")  # as sent: SigV4 signs the encoded target
        authenticated: Authenticated = await services.authn.authenticate(
            method=method, path=path, query=query, headers=headers, body=body, now=now,
            source_ip=throttle_source or source_ip, auth=auth,
        )  # fmt: skip
        caller = authenticated.caller
        log_context.principal = caller.principal.arn
        if as_sts:
            event_source = sts.EVENT_SOURCE
            call = sts.parse(authenticated.signed, headers, query, body)
            operation = call.operation
        else:
            event_source, operation, handler = _resolve(authenticated.signed.get("x-amz-target", ""))
        record = CallRecord(
            operation=operation,
            event_source=event_source,
            request_id=request_id,
            event_time=now,
            region=services.settings.region,
            source_ip=source_ip,
            user_agent=headers.lossy("user-agent")[:1024],
            secure_transport=secure,
            principal=caller.principal,
            access_key_id=caller.access_key_id,
        )
        if forwarded_from is not None:
            record.additional["forwardedFromRegion"] = forwarded_from
        if as_sts:  # GetCallerIdentity: no permission needed, as AWS
            record.result = identity = sts.identity(caller.principal)
            payload, content_type = sts.render_result(call, identity, request_id)
            await audit.submit(record)
            REQUESTS.count(operation, "ok")
            return web.Response(body=payload, headers={"x-amzn-RequestId": request_id, "Content-Type": content_type})
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
        REQUESTS.count(operation, "ok")
        return web.Response(body=payload, headers={"x-amzn-RequestId": request_id, "Content-Type": CONTENT_TYPE})
    except KmsError as exc:
        failure: KmsError = exc
    except Exception:
        log.exception("request.failed", operation=operation)
        failure = KMSInternalException("An internal error occurred; see the server log for this request id")
    finally:
        REQUESTS.observe(operation, time.perf_counter() - started)
    if record is not None:
        record.error, record.result = failure, None
        refused_on = getattr(failure, "resource", None)
        if refused_on and refused_on not in record.resources:
            record.resources.append(refused_on)
        try:
            await audit.submit(record)
        except Exception as exc:
            if isinstance(exc, KmsError):  # the audit trail is unavailable (the database failing over)
                log.error("audit.write_failed", operation=operation, error=exc.code)
            else:
                log.exception("audit.write_failed", operation=operation)
            # Nothing is returned as a success, but a state-changing operation may already have
            # committed: say so rather than claim it was not performed.
            failure = KMSInternalException(
                "The audit trail could not record this request, so no result is returned; "
                "a state-changing operation may have taken effect"
            )
    REQUESTS.count(operation, failure.code)
    if failure.status >= 500:
        log.error("request.error", operation=operation, error=failure.code, source_ip=source_ip)
    else:
        log.info("request.rejected", operation=operation, error=failure.code, source_ip=source_ip)
    return _failure_response(failure, request_id, headers, as_sts)
