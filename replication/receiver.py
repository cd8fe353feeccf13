"""The receiver: verify -> apply -> ack, for every region that sends to this one.

``Receiver.receive(peer_region, envelopes)`` is transport-independent (the mTLS HTTP endpoint of
``make_receiver_app`` and ``replication.memory`` both call it). For each envelope, in order:

1. ``frames.verify_envelope``: the signer must be a known region, the Ed25519 signature must
   verify (before any msgpack is parsed), the frame's source must be its signer and its
   destination this region. Otherwise: refused (``unknown_region``, ``bad_signature``,
   ``wrong_destination``, ``malformed``), logged as a warning and counted;
2. the frame's source must be the region the TLS client certificate names (``peer_mismatch``):
   a region cannot relay or inject another region's frames, even validly signed ones;
3. in one transaction for the whole batch (one commit, however many frames): lock the
   source's ``applied_seq`` row; a seq at or below it is a replay or a resend after a lost ack
   -- logged and skipped, never applied twice; a seq beyond ``applied + 1`` is a gap -- the
   batch stops and the ack tells the sender where to resume; otherwise ``apply.apply_frame``.
   ``applied_seq`` moves in the same transaction, so the changes and the sequence numbers
   commit together (exactly once). A frame that cannot be applied makes the batch go again
   with a savepoint per frame: the frames before it commit, and the ack says where it stopped.

The ack is the applied sequence of the peer after the batch, with the refusal code if the
receiver stopped early. Heartbeat frames are verified and answered but apply nothing. Audit
anchor frames are outside the sequence too: their digests are checked against the source's
identity key and kept (``replication.anchors``), or the frame is refused as malformed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web

from regiond.clock import Clock
from regiond.crypto.hpke import RegionEncryptionPrivateKey
from regiond.crypto.keyring import RootKeyring
from regiond.crypto.pki import PeerIdentityError, peer_region_from_cert
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import AnchorError
from regiond.runtime.listener import BodyTimeout, read_body_within
from regiond.store import replication as repl_store
from regiond.store.outbox import Outbox
from regiond.store.pool import Conn, Pool, connection, transaction
from replication import frames
from replication.anchors import check_anchors, keep_anchors
from replication.apply import ApplyContext, ApplyError, Outcome, Result, apply_frame
from replication.authorize import (
    AUTHORIZE_PATH,
    MAX_QUERY_BYTES,
    AuthorizeError,
    AuthorizeQuery,
    answer_envelope,
    open_query,
)
from replication.channel import (
    DEFAULT_TIMEOUT_S,
    FORWARD_PATH,
    FRAMES_PATH,
    MAX_BATCH_BYTES,
    MAX_FORWARD_BYTES,
    Ack,
    ChannelError,
    Refusal,
    decode_batch,
    encode_ack,
)
from replication.errors import ReplicationError
from replication.frames import FrameKind
from replication.messages import AuditAnchors, MessageError
from replication.peers import Topology
from replication.status import APPLIED_SEQ, FRAMES_APPLIED, FRAMES_REFUSED

log = structlog.get_logger("replication.receiver")

__all__ = ["ForwardHandler", "Receiver", "make_receiver_app"]

REFUSAL_STATUS = {
    Refusal.MALFORMED: 400,
    Refusal.BAD_SIGNATURE: 403,
    Refusal.UNKNOWN_REGION: 403,
    Refusal.WRONG_DESTINATION: 403,
    Refusal.PEER_MISMATCH: 403,
    Refusal.GAP: 409,
    Refusal.APPLY_FAILED: 503,
    Refusal.NOT_CONFIGURED: 503,
}


_OUTSIDE_THE_STREAM = frozenset({FrameKind.HEARTBEAT, FrameKind.AUDIT_ANCHORS})  # seq 0: nothing to apply
_NEVER_IN_A_BATCH = frozenset({FrameKind.AUTHORIZE_QUERY, FrameKind.AUTHORIZE_ANSWER})  # replication.authorize


class _FrameFailed(ReplicationError):
    """A frame failed on the fast path: the batch is retried frame by frame."""


AuthorizeHandler = Callable[[AuthorizeQuery], Awaitable[bool]]
"""Decides a peer's authorization query in this region (``regiond.service.peer_authz``); wired by the app."""

