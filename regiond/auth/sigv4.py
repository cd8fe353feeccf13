"""Server-side SigV4 verification: pure functions of the request, the time and a signing key.

The canonical-request arithmetic is shared with the client SDK (``kmsclient.sigv4``);
this module adds what only a verifier needs: the request's one view of its headers
(``HeaderView``), parsing the Authorization header, checking the credential scope and clock
skew, and comparing signatures in constant time. Error names and messages follow what AWS
returns, so SDK retry and error handling behave.

Every header the server reads is read through one ``HeaderView``: a header's value is its
SigV4 canonical value (``core.canonical_value``: trimmed, and the comma-joined list when it
was sent more than once), whoever reads it. ``verify`` returns the signed headers' values,
and the request is dispatched on those (``X-Amz-Target`` must be signed when it is sent):
what the operation table reads is exactly what the signature covers. Bytes that are not
UTF-8 in a header that is read are refused with the AWS error of that header's role, never
passed on.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from kmsclient import sigv4 as core
from regiond.cache import remember
from regiond.errors import IncompleteSignature, InvalidSignatureException, MissingAuthenticationToken

SERVICE = "kms"
SERVICES = frozenset({SERVICE, "sts"})
"""The services a request may be signed for: KMS, and STS for GetCallerIdentity (``protocol/sts.py``)."""

DISPATCH_HEADERS = ("x-amz-target",)
"""Headers the server dispatches on: when sent, each must be a signed header (DESIGN section 2).
Content-Type is not read (every body is parsed as the JSON protocol's), so it is not here."""

_ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9_]{16,128}")
"""IAM's AccessKeyId shape (``[\\w]+``, 16 to 128 characters), ASCII only: anything else names no key."""


class NotUtf8Header(ValueError):
    """A header that is read holds bytes that are not UTF-8 (aiohttp decodes them with
    ``surrogateescape``); its name is the message. Callers turn it into their AWS error."""


class HeaderView:
    """A request's headers as SigV4 canonicalises them, the one view that the verifier and the
    dispatch read (``get``). Lazy: only the headers someone reads are canonicalised, which on
    the hot path is the signed ones and a few others, not every header a client sends."""

    __slots__ = ("_raw",)

    def __init__(self, raw: CIMultiDictProxy[str] | CIMultiDict[str]) -> None:
        self._raw = raw

    @classmethod
    def of(cls, headers: CIMultiDictProxy[str] | Mapping[str, str] | Iterable[tuple[str, str]]) -> HeaderView:
        """The view of aiohttp's request headers (as they are), or of a mapping or pairs (tests, tools)."""
        if isinstance(headers, CIMultiDictProxy | CIMultiDict):
            return cls(headers)
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return cls(CIMultiDict(pairs))

    def __contains__(self, name: str) -> bool:
        return name in self._raw

    def get(self, name: str) -> str | None:
        """The canonical value of ``name`` (lower case), or None when it was not sent.

        Raises ``NotUtf8Header`` when a value holds bytes that are not UTF-8.
        """
        values = self._raw.getall(name, None)
        if values is None:
            return None
        for value in values:
            if not value.isascii():  # a flag check in CPython: the scan below is for the rare other case
                _require_utf8(name, value)
        if name == "authorization":
            # Parsed, never signed, by a parse that ignores white space around its fields: read as
            # sent (aiohttp has trimmed it), sparing a squeeze of ~200 characters per request. Sent
            # twice, it is still the comma-joined list, which the parse refuses.
            return values[0] if len(values) == 1 else ",".join(values)
        return core.canonical_value(name, values)

    def lossy(self, name: str) -> str:
        """``get`` for a header that is only recorded (User-Agent): bytes that are not UTF-8 become U+FFFD."""
        values = self._raw.getall(name, None)
        if values is None:
            return ""
        fixed = [v if v.isascii() else v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in values]
        return core.canonical_value(name, fixed)


def _require_utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NotUtf8Header(name) from None


