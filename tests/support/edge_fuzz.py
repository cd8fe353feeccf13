"""Strategies and a blocking raw HTTP client for the property suite over the protocol edge
(tests/integration/test_edge_fuzz.py).

Requests are built from header lines and bytes, never through an HTTP library, so a header
can be repeated, reordered, re-cased or carry bytes no library would send. They are signed
here with an implementation of SigV4 written out in this file (not the code under test), over
whatever the mutated header lines say, so a mutation reaches past authentication whenever
SigV4 can sign it.

Bodies come from botocore's KMS model: for each operation, a JSON object built from its input
shape, with values that are valid for their shape, plausible (real key ids, aliases and
ciphertexts of the node under test), or wrong (another JSON type, a huge or non-finite number,
deep nesting, NUL and lone surrogate strings, empty and huge strings, base64 garbage).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from regiond.protocol import shapes

MODEL = shapes._load_model()
KMS_OPERATIONS = sorted(MODEL["operations"])
IAM_OPERATIONS = [
    "CreateUser", "CreateRole", "ListUsers", "ListRoles", "CreateAccessKey", "ListAccessKeys", "UpdateAccessKey",
    "DeleteAccessKey", "PutUserPolicy", "PutRolePolicy", "GetUserPolicy", "GetRolePolicy", "DeleteUserPolicy",
    "DeleteRolePolicy", "GetCallerIdentity",
]  # fmt: skip
IAM_MEMBERS = ["UserName", "RoleName", "AccessKeyId", "Status", "PolicyName", "PolicyDocument"]

# Errors any request may meet, whatever its operation's model lists (AWS's common errors and
# the IAM admin API's, which has no botocore model here).
COMMON_ERRORS = frozenset({
    "AccessDeniedException", "IncompleteSignatureException", "InvalidSignatureException",
    "MissingAuthenticationTokenException", "UnrecognizedClientException", "SerializationException",
    "UnknownOperationException", "ValidationException", "ThrottlingException", "RequestEntityTooLargeException",
    "UnsupportedOperationException", "EntityAlreadyExistsException", "NoSuchEntityException",
    "MalformedPolicyDocumentException", "NotFoundException", "LimitExceededException",
})  # fmt: skip


def model_errors(operation: str) -> frozenset[str]:
    """The error codes botocore's model lists for ``operation`` (empty for an unknown one)."""
    spec = MODEL["operations"].get(operation, {})
    return frozenset(e["shape"] for e in spec.get("errors", ()))


# An operation's model does not list every error AWS gives it (CreateAlias naming an alias as
# its target, for one), so the property is the error vocabulary, not the per-operation lists.
KNOWN_ERRORS = COMMON_ERRORS | {e for operation in KMS_OPERATIONS for e in model_errors(operation)}


# --- a blocking raw HTTP client ------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(endpoint: str, head: list[tuple[bytes, bytes]], body: bytes, *, timeout_s: float = 30.0) -> Response:
    """POST / with exactly these header lines (plus Content-Length when they have none, and
    Connection: close) and read the whole answer."""
    url = urllib.parse.urlsplit(endpoint)
    lines = [b"POST / HTTP/1.1", *(name + b": " + value for name, value in head)]
    if not any(name.lower() == b"content-length" for name, _ in head):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    with socket.create_connection((url.hostname, url.port), timeout=timeout_s) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        raw = b""
        # Read the one response and stop: a server lingers before closing when a request's body
        # was left unread (aiohttp: up to 10 s), and that wait is not the answer's.
        while not _complete(raw) and (chunk := sock.recv(65536)):
            raw += chunk
    while raw.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue): the final one follows
        raw = raw.partition(b"\r\n\r\n")[2]
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers = _headers(header_block)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _dechunk(payload)
    return Response(int(status_line.split()[1]), headers, payload)


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def _complete(raw: bytes) -> bool:
    while raw.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in raw:
        raw = raw.partition(b"\r\n\r\n")[2]
    head, sep, payload = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    headers = _headers(head.partition(b"\r\n")[2])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return payload.endswith(b"0\r\n\r\n")
    length = headers.get("content-length")
    return length is not None and len(payload) >= int(length)


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)


