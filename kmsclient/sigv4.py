"""AWS Signature Version 4, the pure parts shared by the client and the server.

Everything here is a function of its arguments (method, path, query, headers, body,
time, secret): no clock reads, no I/O. The server (``regiond.auth.sigv4``) imports
this module to recompute signatures; the client SDK signs with it. Only the
Authorization-header form is supported, which is what every AWS SDK sends for KMS.

Reference: "Create a signed AWS API request" in the IAM user guide. The canonical request is
    METHOD \\n canonical URI \\n canonical query \\n canonical headers \\n signed headers \\n payload hash
and the string to sign is
    AWS4-HMAC-SHA256 \\n amz-date \\n scope \\n hex(sha256(canonical request)).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id!r}, secret_access_key=<redacted>)"


def amz_date(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime(AMZ_DATE_FORMAT)


def parse_amz_date(value: str) -> dt.datetime:
    """Parse ``YYYYMMDDTHHMMSSZ``; slicing is several times cheaper than ``strptime`` on the hot path."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        raise ValueError(f"not an ISO 8601 basic date-time: {value[:32]!r}")
    return dt.datetime(
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[9:11]),
        int(value[11:13]),
        int(value[13:15]),
        tzinfo=dt.UTC,
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _uri_encode(value: str, *, keep_slash: bool) -> str:
    safe = "-_.~/" if keep_slash else "-_.~"
    return urllib.parse.quote(value, safe=safe)


def canonical_uri(path: str) -> str:
    if path == "/" or not path:  # every KMS request: skip the percent-encoder
        return "/"
    return _uri_encode(path, keep_slash=True)


def canonical_query(query: str) -> str:
    if not query:  # every KMS request (JSON protocol: the parameters are in the body)
        return ""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    encoded = sorted((_uri_encode(k, keep_slash=False), _uri_encode(v, keep_slash=False)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


_CANONICAL_VALUES: dict[str, str] = {}
_CANONICAL_VALUES_MAX = 1024
_CANONICAL_VALUE_MAX_CHARS = 256
# Never kept beyond their request: a credential, and a value that differs on every request anyway.
_NOT_MEMOISED = frozenset({"x-amz-security-token", "authorization"})


def _canonical_value(value: str) -> str:
    """Trimmed, inner runs of white space squeezed to one space (botocore's own spelling: ``str.split``
    and the ``\\s`` of ``re`` agree on what white space is, and the split is several times faster)."""
    return " ".join(value.split())


def _memoised_canonical_value(value: str) -> str:
    """``_canonical_value``, memoised: a client's header values repeat from request to request
    (host, content type, target, the date within a second) and a dict lookup costs a tenth of
    the regular expression. Bounded in entries and in the length of what it keeps: distinct
    values only ever empty the memo, they cannot grow it."""
    out = _CANONICAL_VALUES.get(value)
    if out is None:
        out = _canonical_value(value)
        if len(value) <= _CANONICAL_VALUE_MAX_CHARS:
            if len(_CANONICAL_VALUES) >= _CANONICAL_VALUES_MAX:
                _CANONICAL_VALUES.clear()
            _CANONICAL_VALUES[value] = out
    return out


def canonical_value(name: str, values: Sequence[str]) -> str:
    """The SigV4 canonical value of the header ``name`` (lower case) sent with ``values``, in order.

    Each value is trimmed and its inner runs of white space squeezed to one space; a header
    sent several times is the comma-joined list of its values ("Create a signed AWS API
    request": ``header:value1,value2``). This is the one definition of what a header says:
    the signer signs it and the server's verifier and dispatch read it, so a repeated header
    can never mean one thing to the signature and another to the operation table.
    """
    if name in _NOT_MEMOISED:
        return ",".join(_canonical_value(v) for v in values)
    if len(values) == 1:  # the usual case: one memo lookup
        out = _CANONICAL_VALUES.get(values[0])
        return _memoised_canonical_value(values[0]) if out is None else out
    return ",".join(_memoised_canonical_value(v) for v in values)


def group_headers(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Header (name, value) pairs grouped by lower-cased name, each name's values in the order given."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str]) -> str:
    """The canonical header lines of the ``signed`` (lower-case) names, in their order.

    Every header whose lower-cased name equals a signed name counts (``headers.items()``, so a
    multidict's repeated headers count too), their values joined as ``canonical_value`` does;
    a signed name with no header is ``KeyError(name)``.
    """
    grouped = group_headers(headers.items())
    lines = []
    for name in signed:
        values = grouped.get(name)
        if values is None:
            raise KeyError(name)
        lines.append(f"{name}:{canonical_value(name, values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
    *,
    signed_names: str | None = None,
    header_lines: str | None = None,
) -> str:
    """The canonical request. A caller that already has them may pass ``signed_names``
    (``";".join(signed_headers)``) and ``header_lines`` (``canonical_headers(headers, signed_headers)``)."""
    names = ";".join(signed_headers) if signed_names is None else signed_names
    lines = canonical_headers(headers, signed_headers) if header_lines is None else header_lines
    return f"{method.upper()}\n{canonical_uri(path)}\n{canonical_query(query)}\n{lines}\n{names}\n{payload_hash}"


def scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_datetime: str, credential_scope: str, canonical: str) -> str:
    return f"{ALGORITHM}\n{amz_datetime}\n{credential_scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.digest(("AWS4" + secret).encode(), date.encode(), "sha256")
    k = hmac.digest(k, region.encode(), "sha256")
    k = hmac.digest(k, service.encode(), "sha256")
    return hmac.digest(k, b"aws4_request", "sha256")


def signature(key: bytes | hmac.HMAC, to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``to_sign`` under the signing key: its bytes, or ``keyed_hmac(key)``."""
    if isinstance(key, bytes):
        return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    mac = key.copy()  # the keyed state is reused, never fed
    mac.update(to_sign.encode())
    return mac.hexdigest()


def keyed_hmac(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with the signing key and fed nothing, for a verifier that keeps it.

    ``signature`` copies it instead of keying a new HMAC from the bytes, which is cheaper per
    signature (benchmarks/README.md, "Design figures"). It stands for the signing key itself, so
    it is kept only where that would be.
    """
    return hmac.new(key, digestmod=hashlib.sha256)


def sign_headers(
    *,
    credentials: Credentials,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    region: str,
    service: str,
    now: dt.datetime,
) -> dict[str, str]:
    """Return ``headers`` plus Host, X-Amz-Date and Authorization for this request."""
    parts = urllib.parse.urlsplit(url)
    out = dict(headers)
    out["Host"] = parts.netloc
    stamp = amz_date(now)
    out["X-Amz-Date"] = stamp
    if credentials.session_token:
        out["X-Amz-Security-Token"] = credentials.session_token
    signed = sorted({k.lower() for k in out})
    payload_hash = sha256_hex(body)
    canonical = canonical_request(method, parts.path or "/", parts.query, out, signed, payload_hash)
    credential_scope = scope(stamp[:8], region, service)
    key = signing_key(credentials.secret_access_key, stamp[:8], region, service)
    sig = signature(key, string_to_sign(stamp, credential_scope, canonical))
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{credential_scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return out
