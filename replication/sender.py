"""One sender per destination region: outbox -> signed frames -> peer -> ack -> cursor.

The loop (``Sender.run``) holds a PostgreSQL session advisory lock for its destination, so
however many nodes and workers a region runs, exactly one streams to each peer. Each round:

1. read the cursor (``acked_seq``, persisted) and the next batch of outbox entries after it;
2. turn each entry into a frame (``FrameBuilder``): key material and access-key secrets are
   read from their tables, unwrapped with the root key and sealed to the destination with
   HPKE only now, so nothing readable ever sits in the outbox; sign it with the region's
   Ed25519 identity;
3. send the batch in order; the peer answers with the highest sequence it has *durably*
   applied (``Ack.applied``), even when it stopped early;
4. persist the cursor and delete the acknowledged entries in one transaction.

A crash anywhere is harmless: entries are deleted only after the peer has applied them, and
the peer skips sequence numbers it already applied, so a resend after a lost ack applies
nothing twice. When idle, the sender sleeps until an outbox NOTIFY wakes it (or a short
poll, the safety net), and sends a heartbeat frame every ``heartbeat_s`` to learn where the
peer stands and to surface a broken link in the status even when nothing is queued.

Every ``heartbeat_s``, busy or idle, it also pushes the region's signed audit digests that the peer
has not confirmed yet (``replication.anchors``): one ``AUDIT_ANCHORS`` frame in an exchange of its
own, so a peer that refuses it (a receiver of an older release) never holds up the outbox stream.

Failures (unreachable peer, refusal, gap) back off exponentially with full jitter, capped:
``delay = uniform(0, min(cap_s, base_s * 2**attempt))`` (AWS Architecture Blog, "Exponential
Backoff And Jitter"), never below ``MIN_DELAY_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from regiond.clock import Clock
from regiond.crypto import hpke, wrap
from regiond.crypto.keyring import KeyringError, RootKeyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.crypto.wrap import access_key_aad
from regiond.domain.audit_anchor import AnchorError, parse_anchor
from regiond.store import audit as audit_store
from regiond.store import iam as iam_store
from regiond.store import keys as key_store
from regiond.store import locks, outbox
from regiond.store import replication as repl_store
from regiond.store.outbox import OutboxEntry
from regiond.store.pool import Conn, Pool, connection, transaction
from replication import frames
from replication.anchors import MAX_ANCHORS_PER_FRAME, anchors_message
from replication.apply import ACCESS_KEY_SECRET_VERSION
from replication.channel import MAX_BATCH_BYTES, Ack, ChannelError, Transport, TransportError
from replication.errors import ReplicationError
from replication.frames import Frame
from replication.messages import Heartbeat, IamAccessKey, KeyCreated, KeyMaterial, KeyUpdated, Message, SealedVersion
from replication.peers import Peer
from replication.status import ACKED_SEQ, ANCHORS_PUSHED, FRAMES_SENT, SEND_ERRORS, SENT_SEQ, observe_backlog

log = structlog.get_logger("replication.sender")

__all__ = ["Backoff", "FrameBuilder", "Sender", "SenderSettings"]

MIN_DELAY_S = 0.01
BATCH_BYTES_TARGET = MAX_BATCH_BYTES // 2  # a batch stops growing here (one frame may be up to 4 MiB)


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.05
    cap_s: float = 5.0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)], at least ``MIN_DELAY_S``."""
        ceiling: float = min(self.cap_s, self.base_s * float(1 << min(attempt, 30)))
        jitter: float = self.rand()
        return max(MIN_DELAY_S, jitter * ceiling)


@dataclass(frozen=True)
class SenderSettings:
    batch_size: int = 256
    idle_poll_s: float = 1.0
    heartbeat_s: float = 5.0
    lock_retry_s: float = 2.0
    backoff: Backoff = field(default_factory=Backoff)


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