SignedHeaders = dict[str, str]
"""The values of the headers a verified signature covers, by lower-case name: what dispatch reads."""


class ParsedAuthorization(NamedTuple):
    """The Authorization header's fields. A named tuple rather than a frozen dataclass: one is
    built per request (``parse``), and a frozen dataclass's ``__init__`` costs ~3x a tuple's."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: Sequence[str]
    signature: str
    amz_date: str
    signed_names: str = ""  # the SignedHeaders field as sent ("content-type;host;..."), when known

    @property
    def scope(self) -> str:
        return core.scope(self.date, self.region, self.service)


_SIGNATURE_FIELD = ", Signature="
_PARSED_MAX = 1024
_parsed: dict[str, ParsedAuthorization] = {}
"""Parsed Authorization headers by everything before their signature (see ``parse``)."""


def parse(headers: HeaderView) -> ParsedAuthorization:
    """Parse and sanity-check the Authorization header (no secret needed yet).

    What precedes ``, Signature=`` (algorithm, credential, signed headers) is the same on every
    request a client sends in one day, so a parse that succeeded is remembered under that text
    and later requests only take their signature and ``X-Amz-Date``. That is exact: when the
    signature is the last field and holds no comma, the other fields come from the remembered
    text alone, and the full parse below would find the same values and pass the same checks.
    Bounded: a flood of distinct headers only empties the memo.

    Both headers are read through the view, so a repeated Authorization is the comma-joined
    text of both, which the strict field parse refuses, and a repeated X-Amz-Date is no date.
    """
    try:
        header = headers.get("authorization")
    except NotUtf8Header:
        raise IncompleteSignature("The Authorization header is not valid UTF-8.") from None
    try:
        amz_date = headers.get("x-amz-date")
    except NotUtf8Header:
        raise IncompleteSignature(_BAD_DATE) from None
    if header and amz_date:
        head, sep, signature = header.rpartition(_SIGNATURE_FIELD)
        if sep and "," not in signature:
            known = _parsed.get(head)
            if known is not None:
                return ParsedAuthorization(
                    known.access_key_id, known.date, known.region, known.service, known.signed_headers,
                    signature.rstrip(), amz_date, known.signed_names,
                )  # fmt: skip
            return remember(_parsed, head, _parse(header, amz_date), _PARSED_MAX)
    return _parse(header, amz_date)


_FIELDS = ("Credential", "SignedHeaders", "Signature")
_BAD_DATE = "X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSSZ"


def _parse(header: str | None, amz_date: str | None) -> ParsedAuthorization:
    if not header:
        raise MissingAuthenticationToken("Missing Authentication Token")
    algorithm, _, rest = header.partition(" ")
    if algorithm != core.ALGORITHM:
        raise IncompleteSignature(f"Unsupported AWS 'algorithm': '{algorithm[:40]}'")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            raise IncompleteSignature(
                f"'{name[:40]}' not a valid key=value pair (missing equal-sign) in Authorization header."
            )
        if name not in _FIELDS:
            raise IncompleteSignature(f"Unexpected field '{name[:40]}' in the Authorization header.")
        if name in fields:  # a repeated field, or two Authorization headers joined with a comma
            raise IncompleteSignature(f"Field '{name}' appears more than once in the Authorization header.")
        fields[name] = value
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise IncompleteSignature(
            "Authorization header requires " + ", ".join(f"'{m}'" for m in missing) + " parameter(s)."
        )
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise IncompleteSignature(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term"
        )
    if not amz_date:
        raise IncompleteSignature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    signed = tuple(fields["SignedHeaders"].split(";"))
    if any(not name or name != name.lower() for name in signed):
        raise InvalidSignatureException("SignedHeaders must be a list of lower-case header names separated by ';'.")
    if "host" not in signed:
        raise InvalidSignatureException("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    return ParsedAuthorization(
        access_key_id=credential[0],
        date=credential[1],
        region=credential[2],
        service=credential[3],
        signed_headers=signed,
        signature=fields["Signature"],
        amz_date=amz_date,
        signed_names=fields["SignedHeaders"],
    )


def well_formed_access_key_id(value: str) -> bool:
    """Whether ``value`` can name an access key at all (IAM's AccessKeyId shape); a lookup of
    anything else would only cost a database round trip and carry odd bytes into the store."""
    return _ACCESS_KEY_ID.fullmatch(value) is not None


@functools.lru_cache(maxsize=256)
def _parse_amz_date(value: str) -> dt.datetime:
    """``core.parse_amz_date``, memoised: concurrent requests mostly carry the same few seconds."""
    return core.parse_amz_date(value)


@functools.lru_cache(maxsize=8)
def _skew(max_skew_s: int) -> dt.timedelta:
    """The allowed clock skew as a ``timedelta``: one setting per node, built once rather than per request."""
    return dt.timedelta(seconds=max_skew_s)


def check_scope(auth: ParsedAuthorization, *, region: str, now: dt.datetime, max_skew_s: int) -> None:
    if auth.service not in SERVICES:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if auth.region != region:
        raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{auth.region[:40]}'.")
    try:
        when = _parse_amz_date(auth.amz_date)
    except ValueError as exc:
        raise IncompleteSignature(_BAD_DATE) from exc
    if auth.date != auth.amz_date[:8]:
        raise InvalidSignatureException("Credential should be scoped to the date of the X-Amz-Date header.")
    skew = _skew(max_skew_s)
    if when < now - skew:
        raise InvalidSignatureException(
            f"Signature expired: {auth.amz_date} is now earlier than {core.amz_date(now - skew)}"
            f" ({core.amz_date(now)} - {max_skew_s // 60} min.)"
        )
    if when > now + skew:
        raise InvalidSignatureException(
            f"Signature not yet current: {auth.amz_date} is still later than {core.amz_date(now + skew)}"
            f" ({core.amz_date(now)} + {max_skew_s // 60} min.)"
        )


def verify(
    auth: ParsedAuthorization,
    *,
    method: str,
    path: str,
    query: str,
    headers: HeaderView,
    body: bytes,
    signing_key: bytes | hmac.HMAC,
) -> SignedHeaders:
    """Recompute the signature, compare it in constant time, and return the signed headers' values.

    ``signing_key`` is the key's bytes or, where it is cached, ``core.keyed_hmac`` of them.
    ``path`` and ``query`` are the request target as sent (not percent-decoded).
    """
    if not (path.isascii() and query.isascii()):
        raise InvalidSignatureException("The request target must be URI-encoded ASCII.")
    signed: SignedHeaders = {}
    lines = []
    for name in auth.signed_headers:
        try:
            value = headers.get(name)
        except NotUtf8Header:
            raise InvalidSignatureException(f"Signed header '{name[:60]}' is not valid UTF-8.") from None
        if value is None:
            raise InvalidSignatureException(f"Signed header '{name[:60]}' is missing from the request.")
        signed[name] = value
        lines.append(f"{name}:{value}\n")
    for name in DISPATCH_HEADERS:
        if name not in signed and name in headers:
            raise InvalidSignatureException(f"'{_title(name)}' must be a 'SignedHeader' in the AWS Authorization.")
    payload_hash = core.sha256_hex(body)
    try:
        claimed = headers.get("x-amz-content-sha256")
    except NotUtf8Header:
        claimed = ""
    if claimed is not None and claimed != payload_hash:
        raise InvalidSignatureException("The provided 'x-amz-content-sha256' header does not match what was computed.")
    canonical = core.canonical_request(
        method, path, query, {}, auth.signed_headers, payload_hash,
        signed_names=auth.signed_names or None, header_lines="".join(lines),
    )  # fmt: skip
    expected = core.signature(signing_key, core.string_to_sign(auth.amz_date, auth.scope, canonical))
    if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8", "surrogateescape")):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
        )
    return signed


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))
