"""The replication channel: how signed frames travel from a sender to a peer's receiver.

``Transport`` is the seam (raft's ``Transport``, httpx's transports): the sender hands it an
ordered batch of signed envelopes for one peer and gets back that peer's ``Ack`` -- the highest
sequence number from this source the peer has durably applied, and a refusal code if it
stopped early. ``HttpsTransport`` is the real one; ``replication.memory.InMemoryTransport`` is
its in-memory twin for tests.

Security, in layers:

- mutual TLS (TLS 1.2+, cluster CA only, ``regiond.crypto.pki``): the sender checks that the
  server's certificate names the region it meant to reach; the receiver reads the caller's
  region from the client certificate and accepts frames only from that region;
- every frame is signed with the source region's Ed25519 identity key (``frames.sign_frame``),
  which still holds after the frame has sat in an outbox or passed a proxy;
- key material inside a frame is sealed to the destination with HPKE (``regiond.crypto.hpke``),
  so a frame is unreadable even to something that terminates TLS.

Wire format of one exchange, version 1 (msgpack, canonical):

    request  POST /replication/v1/frames   body: [1, [envelope (bin), ...]]
    response 200 (or 4xx on a refusal)      body: {"v": 1, "region": str, "applied": uint,
                                                    "error": str | nil, "detail": str}

``applied`` is always present, so even a refusal tells the sender where the peer stands.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgpack

from replication.authorize import AUTHORIZE_PATH, MAX_QUERY_BYTES
from replication.errors import ReplicationError
from replication.peers import Peer, server_name

__all__ = [
    "BATCH_VERSION",
    "FORWARD_PATH",
    "FRAMES_PATH",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_FRAMES",
    "Ack",
    "ChannelError",
    "ForwardClient",
    "HttpsTransport",
    "Refusal",
    "Transport",
    "TransportError",
    "decode_ack",
    "decode_batch",
    "encode_ack",
    "encode_batch",
]

BATCH_VERSION = 1
FRAMES_PATH = "/replication/v1/frames"
FORWARD_PATH = "/replication/v1/forward"
"""A client request signed for the receiving region, relayed by a node of another region
(``regiond.protocol.forwarding`` defines the envelope; this channel carries it as bytes)."""
MAX_FORWARD_BYTES = 2 * 1024 * 1024
FORWARD_CONNECTIONS_PER_PEER = 64
MAX_BATCH_FRAMES = 512
MAX_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT_S = 15.0


class Refusal:
    """Refusal codes in an ``Ack``: why a receiver stopped before the end of a batch."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_REGION = "unknown_region"
    WRONG_DESTINATION = "wrong_destination"
    PEER_MISMATCH = "peer_mismatch"
    GAP = "gap"
    APPLY_FAILED = "apply_failed"
    NOT_CONFIGURED = "not_configured"


class ChannelError(ReplicationError):
    """A malformed batch or ack (a bug or an attack, never retried into success)."""


class TransportError(ReplicationError):
    """The peer could not be reached or did not answer: retry later with backoff."""


@dataclass(frozen=True, slots=True)
class Ack:
    region: str
    applied: int
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class Transport(Protocol):
    async def send(self, peer: Peer, envelopes: Sequence[bytes]) -> Ack:
        """Deliver ``envelopes`` (in order) to ``peer``; ``TransportError`` if it cannot."""

    async def ask(self, peer: Peer, envelope: bytes) -> bytes:
        """Send one signed query to ``peer`` and return its signed answer (``replication.authorize``);
        ``TransportError`` if it cannot be reached or refuses the query."""

    async def close(self) -> None: ...


def encode_batch(envelopes: Sequence[bytes]) -> bytes:
    if len(envelopes) > MAX_BATCH_FRAMES:
        raise ChannelError(f"a batch holds at most {MAX_BATCH_FRAMES} frames")
    data: bytes = msgpack.packb([BATCH_VERSION, [bytes(e) for e in envelopes]], use_bin_type=True)
    if len(data) > MAX_BATCH_BYTES:
        raise ChannelError(f"a batch is at most {MAX_BATCH_BYTES} bytes")
    return data


def _strict_unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                               ext_hook=_no_ext, max_bin_len=MAX_BATCH_BYTES)  # fmt: skip
    except ChannelError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ChannelError("not valid msgpack") from exc


def _no_ext(_code: int, _data: bytes) -> Any:
    raise ChannelError("msgpack extension types are not allowed")


