"""STS GetCallerIdentity on the KMS endpoint: Terraform, the AWS CLI and many tools ask it first.

A request is an STS call when its SigV4 credential scope names the service ``sts`` (dispatch is
on the signature, like everything else): the target region's node authenticates it with the
same access keys and answers who signed it. Wire forms, as botocore's STS model (protocol
``query``, API version 2011-06-15) and AWS's endpoint accept them:

- query protocol: ``Action=GetCallerIdentity&Version=2011-06-15`` form-encoded in the POST body
  (or in the query string), answered in STS's XML (``text/xml``), or in its JSON rendering of the
  same document when the client sends ``Accept: application/json``;
- JSON 1.0 (the AWS query-compatible JSON protocol): ``X-Amz-Target:
  AWSSecurityTokenServiceV20110615.GetCallerIdentity``, ``Content-Type:
  application/x-amz-json-1.0``, answered ``{"Account", "Arn", "UserId"}``.

Errors use STS's names (``InvalidClientTokenId``, ``SignatureDoesNotMatch``,
``IncompleteSignature``, ``MissingAuthenticationToken``, ``Throttling``, ``InvalidAction``...),
HTTP statuses and formats (``ErrorResponse`` XML; ``__type`` and ``x-amzn-query-error`` in JSON).
``GetCallerIdentity`` needs no permission (as AWS: a Deny cannot hide who you are).
"""

from __future__ import annotations

import urllib.parse
from typing import NamedTuple
from xml.sax.saxutils import escape

import orjson

from regiond.auth import sigv4
from regiond.domain.principal import Principal
from regiond.errors import (
    IncompleteSignature,
    InvalidSignatureException,
    KmsError,
    MissingAuthenticationToken,
    RequestEntityTooLargeException,
    RequestTimeoutException,
    SerializationException,
    ThrottlingException,
    UnrecognizedClientException,
    ValidationException,
)

__all__ = ["EVENT_SOURCE", "SERVICE", "StsCall", "StsError", "identity", "is_sts", "parse", "render_error"]

SERVICE = "sts"
EVENT_SOURCE = "sts.amazonaws.com"
API_VERSION = "2011-06-15"
XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
JSON_TARGET_PREFIX = "AWSSecurityTokenServiceV20110615"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
OPERATIONS = frozenset({"GetCallerIdentity"})


class StsError(KmsError):
    """An STS-only client fault (its code is STS's): an unknown or missing action."""

    code = "InvalidAction"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.sts_code = code


_BY_CLASS: dict[type[KmsError], tuple[str, int]] = {
    UnrecognizedClientException: ("InvalidClientTokenId", 403),
    InvalidSignatureException: ("SignatureDoesNotMatch", 403),
    IncompleteSignature: ("IncompleteSignature", 400),
    MissingAuthenticationToken: ("MissingAuthenticationToken", 403),
    ThrottlingException: ("Throttling", 400),
    ValidationException: ("ValidationError", 400),
    SerializationException: ("MalformedInput", 400),
    RequestEntityTooLargeException: ("RequestEntityTooLarge", 413),
    RequestTimeoutException: ("RequestTimeout", 408),
}


class StsCall(NamedTuple):
    operation: str
    json_protocol: bool  # JSON 1.0 (X-Amz-Target) rather than the query protocol
    json_reply: bool  # answer in JSON (the JSON protocol, or the query protocol with Accept: application/json)


def is_sts(auth: sigv4.ParsedAuthorization | None, headers: sigv4.HeaderView) -> bool:
    """Whether to answer this request as STS: signed for ``sts``, or, when the Authorization
    cannot be read, shaped like an STS call (a form body and no KMS target)."""
    if auth is not None:
        return auth.service == SERVICE
    try:
        content_type = (headers.get("content-type") or "").lower()
        target = headers.get("x-amz-target") or ""
    except sigv4.NotUtf8Header:
        return False
    if target:
        return target.startswith(JSON_TARGET_PREFIX + ".")
    return content_type.startswith("application/x-www-form-urlencoded")


