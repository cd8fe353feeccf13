"""Audit trail v2 digests: every few seconds, the heads of every writer's chain, signed (issue 15).

Each writer (a worker process) chains its own segments (``regiond.audit.segment``); nothing in one
chain says how far another has come, and a chain's tail can be cut without breaking a link. A
digest fixes where every chain stood: one process of the region (the leader of the
``audit-digests`` task, ``regiond.background.leadership``) signs, every ``audit_digest_interval_s``
while anything changed, the head (segment seq and hash) of every open writer and the previous
digest's hash, with the region's Ed25519 identity key (the key that signs v1 digests and
replication frames: ``regiond.audit.load_signer``). Format version 2 (v1: ``regiond.audit.chain``):

    message   = "regionkms.audit.digest.v2" || 0x00 || JSON (sorted keys, no spaces) of
                {"region", "seq" (per region: P+1, P+2, ... where P is the closed v1 chain's last
                 position, its closing seq (0 without v1 events), so the anchors of both formats have one
                 increasing position, ``store.v1_last_position``), "digestTime" (RFC 3339, UTC, microseconds),
                 "previousDigestHash" (hex of SHA-256 of the previous message, or null for the first),
                 "writers": [{"writer" (UUID text), "seq" (0: no segment yet), "hash" (hex; the
                              writer's genesis while seq is 0), "closed" (bool)} ... by writer]}
    signature = Ed25519(identity key, message)
    digest hash = SHA-256(message)

Rules the task keeps and ``regiond audit verify`` checks (``regiond.audit.digest_verify``):

* A writer's head never goes back; the stored segment at every recorded head has that hash.
* A writer in a digest is in the next one, open or closed; a closed writer is in no later digest
  and writes no segment past its recorded head.
* A writer is closed (its final head recorded, ``closed`` true) once it is gone: its liveness
  lease (``audit_writers.alive_at``, ``regiond.audit.lease``) and its newest segment are both older
  than ``audit_writer_close_after_s`` and its process (``audit_writers.node``/``pid``) holds no
  leadership session (``regiond.background.leadership.holder_name``: every worker holds one while
  it runs), or it gave its lease up at a clean stop. A writer whose lease lapsed stops writing
  under its id.

The task refuses to sign over a trail it can see was cut (a head below the previous digest's, a
previous digest whose signature is not the region's): it logs ``audit.digest_refused`` and signs
nothing until an operator has run ``regiond audit verify``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from prometheus_client import Counter

from regiond.audit import segment
from regiond.audit.anchors import AnchorFile
from regiond.background.leadership import holder_name, holder_prefix
from regiond.background.periodic import run_periodically
from regiond.clock import Clock, SystemClock
from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import DIGEST_LABEL_V2, Anchor, parse_anchor
from regiond.runtime.metrics import REGISTRY
from regiond.store import audit_digests as store
from regiond.store import locks
from regiond.store.pool import Pool, transaction

__all__ = [
    "DIGEST_LABEL_V2",
    "Digest",
    "DigestFormatError",
    "DigestTask",
    "Head",
    "decode",
    "digest_hash",
]

log = structlog.get_logger(__name__)

MAX_WRITERS = 100_000  # bounds what a reader of one message allocates

AUDIT_DIGESTS = Counter("regionkms_audit_digests_total", "Audit v2 digests signed", registry=REGISTRY)
AUDIT_DIGESTS_REFUSED = Counter(
    "regionkms_audit_digests_refused_total",
    "Audit v2 digest rounds that refused to sign over a trail that was cut (run regiond audit verify)",
    registry=REGISTRY,
)
AUDIT_WRITERS_CLOSED = Counter(
    "regionkms_audit_writers_closed_total", "Audit writers closed by a digest (their process was gone)",
    registry=REGISTRY,
)  # fmt: skip


class DigestFormatError(ValueError):
    """Bytes that are not a v2 digest message ``Digest.message`` could have written."""


def _time_text(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Head:
    """Where one writer's chain stood: its newest segment ``seq`` (0: none) and that segment's hash."""

    writer_id: uuid.UUID
    seq: int
    hash: bytes
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Digest:
    region: str
    seq: int
    digest_time: dt.datetime
    prev_hash: bytes | None
    heads: tuple[Head, ...]

    def message(self) -> bytes:
        """The one encoding (module docstring): what is signed, stored and hashed."""
        body = {
            "region": self.region,
            "seq": self.seq,
            "digestTime": _time_text(self.digest_time),
            "previousDigestHash": self.prev_hash.hex() if self.prev_hash is not None else None,
            "writers": [
                {"writer": str(h.writer_id), "seq": h.seq, "hash": h.hash.hex(), "closed": h.closed}
                for h in sorted(self.heads, key=lambda h: h.writer_id.bytes)
            ],
        }
        return DIGEST_LABEL_V2 + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    @property
    def closed(self) -> list[uuid.UUID]:
        return [h.writer_id for h in self.heads if h.closed]

    def head(self, writer_id: uuid.UUID) -> Head | None:
        return next((h for h in self.heads if h.writer_id == writer_id), None)


def digest_hash(message: bytes) -> bytes:
    """What the next digest carries as ``previousDigestHash``."""
    return hashlib.sha256(message).digest()


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DigestFormatError(f"a v2 digest's {name} is missing or not {kind.__name__}")
    return value


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * segment.HASH_BYTES:
        raise DigestFormatError(f"a v2 digest's {what} is not a SHA-256 in hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DigestFormatError(f"a v2 digest's {what} is not a SHA-256 in hex") from None


def decode(message: bytes) -> Digest:
    """The digest a stored message holds; ``DigestFormatError`` unless ``Digest.message`` writes exactly it."""
    message = bytes(message)
    if not message.startswith(DIGEST_LABEL_V2):
        raise DigestFormatError("not a v2 audit digest (label)")
    try:
        body: Any = orjson.loads(message[len(DIGEST_LABEL_V2) :])
    except orjson.JSONDecodeError:
        raise DigestFormatError("a v2 digest is not JSON") from None
    if not isinstance(body, dict):
        raise DigestFormatError("a v2 digest is not a JSON object")
    region, seq = _field(body, "region", str), _field(body, "seq", int)
    try:
        when = dt.datetime.strptime(_field(body, "digestTime", str), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise DigestFormatError("a v2 digest's digestTime is not RFC 3339 UTC") from None
    prev_text = body.get("previousDigestHash")
    prev = None if prev_text is None else _hex(prev_text, "previousDigestHash")
    writers = _field(body, "writers", list)
    if len(writers) > MAX_WRITERS:
        raise DigestFormatError("a v2 digest names too many writers")
    heads = []
    for w in writers:
        if not isinstance(w, dict):
            raise DigestFormatError("a v2 digest's writer is not an object")
        try:
            writer_id = uuid.UUID(_field(w, "writer", str))
        except ValueError:
            raise DigestFormatError("a v2 digest's writer is not a UUID") from None
        heads.append(Head(writer_id, _field(w, "seq", int), _hex(w.get("hash"), "head hash"),
                          _field(w, "closed", bool)))  # fmt: skip
    digest = Digest(region, seq, when, prev, tuple(heads))
    if digest.message() != message or len({h.writer_id for h in heads}) != len(heads):
        raise DigestFormatError("a v2 digest is not in its canonical form")
    return digest


def signature_valid(public_keys: Sequence[bytes], message: bytes, signature: bytes) -> bool:
    return any(sign.verify(k, message, signature) for k in public_keys)


class DigestRefusedError(RuntimeError):
    """The task will not sign: what it would sign over is not what the previous digest signed."""


class DigestTask:
    """The region-wide task that signs digests (one process of the region runs it: leadership)."""

    def __init__(
        self, pool: Pool, region: str, signer: RegionIdentityKey | None, *, interval_s: float,
        close_after_s: float, clock: Clock | None = None, timeout_s: float = 10.0, anchor_path: Path | None = None,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._region = region
        self._signer = signer
        self._interval_s = interval_s
        self._close_after_s = close_after_s
        self._clock = clock or SystemClock()
        self._timeout_s = timeout_s
        self._anchors = AnchorFile(anchor_path) if anchor_path is not None else None
        self._last_anchor: Anchor | None = None  # the newest digest this node anchored (read when leading)

    async def run(self, stop: asyncio.Event) -> None:
        """Leadership's ``work``: a round every interval until ``stop`` (a failed round is retried)."""
        if self._signer is None:
            log.warning("audit.digests_unsigned", region=self._region, reason="no region identity key")
            await stop.wait()
            return
        if self._anchors is not None:  # the leader may have moved here from another worker of this node
            self._last_anchor = await asyncio.to_thread(self._anchors.last)
        await run_periodically("audit.digest", lambda _now: self.round(), clock=self._clock,
                               interval_s=self._interval_s, stop=stop)  # fmt: skip

    async def round(self) -> Digest | None:
        """Sign one digest if any head moved or a writer is to be closed; return it (``None``: nothing new,
        another runner's round, or refused)."""
        if self._signer is None:
            return None
        try:
            async with asyncio.timeout(self._timeout_s), transaction(self._pool) as con:
                if not await locks.try_lock_xact(con, locks.LockId.AUDIT_DIGEST):
                    return None
                digest = await self._next(con, self._signer)
                if digest is None:
                    return None
                message = digest.message()
                signature = self._signer.sign(message)
                await store.add_digest(con, store.DigestRow(
                    self._region, digest.seq, digest.digest_time, digest.prev_hash, len(digest.heads),
                    digest.closed, self._signer.public_bytes(), message, signature,
                ))  # fmt: skip
        except DigestRefusedError as exc:
            AUDIT_DIGESTS_REFUSED.inc()
            log.error("audit.digest_refused", region=self._region, reason=str(exc))
            return None
        AUDIT_DIGESTS.inc()
        AUDIT_WRITERS_CLOSED.inc(len(digest.closed))
        await self._anchor(parse_anchor(message, signature))
        for writer_id in digest.closed:
            log.info("audit.writer_closed", region=self._region, writer=str(writer_id), digest=digest.seq)
        return digest

    async def _anchor(self, anchor: Anchor) -> None:
        """Hold the digest (durable: ``add_digest`` commits synchronously) outside the database."""
        self._last_anchor = anchor
        if self._anchors is None:
            return
        try:
            await asyncio.to_thread(self._anchors.append, anchor)
        except OSError as exc:
            log.error("audit.anchor_write_failed", region=self._region, position=anchor.position,
                      error=type(exc).__name__)  # fmt: skip

    async def _check_rollback(self, con: Any) -> None:
        """Refuse to sign over a database that no longer holds the last digest this node anchored."""
        last = self._last_anchor
        if last is None:
            return
        held = await store.digest_at(con, self._region, last.position)
        if held is None or digest_hash(held.message) != last.digest_hash:
            found = "another digest" if held is not None else "no digest"
            raise DigestRefusedError(f"the database holds {found} at digest {last.position}, which this node signed "
                                     f"at {last.digest_time} and anchored: the trail was rolled back")  # fmt: skip

    async def _next(self, con: Any, signer: RegionIdentityKey) -> Digest | None:
        await self._check_rollback(con)
        row = await store.last_digest(con, self._region)
        prev: Digest | None = None
        if row is not None:
            if not sign.verify(signer.public_bytes(), row.message, row.signature):
                raise DigestRefusedError(f"the stored digest {row.seq} is not signed by this region's key")
            try:
                prev = decode(row.message)
            except DigestFormatError as exc:
                raise DigestRefusedError(f"the stored digest {row.seq}: {exc}") from None
        carried = [h.writer_id for h in prev.heads if not h.closed] if prev is not None else []
        heads: list[Head] = []
        writers = await store.open_writer_heads(con, carried)
        # A worker holds its leadership session as long as it runs: a writer whose process still has
        # one is not closed, whatever its lease says (a writer that does not renew, a clock jump).
        alive = await store.session_names(con, holder_prefix(self._region))
        for w in writers:
            before = prev.head(w.writer_id) if prev is not None else None
            if before is not None and before.closed:
                continue  # closed by the previous digest (audit_writers.closed_at was lost): stays closed
            if w.seq == 0:
                genesis = w.genesis if w.genesis is not None else segment.writer_genesis(self._region, w.writer_id)
                head = Head(w.writer_id, 0, genesis)
            else:
                assert w.hash is not None
                head = Head(w.writer_id, w.seq, w.hash)
            if before is not None and head.seq < before.seq:
                raise DigestRefusedError(f"writer {w.writer_id}'s chain ends at segment {head.seq}, below the "
                                         f"segment {before.seq} the previous digest recorded")  # fmt: skip
            if before is not None and head.seq == before.seq and head.hash != before.hash:
                raise DigestRefusedError(f"writer {w.writer_id}'s segment {head.seq} is not the one the previous "
                                         "digest recorded")  # fmt: skip
            running = w.node is not None and w.pid is not None and holder_name(self._region, w.node, w.pid) in alive
            retired = w.idle_s == float("inf")  # gave its lease up at a clean stop (or was never registered)
            gone = w.closed or not w.registered or retired or (w.idle_s >= self._close_after_s and not running)
            heads.append(Head(head.writer_id, head.seq, head.hash, closed=gone))
        moved = (
            {(h.writer_id, h.seq) for h in heads} != {(h.writer_id, h.seq) for h in prev.heads if not h.closed}
            if prev is not None
            else True
        )
        if prev is not None and not moved and not any(h.closed for h in heads):
            return None  # nothing moved: the previous digest still says it all
        if prev is None and not heads:
            return None
        now = self._clock.now()
        if prev is not None and now <= prev.digest_time:
            now = prev.digest_time + dt.timedelta(microseconds=1)  # digest times strictly increase
        seq = prev.seq + 1 if prev is not None else await store.v1_last_position(con, self._region) + 1
        return Digest(self._region, seq, now,
                      digest_hash(row.message) if row is not None else None, tuple(heads))  # fmt: skip