class FrameBuilder:
    """Outbox entries -> signed envelopes for one source region."""

    def __init__(self, *, region: str, keyring: RootKeyring, identity: RegionIdentityKey, clock: Clock) -> None:
        self._region = region
        self._keyring = keyring
        self._identity = identity
        self._clock = clock

    def _frame(self, message: Message, peer: Peer, *, seq: int, epoch: int) -> bytes:
        frame = Frame(
            version=frames.FRAME_VERSION,
            kind=message.KIND,
            source=self._region,
            dest=peer.region,
            seq=seq,
            epoch=epoch,
            body=message.to_body(),
            sent_at_ms=_ms(self._clock.now()),
        )
        return frames.sign_frame(frames.encode(frame), self._identity)

    @property
    def region(self) -> str:
        return self._region

    def heartbeat(self, peer: Peer) -> bytes:
        return self._frame(Heartbeat(), peer, seq=0, epoch=0)

    def audit_anchors(self, peer: Peer, signed: list[tuple[bytes, bytes]]) -> bytes:
        return self._frame(anchors_message(signed), peer, seq=0, epoch=0)

    async def build(self, con: Conn, entry: OutboxEntry, peer: Peer) -> bytes:
        """The entry's message with its secrets sealed to ``peer``, signed."""
        message = entry.message
        if isinstance(message, IamAccessKey):
            message = dataclasses.replace(
                message, sealed_secret=await self._sealed_secret(con, message.access_key_id, peer)
            )
        elif isinstance(message, KeyCreated | KeyMaterial | KeyUpdated) and message.shared is not None:
            material = await self._sealed_versions(con, message.key_id, set(message.shared.versions), peer)
            message = dataclasses.replace(message, material=material)
        return self._frame(message, peer, seq=entry.seq, epoch=entry.epoch)

    async def _sealed_versions(self, con: Conn, key_id: str, wanted: set[int], peer: Peer) -> tuple[SealedVersion, ...]:
        """Each wanted backing version, unwrapped here and sealed to ``peer`` (gone versions are skipped:
        the key was destroyed since, and a deletion entry follows)."""
        out: list[SealedVersion] = []
        for stored in await key_store.versions(con, key_id):
            if stored.version not in wanted:
                continue
            # Any key spec: AES backing keys, HMAC keys and PKCS#8 private keys are sealed alike.
            material = wrap.unwrap_material(self._keyring, key_id, stored.version, stored.material_wrapped)
            sealed = hpke.seal_to_region(
                peer.encryption_public_key, material.material(), key_id=key_id, version=stored.version,
                source_region=self._region, dest_region=peer.region,
            )  # fmt: skip
            out.append(SealedVersion(stored.version, sealed, stored.created_at))
        return tuple(out)

    async def _sealed_secret(self, con: Conn, access_key_id: str, peer: Peer) -> bytes | None:
        wrapped = await iam_store.wrapped_secret(con, access_key_id)
        if wrapped is None:
            return None
        secret = self._keyring.unwrap(wrapped, access_key_aad(access_key_id))
        return hpke.seal_to_region(
            peer.encryption_public_key, secret, key_id=access_key_id, version=ACCESS_KEY_SECRET_VERSION,
            source_region=self._region, dest_region=peer.region,
        )  # fmt: skip


class Refused(ReplicationError):
    """The peer answered with a refusal code: back off and retry (it may be transient, e.g. a gap)."""

    def __init__(self, ack: Ack) -> None:
        super().__init__(f"{ack.error}: {ack.detail}"[:300])
        self.ack = ack