ForwardHandler = Callable[[str, str, bytes], Awaitable[bytes]]
"""Serves a client request another region forwarded: (peer region, peer address, envelope) -> reply
envelope (``regiond.protocol.routes.serve_forwarded``); raises ``ValueError`` for a malformed one."""


class Receiver:
    def __init__(
        self, *, pool: Pool, topology: Topology, keyring: RootKeyring, encryption_key: RegionEncryptionPrivateKey,
        outbox: Outbox, clock: Clock, identity: RegionIdentityKey | None = None,
        authorize: AuthorizeHandler | None = None, forward: ForwardHandler | None = None,
    ) -> None:  # fmt: skip
        self.forward = forward
        self._pool = pool
        self.topology = topology
        self._keyring = keyring
        self._encryption_key = encryption_key
        self._outbox = outbox
        self._clock = clock
        self._identity = identity
        self.authorize = authorize

    @property
    def region(self) -> str:
        return self.topology.local_region

    async def _applied(self, source: str | None) -> int:
        if source is None:
            return 0
        async with connection(self._pool) as con:
            return await repl_store.inbound(con, source)

    async def refuse(self, source: str | None, reason: str, detail: str) -> Ack:
        """Log and count a refused envelope; the ack still says where ``source`` stands."""
        claimed = source or "unknown"
        log.warning("replication.frame_refused", reason=reason, peer=claimed, detail=detail[:300])
        FRAMES_REFUSED.labels(claimed, reason).inc()
        if source is not None:
            async with transaction(self._pool) as con:
                await repl_store.record_refusal(con, source, f"{reason}: {detail}", self._clock.now())
        return Ack(self.region, await self._applied(source), reason, detail[:300])

    async def receive(self, peer_region: str | None, envelopes: Sequence[bytes]) -> Ack:
        """Verify and apply ``envelopes`` in order; ``peer_region`` is the mTLS-authenticated caller
        (``None`` only for in-process callers that have no TLS layer to ask)."""
        keys = self.topology.identity_keys()
        if peer_region is not None and peer_region not in keys:
            return await self.refuse(None, Refusal.UNKNOWN_REGION, f"connection from unknown region {peer_region!r}")
        source = peer_region
        verified: list[frames.Frame] = []
        refusal: tuple[str, str] | None = None
        for envelope in envelopes:
            try:
                frame = frames.verify_envelope(envelope, keys, local_region=self.region)
            except frames.UnknownRegionError as exc:
                refusal = (Refusal.UNKNOWN_REGION, str(exc))
            except frames.BadSignatureError as exc:
                refusal = (Refusal.BAD_SIGNATURE, str(exc))
            except frames.WrongDestinationError as exc:
                refusal = (Refusal.WRONG_DESTINATION, str(exc))
            except frames.FrameError as exc:
                refusal = (Refusal.MALFORMED, str(exc))
            else:
                if source is not None and frame.source != source:
                    refusal = (Refusal.PEER_MISMATCH, f"frame from {frame.source} on {source}'s connection")
                elif frame.kind in _NEVER_IN_A_BATCH:
                    refusal = (Refusal.MALFORMED, f"a {frame.kind.name} frame is never part of a batch")
                else:
                    source = frame.source
                    verified.append(frame)
                    continue
            break  # the frames verified so far are applied; the rest of the batch is not looked at
        work = [f for f in verified if f.kind not in _OUTSIDE_THE_STREAM]
        for frame in verified:
            if frame.kind is FrameKind.AUDIT_ANCHORS and refusal is None:
                refusal = await self._keep_anchors(frame, keys[frame.source])
        if work and source is not None:
            stopped = await self._apply_batch(source, work)
            if stopped is not None:
                return stopped
        if refusal is not None:
            return await self.refuse(source, *refusal)
        applied = await self._applied(source)
        if source is not None:
            APPLIED_SEQ.labels(source).set(applied)
        return Ack(self.region, applied)

    async def _keep_anchors(self, frame: frames.Frame, source_key: bytes) -> tuple[str, str] | None:
        """Keep the audit anchors of an authenticated frame; a refusal if they are not the source's."""
        try:
            message = AuditAnchors.from_body(frame.body, path=FrameKind.AUDIT_ANCHORS.name)
            anchors = check_anchors(message, frame.source, source_key)
        except (MessageError, AnchorError) as exc:
            return Refusal.MALFORMED, f"audit anchors: {exc}"
        await keep_anchors(self._pool, frame.source, anchors)
        return None

    async def answer(self, peer_region: str | None, envelope: bytes) -> bytes | None:
        """Decide a peer's signed authorization query here (``replication.authorize``); ``None`` if
        the query is refused (not authentic, not fresh, not for this region, nothing to decide it)."""
        if self._identity is None or self.authorize is None:
            return None
        now_ms = int(self._clock.now().timestamp() * 1000)
        try:
            query = open_query(
                envelope, self.topology.identity_keys(), local_region=self.region, peer_region=peer_region,
                now_ms=now_ms,
            )  # fmt: skip
        except AuthorizeError as exc:
            log.warning("replication.authorize_refused", peer=peer_region or "unknown", detail=str(exc)[:300])
            return None
        allowed = await self.authorize(query)
        log.info("replication.authorize_answered", peer=query.source, action=query.action, key_id=query.key_id,
                 principal=query.principal_arn, allowed=allowed)  # fmt: skip
        return answer_envelope(self._identity, query, local_region=self.region, allowed=allowed, now_ms=now_ms)

    async def _apply_batch(self, source: str, batch: list[frames.Frame]) -> Ack | None:
        """Apply ``batch`` exactly once, in one transaction.

        The fast path applies every frame without savepoints and moves ``applied_seq`` once at
        the end. If any frame fails, that transaction rolls back whole and the batch is applied
        again carefully, with a savepoint per frame, so the frames before the failing one still
        commit. Returns an ``Ack`` if the batch stopped early (a gap, or a frame that cannot be
        applied now).
        """
        try:
            return await self._apply(source, batch, careful=False)
        except _FrameFailed:
            return await self._apply(source, batch, careful=True)

    async def _apply(self, source: str, batch: list[frames.Frame], *, careful: bool) -> Ack | None:
        now = self._clock.now()
        ctx = ApplyContext(
            region=self.region, iam_home_region=self.topology.iam_home_region, keyring=self._keyring,
            encryption_key=self._encryption_key, outbox=self._outbox, now=now,
        )  # fmt: skip
        done: list[tuple[Outcome, str]] = []
        replayed: list[frames.Frame] = []
        stopped: Ack | None = None
        async with transaction(self._pool) as con:
            first = applied = await repl_store.lock_inbound(con, source)
            for frame in batch:
                if frame.seq <= applied:
                    replayed.append(frame)
                    continue
                if frame.seq != applied + 1:
                    log.warning("replication.gap", source=source, seq=frame.seq, expected=applied + 1)
                    FRAMES_REFUSED.labels(source, Refusal.GAP).inc()
                    stopped = Ack(self.region, applied, Refusal.GAP, f"expected seq {applied + 1}, got {frame.seq}")
                    break
                try:
                    if careful:
                        async with con.transaction():  # a savepoint: a failure undoes this frame only
                            result = await self._apply_one(con, source, frame, ctx, now)
                    else:
                        result = await self._apply_one(con, source, frame, ctx, now)
                except Exception as exc:
                    if not careful:
                        raise _FrameFailed from exc  # roll the whole batch back, then go carefully
                    if isinstance(exc, ApplyError):
                        detail = str(exc)[:300]
                    else:  # a database error: log it whole
                        log.exception("replication.apply_crashed", source=source, seq=frame.seq)
                        detail = f"{type(exc).__name__} at seq {frame.seq}"
                    log.error("replication.apply_failed", source=source, seq=frame.seq, kind=frame.kind.name,
                              error=detail)  # fmt: skip
                    FRAMES_APPLIED.labels(source, "failed").inc()
                    stopped = Ack(self.region, applied, Refusal.APPLY_FAILED, detail)
                    break
                applied = frame.seq
                done.append((result.outcome, result.reason))
            if applied > first:
                await repl_store.advance_inbound(con, source, first, applied, now)
        for frame in replayed:
            log.warning("replication.frame_replayed", source=source, seq=frame.seq, applied=applied)
            FRAMES_REFUSED.labels(source, "replayed").inc()
        for outcome, reason in done:
            FRAMES_APPLIED.labels(source, outcome.value).inc()
            if outcome is Outcome.REFUSED:
                FRAMES_REFUSED.labels(source, reason).inc()
        APPLIED_SEQ.labels(source).set(applied)
        return stopped

    @staticmethod
    async def _apply_one(con: Conn, source: str, frame: frames.Frame, ctx: ApplyContext, now: dt.datetime) -> Result:
        result = await apply_frame(con, frame, ctx)
        if result.outcome is Outcome.REFUSED:
            await repl_store.record_refusal(con, source, result.reason, now)
        return result


