"""The audit trail: a CloudTrail-style event for every call, group-committed, hash-chained, signed.

    calls.py      CallRecord and AuditSink: what the protocol edge hands to audit (the seam)
    events.py     CallRecord -> CloudTrail record; per-operation allow-lists (never secrets)
    committer.py  GroupCommitter, the AuditSink: one chained, durable batched write (one CALL)
                  shared by concurrent requests (docs/AUDIT.md)
    segment.py    v2 segments: one row per batch (JSON lines), one hash chain per writer
    digests.py    v2 digests: every writer's chain head signed every few seconds (region-wide task);
                  digest_verify.py checks them against the segments for ``regiond audit verify``
    lease.py      a v2 writer's liveness lease: it writes only while valid; the digests close a lapsed one
    chain.py      the per-region hash chain and Ed25519-signed digests (formats documented there)
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

from regiond.audit.committer import AuditUnavailableError, CommitOptions, GroupCommitter
from regiond.config import Settings
from regiond.crypto.keyring import env_keyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.statedir import has_identity, load_identity, load_root_keyring
from regiond.store.pool import Pool

__all__ = ["AuditUnavailableError", "CommitOptions", "GroupCommitter", "load_signer", "make_audit_sink"]


def load_signer(settings: Settings) -> RegionIdentityKey | None:
    """The region identity key that signs digests, or ``None`` when the node has no state dir."""
    if settings.state_dir is None or not has_identity(settings.state_dir):
        return None
    keyring = env_keyring(settings.root_key_b64) if settings.root_key_b64 else load_root_keyring(settings.state_dir)
    return load_identity(settings.state_dir, keyring)


async def make_audit_sink(pool: Pool, settings: Settings) -> GroupCommitter:
    """The production sink, started (its writer and checkpoint tasks run until ``close``)."""
    sink = GroupCommitter(pool, settings.region, load_signer(settings), options=CommitOptions.from_settings(settings))
    await sink.start()
    return sink
