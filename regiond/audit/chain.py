"""The audit hash chain and its signed digests, format version 1.

Event hash (one chain per region; the first event links to the region's genesis hash):

    genesis(region) = SHA-256("regionkms.audit.genesis.v1" || 0x00 || region)
    hash(event)     = SHA-256("regionkms.audit.event.v1" || 0x00 || prev_hash || record)

where ``record`` is the exact JSON bytes stored for the event and ``prev_hash`` the hash of
the event before it. The sequence number is deliberately *not* hashed: the chain itself is
the order, so a swapped pair shows up as two links that point the wrong way (which is how
``verify`` can tell a reorder from an edit), and a deletion as a link that points nowhere.

Digest (a checkpoint every N events or T seconds, signed with the region's Ed25519 identity):

    message = "regionkms.audit.digest.v1" || 0x00 || JSON(sorted keys, no spaces) of
              {"region", "firstSeq", "lastSeq", "lastEventHash" (hex),
               "previousDigestHash" (hex or null), "digestTime" (RFC 3339, UTC, microseconds)}
    signature = Ed25519(identity key, message)

``previousDigestHash`` is SHA-256 of the previous digest's message, so digests form a chain
of their own: deleting or inserting one breaks it. The labels keep an audit signature from
ever being replayed as a replication-frame signature (``regiond.crypto.sign`` asks for this).

Version policy: the labels carry the version; a future format gets new labels and ``verify``
keeps accepting v1 rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import orjson

from regiond.crypto import sign
from regiond.domain.audit_anchor import DIGEST_LABEL_V1, Anchor, parse_anchor
from regiond.store.audit import DigestRow

__all__ = [
    "HASH_BYTES",
    "Digest",
    "digest_hash",
    "digest_of",
    "event_hash",
    "genesis_hash",
]

HASH_BYTES = 32
_GENESIS_LABEL = b"regionkms.audit.genesis.v1\x00"
_EVENT_LABEL = b"regionkms.audit.event.v1\x00"
_DIGEST_LABEL = DIGEST_LABEL_V1  # anchors read digests by this label (regiond.domain.audit_anchor)


def genesis_hash(region: str) -> bytes:
    """What the first event of ``region`` links to: chains of two regions can never be spliced."""
    return hashlib.sha256(_GENESIS_LABEL + region.encode()).digest()


def event_hash(prev_hash: bytes, record: bytes) -> bytes:
    h = hashlib.sha256(_EVENT_LABEL)
    h.update(prev_hash)
    h.update(record)
    return h.digest()


def _time_text(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Digest:
    """A signed checkpoint: events ``first_seq..last_seq`` of ``region`` end with ``last_hash``."""

    region: str
    first_seq: int
    last_seq: int
    last_hash: bytes
    prev_digest: bytes | None
    digest_time: dt.datetime
    public_key: bytes = b""
    signature: bytes = b""

    def message(self) -> bytes:
        body = {
            "region": self.region,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "lastEventHash": self.last_hash.hex(),
            "previousDigestHash": self.prev_digest.hex() if self.prev_digest is not None else None,
            "digestTime": _time_text(self.digest_time),
        }
        return _DIGEST_LABEL + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    def signed(self, key: sign.RegionIdentityKey) -> Digest:
        return Digest(
            self.region, self.first_seq, self.last_seq, self.last_hash, self.prev_digest, self.digest_time,
            key.public_bytes(), key.sign(self.message()),
        )  # fmt: skip

    def anchor(self) -> Anchor:
        """This digest as an anchor, to be held outside the database (``regiond.domain.audit_anchor``)."""
        return parse_anchor(self.message(), self.signature)

    def signature_valid(self, public_key: bytes | None = None) -> bool:
        """True if signed by ``public_key`` (default: the key recorded with the digest)."""
        return sign.verify(public_key if public_key is not None else self.public_key, self.message(), self.signature)


def digest_hash(digest: Digest) -> bytes:
    """The link the next digest carries as ``previousDigestHash``."""
    return hashlib.sha256(digest.message()).digest()


def digest_of(row: DigestRow) -> Digest:
    """The digest a stored row holds (its message is rebuilt from the columns, which the signature covers)."""
    return Digest(row.region, row.first_seq, row.last_seq, bytes(row.last_hash),
                  bytes(row.prev_digest) if row.prev_digest is not None else None, row.digest_time,
                  bytes(row.public_key), bytes(row.signature))  # fmt: skip
