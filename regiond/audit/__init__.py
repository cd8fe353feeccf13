"""The audit trail: a CloudTrail-style event for every call, group-committed, hash-chained, signed.

    calls.py      CallRecord and AuditSink: what the protocol edge hands to audit (the seam)
    events.py     CallRecord -> CloudTrail record; per-operation allow-lists (never secrets)
    writer.py     SegmentWriter, the AuditSink: one writer per worker process, each group-commit
                  batch one segment of its own hash chain, one INSERT (docs/AUDIT.md)
    segment.py    v2 segments: one row per batch (JSON lines), one hash chain per writer
    digests.py    v2 digests: every writer's chain head signed every few seconds (region-wide task);
                  digest_verify.py checks them against the segments for ``regiond audit verify``
    lease.py      a v2 writer's liveness lease: it writes only while valid; the digests close a lapsed one
    chain.py      the legacy v1 per-region hash chain and its signed digests (formats documented there)
    anchors.py    the node's anchor file: every signed digest, held outside the database
    verify.py     find changed, deleted, inserted and reordered events, edited query columns,
                  forged digests and rollbacks (digests anchored outside that the database lacks)
    verify_segments.py  the same over v2: every writer's chain of segments
    query.py      filter events for ``regiond audit query`` (segments and the legacy chain)
    export.py     hourly gzip JSON-lines files with a signed digest each, for a SIEM

``make_audit_sink(pool, settings)`` is what the composition root and the test nodes call;
docs/AUDIT.md describes the event format and the integrity scheme for operators.
"""

from __future__ import annotations

from regiond.audit.writer import AuditUnavailableError, SegmentWriter, WriterOptions
from regiond.config import Settings
from regiond.crypto.keyring import env_keyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.statedir import has_identity, load_identity, load_root_keyring
from regiond.store.pool import Pool

__all__ = ["AuditUnavailableError", "SegmentWriter", "WriterOptions", "load_signer", "make_audit_sink"]


def load_signer(settings: Settings) -> RegionIdentityKey | None:
    """The region identity key that signs digests, or ``None`` when the node has no state dir."""
    if settings.state_dir is None or not has_identity(settings.state_dir):
        return None
    keyring = env_keyring(settings.root_key_b64) if settings.root_key_b64 else load_root_keyring(settings.state_dir)
    return load_identity(settings.state_dir, keyring)


async def make_audit_sink(pool: Pool, settings: Settings) -> SegmentWriter:
    """The production sink of this worker process, started (its writer loops run until ``close``)."""
    sink = SegmentWriter(pool, settings.region, options=WriterOptions.from_settings(settings))
    await sink.start()
    return sink
