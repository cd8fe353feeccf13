"""Server-side SigV4 verification: pure functions of the request, the time and a signing key.

The canonical-request arithmetic is shared with the client SDK (``kmsclient.sigv4``);
this module adds what only a verifier needs: parsing the Authorization header, checking
the credential scope and clock skew, and comparing signatures in constant time. Error
names and messages follow what AWS returns, so SDK retry and error handling behave.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from multidict import CIMultiDictProxy

from kmsclient import sigv4 as core
from regiond.cache import remember
from regiond.errors import IncompleteSignature, InvalidSignatureException, MissingAuthenticationToken

SERVICE = "kms"


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


def parse(headers: Mapping[str, str]) -> ParsedAuthorization:
    """Parse and sanity-check the Authorization header (no secret needed yet).

    What precedes ``, Signature=`` (algorithm, credential, signed headers) is the same on every
    request a client sends in one day, so a parse that succeeded is remembered under that text
    and later requests only take their signature and ``X-Amz-Date``. That is exact: when the
    signature is the last field and holds no comma, the other fields come from the remembered
    text alone, and the full parse below would find the same values and pass the same checks.
    Bounded: a flood of distinct headers only empties the memo.
    """
    header = headers.get("Authorization")
    amz_date = headers.get("X-Amz-Date")
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


def _parse(header: str | None, amz_date: str | None) -> ParsedAuthorization:
    if not header:
        raise MissingAuthenticationToken("Missing Authentication Token")
    algorithm, _, rest = header.partition(" ")
    if algorithm != core.ALGORITHM:
        raise IncompleteSignature(f"Unsupported AWS 'algorithm': '{algorithm[:40]}'")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if eq:
            fields[name] = value
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in fields]
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


@functools.lru_cache(maxsize=256)
def _parse_amz_date(value: str) -> dt.datetime:
    """``core.parse_amz_date``, memoised: concurrent requests mostly carry the same few seconds."""
    return core.parse_amz_date(value)


@functools.lru_cache(maxsize=8)
def _skew(max_skew_s: int) -> dt.timedelta:
    """The allowed clock skew as a ``timedelta``: one setting per node, built once rather than per request."""
    return dt.timedelta(seconds=max_skew_s)


def check_scope(auth: ParsedAuthorization, *, region: str, now: dt.datetime, max_skew_s: int) -> None:
    if auth.service != SERVICE:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if auth.region != region:
        raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{auth.region[:40]}'.")
    try:
        when = _parse_amz_date(auth.amz_date)
    except ValueError as exc:
        raise IncompleteSignature("X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSSZ") from exc
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


def _canonical_headers(headers: Mapping[str, str], signed: Sequence[str]) -> str:
    """``core.canonical_headers``, without lower-casing every header of an aiohttp request.

    aiohttp's headers are case-insensitive already, so each signed name is looked up directly
    and its last value taken: the header whose lower-cased name equals it, as the generic
    function finds (names on the wire are ASCII tokens, for which case-insensitive equality is
    lower-cased equality). A name that is not ASCII lower case goes the generic way.
    """
    if type(headers) is not CIMultiDictProxy:
        return core.canonical_headers(headers, signed)
    lines = []
    for name in signed:
        if not (name.isascii() and name.islower()):
            return core.canonical_headers(headers, signed)
        values = headers.getall(name, None)
        if values is None:
            raise KeyError(name)
        lines.append(core.canonical_header_line(name, values[-1]))
    return "".join(lines)


def verify(
    auth: ParsedAuthorization,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    signing_key: bytes | hmac.HMAC,
) -> None:
    """Recompute the signature and compare it in constant time.

    ``signing_key`` is the key's bytes or, where it is cached, ``core.keyed_hmac`` of them.
    """
    payload_hash = core.sha256_hex(body)
    claimed = headers.get("X-Amz-Content-Sha256")
    if claimed is not None and claimed != payload_hash and claimed != "UNSIGNED-PAYLOAD":
        raise InvalidSignatureException("The provided 'x-amz-content-sha256' header does not match what was computed.")
    try:
        canonical = core.canonical_request(
            method, path, query, headers, auth.signed_headers, payload_hash,
            signed_names=auth.signed_names or None, header_lines=_canonical_headers(headers, auth.signed_headers),
        )  # fmt: skip
    except KeyError as exc:
        raise InvalidSignatureException(f"Signed header {str(exc)[:60]} is missing from the request.") from exc
    expected = core.signature(signing_key, core.string_to_sign(auth.amz_date, auth.scope, canonical))
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
        )