def decode_batch(data: bytes) -> list[bytes]:
    if len(data) > MAX_BATCH_BYTES:
        raise ChannelError("batch too large")
    raw = _strict_unpack(data)
    if not isinstance(raw, list) or len(raw) != 2 or raw[0] != BATCH_VERSION or isinstance(raw[0], bool):
        raise ChannelError("unsupported batch version")
    items = raw[1]
    if not isinstance(items, list) or len(items) > MAX_BATCH_FRAMES:
        raise ChannelError("batch must be a list of at most 512 envelopes")
    if not all(isinstance(e, bytes) for e in items):
        raise ChannelError("envelopes must be binary")
    return list(items)


def encode_ack(ack: Ack) -> bytes:
    data: bytes = msgpack.packb(
        {"v": BATCH_VERSION, "region": ack.region, "applied": ack.applied, "error": ack.error, "detail": ack.detail},
        use_bin_type=True,
    )
    return data


def decode_ack(data: bytes) -> Ack:
    raw = _strict_unpack(data)
    if not isinstance(raw, dict) or raw.get("v") != BATCH_VERSION:
        raise ChannelError("unsupported ack version")
    region, applied, error, detail = raw.get("region"), raw.get("applied"), raw.get("error"), raw.get("detail", "")
    if not isinstance(region, str) or isinstance(applied, bool) or not isinstance(applied, int) or applied < 0:
        raise ChannelError("malformed ack")
    if error is not None and not isinstance(error, str):
        raise ChannelError("malformed ack")
    return Ack(region, applied, error, detail if isinstance(detail, str) else "")


class HttpsTransport:
    """Batches over HTTPS with mutual TLS; one connection pool shared by all of a node's senders.

    ``client_context`` must verify hostnames (``pki.ssl_client_context(..., check_hostname=True)``):
    each request names ``server_name(peer.region)``, so only that region's certificate passes.
    """

    def __init__(self, client_context: ssl.SSLContext, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._ssl = client_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(5.0, timeout_s))
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit_per_host=2, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def send(self, peer: Peer, envelopes: Sequence[bytes]) -> Ack:
        body = encode_batch(envelopes)
        try:
            async with self._client().post(
                peer.endpoint + FRAMES_PATH,
                data=body,
                headers={"Content-Type": "application/x-msgpack"},
                server_hostname=server_name(peer.region),
            ) as resp:
                data = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise TransportError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        try:
            ack = decode_ack(data)
        except ChannelError as exc:
            raise TransportError(f"HTTP {resp.status}: unreadable answer ({exc})") from exc
        if ack.region != peer.region:
            raise TransportError(f"answer from {ack.region!r}, expected {peer.region!r}")
        return ack

    async def ask(self, peer: Peer, envelope: bytes) -> bytes:
        try:
            async with self._client().post(
                peer.endpoint + AUTHORIZE_PATH,
                data=bytes(envelope),
                headers={"Content-Type": "application/x-msgpack"},
                server_hostname=server_name(peer.region),
            ) as resp:
                if resp.status != 200:
                    raise TransportError(f"HTTP {resp.status}: query refused by {peer.region}")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(16 * 1024):
                    data += chunk
                    if len(data) > MAX_QUERY_BYTES:
                        raise TransportError(f"answer from {peer.region} is too large")
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise TransportError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        return bytes(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ForwardClient:
    """Forwarded client requests over the same mutual TLS as the frames (``regiond.protocol.forwarding``).

    A pool of its own, wider than the senders' (client traffic is concurrent), with the same
    server-name check: only the named region's cluster certificate answers. The caller bounds
    each call's time; ``TransportError`` when the peer cannot be reached, refuses the channel or
    answers something that is not a reply envelope.
    """

    def __init__(self, client_context: ssl.SSLContext) -> None:
        self._ssl = client_context
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl, limit_per_host=FORWARD_CONNECTIONS_PER_PEER, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def forward(self, peer: Peer, envelope: bytes) -> bytes:
        try:
            async with self._client().post(
                peer.endpoint + FORWARD_PATH,
                data=envelope,
                headers={"Content-Type": "application/x-msgpack"},
                server_hostname=server_name(peer.region),
            ) as resp:
                if resp.status != 200:
                    raise TransportError(f"HTTP {resp.status}: forwarded request refused by {peer.region}")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > MAX_FORWARD_BYTES:
                        raise TransportError(f"answer from {peer.region} is too large")
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise TransportError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        return bytes(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