# --- SigV4, written out here --------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    access_key_id: str
    secret: str = field(repr=False)
    region: str
    host: str

    def sign(
        self, head: list[tuple[bytes, bytes]], body: bytes, *, skip: frozenset[str] = frozenset({"content-length"})
    ) -> list[tuple[bytes, bytes]]:
        """``head`` plus Host (if absent), X-Amz-Date (if absent) and an Authorization signing every
        header but ``skip``, as SigV4 defines it: names lower-cased, values trimmed and squeezed, a
        repeated header's values joined with commas. Bytes that are not UTF-8 are signed as sent."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        names_present = {n.lower() for n, _ in head}
        if b"host" not in names_present:
            head = [(b"Host", self.host.encode()), *head]
        if b"x-amz-date" not in names_present:
            head = [*head, (b"X-Amz-Date", stamp.encode())]
        else:
            stamp = next(v for n, v in head if n.lower() == b"x-amz-date").decode("utf-8", "surrogateescape")
        grouped: dict[str, list[str]] = {}
        for name, value in head:
            text = name.decode("utf-8", "surrogateescape").lower()
            if text in skip or text == "authorization":
                continue
            grouped.setdefault(text, []).append(" ".join(value.decode("utf-8", "surrogateescape").split()))
        names = sorted(grouped)
        lines = "".join(f"{n}:{','.join(grouped[n])}\n" for n in names)
        canonical = f"POST\n/\n\n{lines}\n{';'.join(names)}\n{hashlib.sha256(body).hexdigest()}"
        date = stamp[:8]
        scope = f"{date}/{self.region}/kms/aws4_request"
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
        key = ("AWS4" + self.secret).encode()
        for part in (date, self.region, "kms", "aws4_request"):
            key = hmac.digest(key, part.encode("utf-8", "surrogateescape"), "sha256")
        signature = hmac.new(key, to_sign.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return [*head, (b"Authorization", authorization.encode("utf-8", "surrogateescape"))]


def base_head(target: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Amz-Target", target.encode()), (b"Content-Type", b"application/x-amz-json-1.1"),
            (b"User-Agent", b"regionkms-edge-fuzz/1")]  # fmt: skip


# --- bodies from the model ------------------------------------------------------------------


@dataclass(frozen=True)
class Realm:
    """Real things of the node under test, so generated requests also get past lookups."""

    key_ids: tuple[str, ...]
    aliases: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
    grant_ids: tuple[str, ...]
    grant_tokens: tuple[str, ...]
    account_id: str
    region: str

    def key_references(self) -> st.SearchStrategy[str]:
        arns = [f"arn:aws:kms:{self.region}:{self.account_id}:key/{k}" for k in self.key_ids]
        return st.sampled_from([*self.key_ids, *self.aliases, *arns])


_SURPRISING_TEXT = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ufffe", "\u202e", "🔑" * 10, "A" * 10_000,
    "alias/", "alias/aws/x", "arn:aws:kms:", "../../etc/passwd", "%00", "null", "' OR 1=1 --", "\t\n\r",
])  # fmt: skip
_WRONG_TYPE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0.5, -0.0, 1e308, -1e308, 2**63, 2**64, -(2**63) - 1]),
    st.text(max_size=8), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


def _text(shape: Mapping[str, Any]) -> st.SearchStrategy[str]:
    low, high = int(shape.get("min", 0)), int(shape.get("max", 64))
    return st.text(min_size=low, max_size=min(high, 80))


def _member_strategy(name: str, shape_name: str, realm: Realm, depth: int) -> st.SearchStrategy[Any]:
    if name in ("KeyId", "DestinationKeyId", "SourceKeyId", "TargetKeyId", "PrimaryKeyArn"):
        return st.one_of(realm.key_references(), value_strategy(shape_name, realm, depth))
    if name == "AliasName":
        return st.one_of(st.sampled_from(realm.aliases), st.text(max_size=20).map(lambda t: "alias/" + t))
    if name in ("CiphertextBlob", "SourceCiphertextBlob") and realm.ciphertexts:
        return st.one_of(
            st.sampled_from(realm.ciphertexts).map(lambda b: base64.b64encode(b).decode()),
            value_strategy(shape_name, realm, depth),
        )
    if name == "GrantId" and realm.grant_ids:
        return st.one_of(st.sampled_from(realm.grant_ids), value_strategy(shape_name, realm, depth))
    if name == "GrantTokens" and realm.grant_tokens:
        tokens = st.lists(st.sampled_from(realm.grant_tokens), max_size=2)
        return st.one_of(tokens, value_strategy(shape_name, realm, depth))
    return value_strategy(shape_name, realm, depth)


def value_strategy(shape_name: str, realm: Realm, depth: int = 0) -> st.SearchStrategy[Any]:
    """A JSON value for ``shape_name``: valid for the shape most of the time, wrong in every way otherwise."""
    shape = MODEL["shapes"][shape_name]
    kind = shape["type"]
    wrong = st.one_of(_WRONG_TYPE, _SURPRISING_TEXT)
    valid: st.SearchStrategy[Any]
    if kind == "string":
        valid = st.sampled_from(shape["enum"]) if "enum" in shape else _text(shape)
    elif kind == "blob":
        low, high = int(shape.get("min", 0)), min(int(shape.get("max", 64)), 4096)
        valid = st.binary(min_size=low, max_size=high).map(lambda b: base64.b64encode(b).decode())
        wrong = st.one_of(wrong, st.sampled_from(["!!!", "QQ", "QQ=", "Q===", "====", "A" * 4097 * 2, "\x00"]))
    elif kind in ("integer", "long"):
        valid = st.integers(min_value=int(shape.get("min", -(2**31))), max_value=int(shape.get("max", 2**31 - 1)))
    elif kind == "boolean":
        valid = st.booleans()
    elif kind == "timestamp":
        valid = st.one_of(st.integers(min_value=0, max_value=2**33), st.floats(allow_nan=False, allow_infinity=False))
    elif kind == "double":
        valid = st.floats(allow_nan=False, allow_infinity=False)
    elif kind == "structure":
        if depth > 3:
            return st.just({})
        valid = structure_strategy(shape_name, realm, depth + 1)
    elif kind == "list":
        if depth > 3:
            return st.just([])
        valid = st.lists(value_strategy(shape["member"]["shape"], realm, depth + 1), max_size=3)
    elif kind == "map":
        if depth > 3:
            return st.just({})
        key_shape = MODEL["shapes"][shape["key"]["shape"]]
        valid = st.dictionaries(
            st.one_of(_text(key_shape), _SURPRISING_TEXT),  # JSON object keys are strings, whatever the shape
            value_strategy(shape["value"]["shape"], realm, depth + 1),
            max_size=4,
        )
    else:
        raise AssertionError(f"shape type {kind} is new: teach the property suite about it")
    return st.one_of(valid, valid, valid, wrong)  # valid three times in four


def structure_strategy(shape_name: str, realm: Realm, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    shape = MODEL["shapes"][shape_name]
    members = shape.get("members", {})
    required = set(shape.get("required", ()))
    strategies = {n: _member_strategy(n, m["shape"], realm, depth) for n, m in members.items()}
    return st.fixed_dictionaries(
        {n: s for n, s in strategies.items() if n in required},
        optional={n: s for n, s in strategies.items() if n not in required},
    )


def request_body(operation: str, realm: Realm) -> st.SearchStrategy[dict[str, Any]]:
    spec = MODEL["operations"][operation]
    if "input" not in spec:
        return st.just({})
    return structure_strategy(spec["input"]["shape"], realm)


def encode_json(value: Any) -> bytes:
    """JSON text for any generated value: ``ensure_ascii`` escapes lone surrogates as ``\\udXXX``,
    which is valid JSON text that names no character (a receiver must refuse it, not crash)."""
    return json.dumps(value, ensure_ascii=True).encode()


RAW_BODIES = st.sampled_from([
    b"", b"{", b"[]", b"null", b"1", b'"x"', b"{}garbage", b'{"KeyId": "\xff\xfe"}', b"\xef\xbb\xbf{}",
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b'{"Limit": 1e400}', b'{"Limit": NaN}',
    b'{"KeyId": "\\ud800"}', b'{"KeyId": "a\\u0000b"}', b"\x00" * 16, b'{"KeyId": 1, "KeyId": "x"}',
])  # fmt: skip


# --- header and byte mutations --------------------------------------------------------------

HEADER_NAMES = [
    b"X-Amz-Target", b"Content-Type", b"User-Agent", b"X-Amz-Date", b"Authorization", b"Host",
    b"X-Amz-Security-Token", b"X-Forwarded-For", b"X-Amz-Content-Sha256", b"Accept-Encoding",
    b"X-Custom", b"Expect", b"Content-Encoding",
]  # fmt: skip
HEADER_VALUES = [
    b"TrentService.DisableKey", b"RegionKmsIam.CreateAccessKey", b"TrentService.ListKeys", b"", b" ",
    b"application/json", b"application/x-amz-json-1.0", b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80", b"a,b",
    b"20000101T000000Z", b"1.2.3.4", b"not-an-ip", b"A" * 8000, b"UNSIGNED-PAYLOAD",
    hashlib.sha256(b"").hexdigest().encode(), b"100-continue", b"gzip", b"deflate", b"identity",
]  # fmt: skip


@st.composite
def header_mutation(draw: st.DrawFn, head: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """One change to a list of header lines."""
    head = list(head)
    kind = draw(st.sampled_from(["repeat", "case", "reorder", "bytes", "drop", "add", "replace"]))
    if kind == "repeat" and head:
        i = draw(st.integers(0, len(head) - 1))
        value = draw(st.one_of(st.just(head[i][1]), st.sampled_from(HEADER_VALUES)))
        head.insert(draw(st.integers(0, len(head))), (head[i][0], value))
    elif kind == "case" and head:
        i = draw(st.integers(0, len(head) - 1))
        name = head[i][0]
        name = draw(st.sampled_from([name.upper(), name.lower(), name.swapcase()]))
        head[i] = (name, head[i][1])
    elif kind == "reorder":
        head = draw(st.permutations(head))
    elif kind == "bytes" and head:
        i = draw(st.integers(0, len(head) - 1))
        odd = [b"\xff", b"\x80abc", b"\xc3(", b"\xed\xa0\x80", b"\x7f", b"\x01", b"\x00", b"\t"]
        extra = draw(st.sampled_from(odd))
        at = draw(st.integers(0, len(head[i][1])))
        head[i] = (head[i][0], head[i][1][:at] + extra + head[i][1][at:])
    elif kind == "drop" and head:
        head.pop(draw(st.integers(0, len(head) - 1)))
    elif kind == "add":
        head.insert(
            draw(st.integers(0, len(head))), (draw(st.sampled_from(HEADER_NAMES)), draw(st.sampled_from(HEADER_VALUES)))
        )
    elif kind == "replace" and head:
        i = draw(st.integers(0, len(head) - 1))
        head[i] = (head[i][0], draw(st.sampled_from(HEADER_VALUES)))
    return head


@st.composite
def authorization_text(draw: st.DrawFn, access_key_id: str, region: str) -> bytes:
    """Authorization headers that are almost right: fields missing, repeated, reordered, odd."""
    date = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    fields = [
        f"Credential={access_key_id}/{date}/{region}/kms/aws4_request",
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target",
        "Signature=" + "ab" * 32,
    ]
    extra = draw(st.lists(st.sampled_from([
        "Credential=AKIAAAAAAAAAAAAAAAAA/20000101/us-east-1/kms/aws4_request", "Signature=00", "SignedHeaders=host",
        "SignedHeaders=", "Credential=", "Signature=", "Foo=bar", "novalue", "Credential=a/b/c/d/e/f",
        f"Credential={access_key_id}/{date}/{region}/s3/aws4_request", "SignedHeaders=HOST;X-Amz-Date",
        "SignedHeaders=host;;x-amz-date", "Credential=" + "\u00e9" * 20 + "/x/y/kms/aws4_request",
    ]), max_size=3))  # fmt: skip
    parts = draw(st.permutations(fields + extra))
    parts = parts[: draw(st.integers(0, len(parts)))] if draw(st.booleans()) else parts
    separator = draw(st.sampled_from([", ", ",", " , ", ",,", ";"]))
    algorithm = draw(
        st.sampled_from(["AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", "aws4-hmac-sha256", "", "AWS4-HMAC-SHA256 "])
    )
    return (algorithm + " " + separator.join(parts)).encode("utf-8", "surrogateescape")


# Content-Length values aiohttp must refuse or regiond must refuse at once (over the 1 MiB cap);
# test_edge_fuzz adds numbers no larger than the body, decorated.
CONTENT_LENGTHS = st.sampled_from([b"abc", b"-1", b"0x10", b"", b"1,1", b"99999999999999999999999", b"1048577"])
