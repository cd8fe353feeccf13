"""Any node serves any region of its cluster: a request signed for another region is relayed there.

A client's request whose SigV4 credential scope names another region of the peers file is not
answered here: ``routes.handle`` hands its exact bytes (method, request target, every header as
received, body) to that region over the replication channel (mutual TLS with the cluster CA,
``replication.channel``), and relays the answer. The target region verifies the signature,
authorizes and audits the call as its own; this node adds nothing it would trust beyond the
channel's identity: no principal, no account, no source address claim. What is carried beside
the bytes grants nothing: whether the client's own connection was TLS can only lower what the
target grants (``aws:SecureTransport`` is true only if both hops were TLS), and the client's
address as the relaying node saw it only picks the target's failed-authentication throttle
bucket (so a client guessing keys through a node throttles itself, not every caller relayed by
that node); the call's source address, for policies and the audit trail, is the relaying node's.

Loop guard: a forwarded request is served by ``routes.serve_forwarded``, which never forwards;
signed for any region but the target's own, it fails the target's scope check.

Hop-by-hop headers (RFC 9110 section 7.6.1: Connection and the headers it names, Keep-Alive,
TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*) describe the client's connection to this node,
not the request: they are dropped unless the signature covers them (dropping a signed header
would only make the target refuse the call).

Wire format, version 1 (msgpack, the channel's body; ``replication.channel.FORWARD_PATH``):

    request  [1, method (str), target (bin: path and query as sent), [[name (bin), value (bin)], ...],
              body (bin), client_tls (bool), client_address (str, at most 64 ASCII characters)]
    reply    [1, status (uint), [[name (str), value (str)], ...], body (bin)]

Header bytes are carried as received, so a value that is not UTF-8 reaches the target's
verifier as it reached this node's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
from multidict import CIMultiDict

__all__ = [
    "FORWARD_VERSION",
    "MAX_ENVELOPE_BYTES",
    "ForwardError",
    "ForwardedReply",
    "ForwardedRequest",
    "PeerForwarder",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "end_to_end_headers",
]

FORWARD_VERSION = 1
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
"""An envelope holds at most a client body (1 MiB) and its headers (bounded by the HTTP parser)."""
MAX_HEADERS = 256

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})  # fmt: skip
RELAYED_REPLY_HEADERS = frozenset(
    {"x-amzn-requestid", "content-type", "x-amzn-errortype", "x-amzn-query-error", "retry-after"}
)
"""The headers of the target's answer that reach the client: what AWS clients read."""


class ForwardError(ValueError):
    """A malformed envelope (a bug or an attack: never retried into success)."""


class PeerForwarder(Protocol):
    """The channel to the cluster's other regions (``replication.runtime.ReplicationNode``)."""

    @property
    def forward_regions(self) -> frozenset[str]:
        """The regions a request may be forwarded to: every region of the peers file but this one."""

    async def forward(self, region: str, envelope: bytes, *, timeout_s: float) -> bytes:
        """The target's reply envelope. Raises ``TimeoutError`` past ``timeout_s`` and
        ``ConnectionError`` when the region cannot be reached or refuses the channel."""


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    method: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    client_tls: bool
    client_address: str = ""

    def header_multidict(self) -> CIMultiDict[str]:
        """The headers as aiohttp would have parsed them (UTF-8, ``surrogateescape``)."""
        return CIMultiDict(
            (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in self.headers
        )

    @property
    def raw_path(self) -> str:
        return self.target.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ForwardedReply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def end_to_end_headers(raw: Sequence[tuple[bytes, bytes]], signed: Sequence[str]) -> tuple[tuple[bytes, bytes], ...]:
    """``raw`` without its hop-by-hop headers, except those the signature covers (module docstring)."""
    covered = set(signed)
    named: set[str] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip())
    dropped = (HOP_BY_HOP | named) - covered
    return tuple((n, v) for n, v in raw if n.decode("latin-1").lower() not in dropped)


def _unpack(data: bytes) -> Any:
    if len(data) > MAX_ENVELOPE_BYTES:
        raise ForwardError("envelope too large")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_ext,
                               max_bin_len=MAX_ENVELOPE_BYTES)  # fmt: skip
    except ForwardError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ForwardError("not valid msgpack") from exc


def _no_ext(_code: int, _data: bytes) -> Any:
    raise ForwardError("msgpack extension types are not allowed")


def encode_request(request: ForwardedRequest) -> bytes:
    data: bytes = msgpack.packb(
        [FORWARD_VERSION, request.method, request.target, [list(h) for h in request.headers], request.body,
         request.client_tls, request.client_address],
        use_bin_type=True,
    )  # fmt: skip
    return data


def decode_request(data: bytes) -> ForwardedRequest:
    raw = _unpack(data)
    if not isinstance(raw, list) or len(raw) != 7 or raw[0] != FORWARD_VERSION or isinstance(raw[0], bool):
        raise ForwardError("unsupported forward envelope")
    _, method, target, headers, body, client_tls, client_address = raw
    if not (isinstance(method, str) and 0 < len(method) <= 16 and method.isascii()):
        raise ForwardError("bad method")
    if not isinstance(target, bytes) or not target.startswith(b"/") or len(target) > 8192:
        raise ForwardError("bad request target")
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise ForwardError("bad headers")
    pairs: list[tuple[bytes, bytes]] = []
    for item in headers:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, bytes) for x in item)):
            raise ForwardError("bad header")
        name, value = item
        if not name or b"\r" in name + value or b"\n" in name + value or b":" in name:
            raise ForwardError("bad header")
        pairs.append((name, value))
    if not isinstance(body, bytes) or not isinstance(client_tls, bool):
        raise ForwardError("bad body")
    if not (isinstance(client_address, str) and len(client_address) <= 64 and client_address.isascii()
            and client_address.isprintable()):  # fmt: skip
        raise ForwardError("bad client address")
    return ForwardedRequest(method, target, tuple(pairs), body, client_tls, client_address)


def encode_reply(reply: ForwardedReply) -> bytes:
    data: bytes = msgpack.packb(
        [FORWARD_VERSION, reply.status, [list(h) for h in reply.headers], reply.body], use_bin_type=True
    )
    return data


def decode_reply(data: bytes) -> ForwardedReply:
    raw = _unpack(data)
    if not isinstance(raw, list) or len(raw) != 4 or raw[0] != FORWARD_VERSION or isinstance(raw[0], bool):
        raise ForwardError("unsupported forward reply")
    _, status, headers, body = raw
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ForwardError("bad status")
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS or not isinstance(body, bytes):
        raise ForwardError("bad reply")
    pairs: list[tuple[str, str]] = []
    for item in headers:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ForwardError("bad reply header")
        if item[0].lower() in RELAYED_REPLY_HEADERS and "\r" not in item[1] and "\n" not in item[1]:
            pairs.append((item[0], item[1]))
    return ForwardedReply(status, tuple(pairs), body)