def _wants_json(headers: sigv4.HeaderView) -> bool:
    try:
        accept = (headers.get("accept") or "").lower()
    except sigv4.NotUtf8Header:
        return False
    return "application/json" in accept


def parse(signed: sigv4.SignedHeaders, headers: sigv4.HeaderView, query: str, body: bytes) -> StsCall:
    """The operation of an authenticated STS request (read from what its signature covers)."""
    target = signed.get("x-amz-target")
    if target is not None:
        prefix, _, operation = target.partition(".")
        if prefix != JSON_TARGET_PREFIX or operation not in OPERATIONS:
            raise StsError("InvalidAction", f"Could not find operation {operation[:64]} for version {API_VERSION}")
        return StsCall(operation, True, True)
    try:
        text = query + "&" + body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise SerializationException("The request is not a valid form-encoded query") from None
    params = dict(pairs)
    action = params.get("Action")
    if not action:
        raise StsError("MissingAction", "Missing Action")
    version = params.get("Version", "")
    if action not in OPERATIONS or version != API_VERSION:
        raise StsError("InvalidAction", f"Could not find operation {action[:64]} for version {version[:32]}")
    return StsCall(action, False, _wants_json(headers))


def identity(principal: Principal) -> dict[str, str]:
    """GetCallerIdentity's result: the account root's UserId is its account id, as AWS answers."""
    user_id = principal.account_id if principal.is_root else principal.principal_id
    return {"UserId": user_id, "Account": principal.account_id, "Arn": principal.arn}


def render_result(call: StsCall, result: dict[str, str], request_id: str) -> tuple[bytes, str]:
    """(body, content type) of a successful call."""
    if call.json_protocol:
        return orjson.dumps(result), JSON_CONTENT_TYPE
    if call.json_reply:
        document = {
            f"{call.operation}Response": {
                f"{call.operation}Result": result,
                "ResponseMetadata": {"RequestId": request_id},
            }
        }
        return orjson.dumps(document), "application/json"
    members = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in result.items())
    xml = (
        f'<{call.operation}Response xmlns="{XMLNS}">\n'
        f"  <{call.operation}Result>{members}</{call.operation}Result>\n"
        f"  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n"
        f"</{call.operation}Response>\n"
    )
    return xml.encode(), "text/xml"


def error_code(exc: KmsError) -> tuple[str, int]:
    """STS's name and HTTP status for a failure (server faults keep their status)."""
    if isinstance(exc, StsError):
        return exc.sts_code, 400
    for cls, answer in _BY_CLASS.items():
        if isinstance(exc, cls):
            return answer
    if exc.status >= 500:
        return ("ServiceUnavailable" if exc.status == 503 else "InternalFailure"), exc.status
    return exc.code.removesuffix("Exception"), exc.status


def render_error(exc: KmsError, request_id: str, headers: sigv4.HeaderView) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of a failed STS call in the form its client reads."""
    code, status = error_code(exc)
    fault = "Sender" if status < 500 else "Receiver"
    out = {"x-amzn-RequestId": request_id}
    try:
        target = headers.get("x-amz-target") or ""
    except sigv4.NotUtf8Header:
        target = ""
    if target.startswith(JSON_TARGET_PREFIX + "."):
        out["Content-Type"] = JSON_CONTENT_TYPE
        out["x-amzn-query-error"] = f"{code};{fault}"
        return status, orjson.dumps({"__type": f"com.amazonaws.sts#{code}", "message": exc.message}), out
    if _wants_json(headers):
        out["Content-Type"] = "application/json"
        document = {"Error": {"Type": fault, "Code": code, "Message": exc.message}, "RequestId": request_id}
        return status, orjson.dumps(document), out
    out["Content-Type"] = "text/xml"
    xml = (
        f'<ErrorResponse xmlns="{XMLNS}">\n'
        f"  <Error>\n    <Type>{fault}</Type>\n    <Code>{code}</Code>\n"
        f"    <Message>{escape(exc.message)}</Message>\n  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        "</ErrorResponse>\n"
    )
    return status, xml.encode(), out
