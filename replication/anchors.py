"""Audit anchors across regions: every region keeps the other regions' signed audit digests.

A region's database can be rolled back (its newest events and digests deleted, its chain head
rewound) without anything left in it looking wrong; the region's node keeps its own anchor file,
but a restore of the node's disk takes that with it. So each region's replication senders also
push the region's newest signed digests to every peer, and each peer stores them
(``audit_peer_anchors``), where the source region's database and disks cannot reach.
``regiond audit verify --cluster`` then checks that the source's database still holds every
digest its peers hold (docs/AUDIT.md, "Anchors").

A peer cannot forge an anchor: each is the digest exactly as signed by the source's identity key
(``regiond.domain.audit_anchor``), checked here with the key the peers file names for the source,
on top of the frame's own signature and the mutual TLS identity of the connection. A peer can only
keep or lose what it was sent, and a source cannot take an anchor back: a second, different digest
for a position already held is refused and logged (a rolled-back source signing its history again
reuses positions), never stored over the first.

Both digest formats travel: the closed v1 chain's (``regionkms.audit.digest.v1``) and audit trail
v2's (``regionkms.audit.digest.v2``, every writer's head), one increasing sequence of positions (v2
digests number on from the v1 chain's last position), so a peer keeps them in one table.

Frame ``AUDIT_ANCHORS`` (outside the outbox stream: seq 0, applied by nothing, never acked as a
seq), message ``replication.messages.AuditAnchors``: 1..MAX_ANCHORS_PER_FRAME signed digests,
oldest first, positions strictly increasing, their messages MAX_ANCHOR_BYTES_PER_FRAME at most
together (a single digest may be longer: the newest is always sent).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from regiond.crypto import sign
from regiond.domain.audit_anchor import Anchor, AnchorError, parse_anchor
from regiond.store import audit as audit_store
from regiond.store.pool import Pool, transaction
from replication.messages import AuditAnchors, SignedDigest
from replication.status import ANCHOR_CONFLICTS

log = structlog.get_logger("replication.anchors")

__all__ = ["MAX_ANCHORS_PER_FRAME", "MAX_ANCHOR_BYTES_PER_FRAME", "anchors_message", "check_anchors",
           "keep_anchors"]

MAX_ANCHORS_PER_FRAME = 64
# The messages of one frame together, unless it holds a single one: a v2 digest names every writer of
# the region, so 64 of them could pass the frame's own bound (replication.frames.MAX_FRAME_BYTES).
MAX_ANCHOR_BYTES_PER_FRAME = 1024 * 1024


def anchors_message(signed: Sequence[tuple[bytes, bytes]]) -> AuditAnchors:
    """The message for ``(message, signature)`` pairs, oldest first: the newest one, and before it as many
    of the next newest as ``MAX_ANCHORS_PER_FRAME`` and ``MAX_ANCHOR_BYTES_PER_FRAME`` allow."""
    kept: list[SignedDigest] = []
    size = 0
    for message, signature in reversed(signed):
        if kept and (len(kept) == MAX_ANCHORS_PER_FRAME or size + len(message) > MAX_ANCHOR_BYTES_PER_FRAME):
            break
        kept.append(SignedDigest(message, signature))
        size += len(message)
    return AuditAnchors(tuple(reversed(kept)))


def check_anchors(message: AuditAnchors, source: str, source_key: bytes) -> list[Anchor]:
    """The anchors of an authenticated frame from ``source``; ``AnchorError`` if any is not a digest of
    ``source`` (either format: ``parse_anchor`` reads its label, position and members) signed by
    ``source_key``, or the frame is not one ``anchors_message`` makes (the whole frame is refused: a
    source never sends such a thing)."""
    if not 0 < len(message.anchors) <= MAX_ANCHORS_PER_FRAME:
        raise AnchorError(f"an anchors frame holds 1 to {MAX_ANCHORS_PER_FRAME} anchors")
    if len(message.anchors) > 1 and sum(len(a.message) for a in message.anchors) > MAX_ANCHOR_BYTES_PER_FRAME:
        raise AnchorError(f"an anchors frame's digests are {MAX_ANCHOR_BYTES_PER_FRAME} bytes at most together")
    anchors: list[Anchor] = []
    for item in message.anchors:
        anchor = parse_anchor(item.message, item.signature)
        if anchor.region != source:
            raise AnchorError(f"an anchor of region {anchor.region} sent by {source}")
        if anchors and anchor.position <= anchors[-1].position:
            raise AnchorError("an anchors frame's positions do not increase")
        if not sign.verify(source_key, anchor.message, anchor.signature):
            raise AnchorError(f"an anchor not signed by {source}'s identity key")
        anchors.append(anchor)
    return anchors


async def keep_anchors(pool: Pool, source: str, anchors: Sequence[Anchor]) -> int:
    """Store ``anchors`` of ``source`` (checked by ``check_anchors``); return how many were new."""
    stored = 0
    async with transaction(pool) as con:
        for a in anchors:
            outcome = await audit_store.store_peer_anchor(con, source, a.position, a.digest_hash, a.message,
                                                          a.signature)  # fmt: skip
            if outcome == "stored":
                stored += 1
            elif outcome == "conflict":
                ANCHOR_CONFLICTS.labels(source).inc()
                log.error("audit.anchor_conflict", source=source, position=a.position, digest_time=a.digest_time,
                          reason="another digest of this region already holds the position: it was rolled back "
                          "and signed again")  # fmt: skip
    return stored