def _peer_region(request: web.Request) -> str | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    try:
        return peer_region_from_cert(cert)
    except PeerIdentityError:
        return None


def make_receiver_app(receiver: Receiver, body_timeout_s: float = DEFAULT_TIMEOUT_S) -> web.Application:
    """The receiver's HTTP endpoint; serve it only behind ``pki.ssl_server_context`` (mutual TLS).

    Bodies are read within ``body_timeout_s`` (408 past it), as on the client endpoint: an
    authenticated peer, or one whose certificate leaked, must not hold handlers with a stalled body.
    No honest sender is still sending past its own request timeout (``DEFAULT_TIMEOUT_S``).
    """

    async def read(request: web.Request) -> bytes | None:
        try:
            return await read_body_within(request, body_timeout_s)
        except BodyTimeout:
            log.warning("replication.body_timeout", peer=_peer_region(request) or "unknown", path=request.path)
            return None

    async def handle(request: web.Request) -> web.Response:
        peer = _peer_region(request)
        if peer is None:
            ack = Ack(receiver.region, 0, Refusal.PEER_MISMATCH, "no verified client certificate")
            log.warning("replication.frame_refused", reason=Refusal.PEER_MISMATCH, peer="unknown")
            return web.Response(status=403, body=encode_ack(ack), content_type="application/x-msgpack")
        try:
            body = await read(request)
            if body is None:
                return web.Response(status=408, text="request body timeout")
            envelopes = decode_batch(body)
        except (ChannelError, web.HTTPRequestEntityTooLarge) as exc:
            ack = await receiver.refuse(peer, Refusal.MALFORMED, str(exc))
        else:
            ack = await receiver.receive(peer, envelopes)
        status = 200 if ack.error is None else REFUSAL_STATUS.get(ack.error, 400)
        return web.Response(status=status, body=encode_ack(ack), content_type="application/x-msgpack")

    async def authorize(request: web.Request) -> web.Response:
        peer = _peer_region(request)
        if peer is None:
            return web.Response(status=403, text="no verified client certificate")
        try:
            read_body = await read(request)
        except web.HTTPRequestEntityTooLarge:
            read_body = b""
        if read_body is None:
            return web.Response(status=408, text="request body timeout")
        body = read_body
        answer = await receiver.answer(peer, body) if 0 < len(body) <= MAX_QUERY_BYTES else None
        if answer is None:
            return web.Response(status=403, text="query refused")
        return web.Response(status=200, body=answer, content_type="application/x-msgpack")

    async def forward(request: web.Request) -> web.Response:
        """A client request for this region relayed by a node of ``peer`` (never forwarded on)."""
        peer = _peer_region(request)
        if peer is None or peer not in receiver.topology.identity_keys():
            log.warning("replication.forward_refused", peer=peer or "unknown", reason="no peer certificate")
            return web.Response(status=403, text="no verified peer certificate")
        if receiver.forward is None:
            return web.Response(status=503, text="this node serves no forwarded requests")
        if request.content_length is not None and request.content_length > MAX_FORWARD_BYTES:
            return web.Response(status=413, text="forwarded request too large")
        try:
            body = await read(request)
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="forwarded request too large")
        if body is None:
            return web.Response(status=408, text="request body timeout")
        if len(body) > MAX_FORWARD_BYTES:
            return web.Response(status=413, text="forwarded request too large")
        try:
            reply = await receiver.forward(peer, request.remote or "", body)
        except ValueError as exc:
            log.warning("replication.forward_refused", peer=peer, reason=str(exc)[:200])
            return web.Response(status=400, text="malformed forwarded request")
        return web.Response(status=200, body=reply, content_type="application/x-msgpack")

    app = web.Application(client_max_size=MAX_BATCH_BYTES)
    app.router.add_post(FRAMES_PATH, handle)
    app.router.add_post(AUTHORIZE_PATH, authorize)
    app.router.add_post(FORWARD_PATH, forward)
    return app