class Sender:
    def __init__(
        self, *, pool: Pool, peer: Peer, builder: FrameBuilder, transport: Transport, clock: Clock,
        settings: SenderSettings | None = None, wake: asyncio.Event | None = None,
    ) -> None:  # fmt: skip
        self._pool = pool
        self.peer = peer
        self._builder = builder
        self._transport = transport
        self._clock = clock
        self._settings = settings or SenderSettings()
        self.wake = wake or asyncio.Event()
        self._last_contact = 0.0
        self._anchor_position = 0  # the newest audit digest the peer confirmed holding (0: none yet)

    @property
    def dest(self) -> str:
        return self.peer.region

    # --- one exchange -------------------------------------------------------------------------

    async def pump_once(self) -> int:
        """Send the next batch (if any); returns how many entries the peer newly acknowledged."""
        async with connection(self._pool) as con:
            cursor = await repl_store.cursor(con, self.dest)
            entries = await outbox.read_batch(con, self.dest, after=cursor.acked_seq, limit=self._settings.batch_size)
            envelopes: list[bytes] = []
            size = 0
            for entry in entries:
                envelope = await self._builder.build(con, entry, self.peer)
                if envelopes and size + len(envelope) > BATCH_BYTES_TARGET:
                    break  # the rest goes in the next batch
                envelopes.append(envelope)
                size += len(envelope)
        entries = entries[: len(envelopes)]
        if not entries:
            return 0
        ack = await self._transport.send(self.peer, envelopes)
        FRAMES_SENT.labels(self.dest).inc(len(envelopes))
        SENT_SEQ.labels(self.dest).set(entries[-1].seq)
        newly = await self._record(ack, sent_seq=entries[-1].seq, previous=cursor.acked_seq)
        if ack.error is not None:
            raise Refused(ack)
        return newly

    async def heartbeat(self) -> Ack:
        """Ask the peer where it stands (nothing is applied); moves the cursor if it is ahead."""
        async with connection(self._pool) as con:
            cursor = await repl_store.cursor(con, self.dest)
        ack = await self._transport.send(self.peer, [self._builder.heartbeat(self.peer)])
        await self._record(ack, sent_seq=0, previous=cursor.acked_seq)
        if ack.error is not None:
            raise Refused(ack)
        return ack

    async def push_anchors(self) -> int:
        """Send the peer the region's signed digests past the last it confirmed; return how many were sent.

        After a restart the sender knows nothing confirmed and sends the newest ones; the peer keeps
        what it already held and refuses nothing for it.
        """
        async with connection(self._pool) as con:
            signed = await audit_store.newest_signed_digests(con, self._builder.region, self._anchor_position,
                                                             MAX_ANCHORS_PER_FRAME)  # fmt: skip
        if not signed:
            return 0
        try:
            newest = parse_anchor(*signed[-1]).position
        except AnchorError as exc:  # a damaged row: the peer would refuse the frame too
            log.error("audit.anchor_unreadable", peer=self.dest, error=str(exc))
            return 0
        ack = await self._transport.send(self.peer, [self._builder.audit_anchors(self.peer, signed)])
        if ack.error is not None:
            raise Refused(ack)
        self._anchor_position = newest
        ANCHORS_PUSHED.labels(self.dest).set(newest)
        return len(signed)

    async def _push_anchors_logged(self) -> None:
        try:
            await self.push_anchors()
        except (TransportError, Refused, ChannelError) as exc:
            SEND_ERRORS.labels(self.dest, "anchors").inc()
            log.warning("audit.anchor_push_failed", peer=self.dest, error=str(exc)[:200])

    async def _record(self, ack: Ack, *, sent_seq: int, previous: int) -> int:
        now = self._clock.now()
        self._last_contact = asyncio.get_running_loop().time()
        async with transaction(self._pool) as con:
            last = await outbox.last_seq(con, self.dest)
            acked = min(ack.applied, last)
            if ack.applied > last:
                # The peer has applied more from us than we ever appended: our database was
                # restored from an older backup. New entries would be taken for replays.
                log.error("replication.peer_ahead", peer=self.dest, peer_applied=ack.applied, last_seq=last)
            if sent_seq:
                await repl_store.record_sent(con, self.dest, sent_seq, now)
            error = None if ack.error is None else f"{ack.error}: {ack.detail}"
            await repl_store.record_ack(con, self.dest, acked, now, error)
            if acked > previous:
                await outbox.delete_acked(con, self.dest, acked)
            backlog = await outbox.backlog(con, self.dest, max(acked, previous))
        observe_backlog(self.dest, backlog, max(acked, previous), now)
        ACKED_SEQ.labels(self.dest).set(max(acked, previous))
        return max(0, acked - previous)

    async def _record_error(self, reason: str, message: str) -> None:
        """Count, persist (for the status command) and publish the backlog of a failed exchange."""
        SEND_ERRORS.labels(self.dest, reason).inc()
        now = self._clock.now()
        with contextlib.suppress(Exception):
            async with transaction(self._pool) as con:
                cursor = await repl_store.cursor(con, self.dest)
                await repl_store.record_send_error(con, self.dest, f"{reason}: {message}", now)
                backlog = await outbox.backlog(con, self.dest, cursor.acked_seq)
            observe_backlog(self.dest, backlog, cursor.acked_seq, now)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stream to the peer until ``stop``: take the destination's lock, then pump."""
        while not stop.is_set():
            try:
                async with connection(self._pool) as lock_con:
                    if await locks.try_sender_lock(lock_con, self.dest):
                        log.info("replication.sender_started", peer=self.dest)
                        try:
                            await self._pump_until(stop, lock_con)
                        finally:
                            with contextlib.suppress(Exception):
                                await locks.sender_unlock(lock_con, self.dest)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replication.sender_crashed", peer=self.dest)
            await _sleep(stop, self._settings.lock_retry_s)

    async def _pump_until(self, stop: asyncio.Event, lock_con: Conn) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        heartbeat_due = True
        anchors_due = loop.time()
        while not stop.is_set():
            if lock_con.is_closed():
                log.warning("replication.sender_lock_lost", peer=self.dest)
                return
            if loop.time() >= anchors_due:
                anchors_due = loop.time() + self._settings.heartbeat_s
                await self._push_anchors_logged()
            try:
                if heartbeat_due:
                    await self.heartbeat()
                    heartbeat_due = False
                self.wake.clear()
                progressed = await self.pump_once()
                attempt = 0
            except (TransportError, Refused, ChannelError) as exc:
                reason = (exc.ack.error or "refused") if isinstance(exc, Refused) else type(exc).__name__
                await self._record_error(reason, str(exc))
                delay = self._settings.backoff.delay(attempt)
                attempt += 1
                log.warning("replication.send_failed", peer=self.dest, reason=reason, error=str(exc)[:200],
                            retry_in_s=round(delay, 3))  # fmt: skip
                heartbeat_due = False
                await _sleep(stop, delay)
                continue
            except KeyringError:
                await self._record_error("unwrap_failed", "stored material cannot be unwrapped with this root key")
                log.error("replication.unwrap_failed", peer=self.dest)
                await _sleep(stop, self._settings.backoff.cap_s)
                continue
            if progressed:
                continue
            idle_s = loop.time() - self._last_contact
            wait_s = min(self._settings.idle_poll_s, max(0.0, self._settings.heartbeat_s - idle_s))
            if wait_s <= 0:
                heartbeat_due = True
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self.wake), timeout=wait_s)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
