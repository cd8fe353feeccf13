"""Replication observability: per-peer status (``regiond replication status``) and metrics.

Everything here is read from the region's own database, so the status command works from any
host that can reach it, whether or not a node is running:

- outbound, per peer: last sequence appended for it, last sent, last acknowledged, lag in
  entries (appended - acknowledged) and in seconds (age of the oldest unacknowledged entry),
  the last error and when;
- inbound, per source: last sequence applied, when, and how many frames were refused.

The same figures are Prometheus metrics on ``/metrics`` (``regionkms_replication_*``), updated
by the senders and the receiver as they work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from regiond.runtime.metrics import REGISTRY, REPLICATION_LAG, REPLICATION_LAG_SECONDS
from regiond.store import outbox
from regiond.store import replication as repl_store
from regiond.store.pool import Pool, connection

__all__ = [
    "ACKED_SEQ",
    "ANCHORS_PUSHED",
    "ANCHOR_CONFLICTS",
    "APPLIED_SEQ",
    "FRAMES_APPLIED",
    "FRAMES_REFUSED",
    "FRAMES_SENT",
    "SEND_ERRORS",
    "SENT_SEQ",
    "InboundStatus",
    "PeerStatus",
    "ReplicationStatus",
    "observe_backlog",
    "read_status",
]

SENT_SEQ = Gauge("regionkms_replication_sent_seq", "Last sequence number sent per peer", ["peer"], registry=REGISTRY)
ACKED_SEQ = Gauge(
    "regionkms_replication_acked_seq", "Last sequence number acknowledged per peer", ["peer"], registry=REGISTRY
)
FRAMES_SENT = Counter(
    "regionkms_replication_frames_sent_total", "Frames sent per peer (retries included)", ["peer"], registry=REGISTRY
)
SEND_ERRORS = Counter(
    "regionkms_replication_send_errors_total", "Failed sends per peer and reason", ["peer", "reason"],
    registry=REGISTRY,
)  # fmt: skip
APPLIED_SEQ = Gauge(
    "regionkms_replication_applied_seq", "Last sequence number applied per source", ["source"], registry=REGISTRY
)
FRAMES_APPLIED = Counter(
    "regionkms_replication_frames_applied_total", "Frames applied per source and outcome", ["source", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
FRAMES_REFUSED = Counter(
    "regionkms_replication_frames_refused_total", "Frames refused per claimed source and reason",
    ["source", "reason"], registry=REGISTRY,
)  # fmt: skip

ANCHORS_PUSHED = Gauge(
    "regionkms_audit_anchor_pushed_position", "Position of the newest audit digest a peer confirmed it holds",
    ["peer"], registry=REGISTRY,
)  # fmt: skip
ANCHOR_CONFLICTS = Counter(
    "regionkms_audit_anchor_conflicts_total", "Audit anchors refused because another digest of the source holds "
    "their position (the source was rolled back and signed again)", ["source"], registry=REGISTRY,
)  # fmt: skip


@dataclass(frozen=True)
class PeerStatus:
    peer: str
    appended_seq: int
    sent_seq: int
    acked_seq: int
    lag_entries: int
    lag_seconds: float
    last_ack_at: dt.datetime | None
    last_error: str | None
    last_error_at: dt.datetime | None


@dataclass(frozen=True)
class InboundStatus:
    source: str
    applied_seq: int
    applied_at: dt.datetime | None
    refused: int
    last_refusal: str | None
    last_refusal_at: dt.datetime | None


@dataclass(frozen=True)
class ReplicationStatus:
    region: str
    peers: list[PeerStatus]
    inbound: list[InboundStatus]

    def as_dict(self) -> dict[str, Any]:
        def when(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "region": self.region,
            "peers": [
                {
                    "peer": p.peer, "appended_seq": p.appended_seq, "sent_seq": p.sent_seq,
                    "acked_seq": p.acked_seq, "lag_entries": p.lag_entries,
                    "lag_seconds": round(p.lag_seconds, 3), "last_ack_at": when(p.last_ack_at),
                    "last_error": p.last_error, "last_error_at": when(p.last_error_at),
                }
                for p in self.peers
            ],
            "inbound": [
                {
                    "source": i.source, "applied_seq": i.applied_seq, "applied_at": when(i.applied_at),
                    "refused": i.refused, "last_refusal": i.last_refusal, "last_refusal_at": when(i.last_refusal_at),
                }
                for i in self.inbound
            ],
        }


def _lag_seconds(oldest: dt.datetime | None, now: dt.datetime) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def observe_backlog(peer: str, backlog: outbox.Backlog, acked: int, now: dt.datetime) -> None:
    """Publish one peer's backlog as metrics (called by its sender after every exchange)."""
    REPLICATION_LAG.labels(peer).set(backlog.entries)
    REPLICATION_LAG_SECONDS.labels(peer).set(_lag_seconds(backlog.oldest_created_at, now))
    ACKED_SEQ.labels(peer).set(acked)


async def read_status(pool: Pool, region: str, peers: Sequence[str], now: dt.datetime) -> ReplicationStatus:
    """The status of ``region``'s replication, from its database (``peers``: the known peers)."""
    async with connection(pool) as con:
        cursors = {c.dest: c for c in await repl_store.cursors(con)}
        names = sorted(set(peers) | set(cursors))
        out: list[PeerStatus] = []
        for name in names:
            c = cursors.get(name)
            acked = c.acked_seq if c else 0
            backlog = await outbox.backlog(con, name, acked)
            out.append(
                PeerStatus(
                    peer=name,
                    appended_seq=backlog.last_seq,
                    sent_seq=c.sent_seq if c else 0,
                    acked_seq=acked,
                    lag_entries=backlog.entries,
                    lag_seconds=_lag_seconds(backlog.oldest_created_at, now),
                    last_ack_at=c.last_ack_at if c else None,
                    last_error=c.last_error if c else None,
                    last_error_at=c.last_error_at if c else None,
                )
            )
        inbound = [
            InboundStatus(i.source, i.applied_seq, i.applied_at, i.refused_count, i.last_refusal, i.last_refusal_at)
            for i in await repl_store.inbounds(con)
        ]
    return ReplicationStatus(region, out, inbound)
