"""Audit anchors: a region's signed audit digests, held where its database cannot reach.

A database can be rolled back: delete the newest events and the newest signed digests, rewind
the chain head, and everything left still verifies (it is all genuine, just shorter). Nothing
inside the database can tell. So every digest a region signs is also kept *outside* it, as an
**anchor**, and ``regiond audit verify`` checks that the database still holds every anchored
digest (docs/AUDIT.md, "Anchors"): in the signing node's state dir (an append-only file) and in
the other regions' databases (pushed over the replication channel).

An anchor is exactly the digest as its signer made it, nothing added: the signed message bytes
and the Ed25519 signature of the region identity key. So an anchor cannot be forged by whoever
holds it (a peer region, a file system), only kept or lost, and it needs no format of its own
when the digest format changes: the digest's label says how to read its position.

    message   = <digest label> || JSON (sorted keys) of the digest's members
    signature = Ed25519(region identity key, message)
    position  = the digest's place in the region's sequence of digests: strictly increasing from
                one digest to the next (``lastSeq`` for ``regionkms.audit.digest.v1``, ``seq`` for
                ``regionkms.audit.digest.v2``, which numbers on from the closed v1 chain's last
                position: one sequence, so a peer keeps both in one table; each node keeps them in a
                file per format)
    digest hash = SHA-256(message): what the next digest links to, and what ``verify`` compares

One anchor per line in a file, format version 1 (JSON, sorted keys; only ``message`` and
``signature`` are read back, the rest is for people and is checked against the message):

    {"v": 1, "region", "position", "digestTime", "digestHash" (hex),
     "message" (base64), "signature" (base64)}

Pure: parsing and formatting only. The signature is checked by the caller
(``regiond.crypto.sign.verify``) with the key it trusts for the region.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ANCHOR_LINE_VERSION",
    "DIGEST_LABEL_V1",
    "DIGEST_LABEL_V2",
    "MAX_MESSAGE_BYTES_V2",
    "SIGNATURE_BYTES",
    "Anchor",
    "AnchorError",
    "parse_anchor",
    "parse_line",
]

ANCHOR_LINE_VERSION = 1
DIGEST_LABEL_V1 = b"regionkms.audit.digest.v1\x00"
DIGEST_LABEL_V2 = b"regionkms.audit.digest.v2\x00"  # audit trail v2: every writer's head (regiond.audit.digests)
MAX_MESSAGE_BYTES = 4096
MAX_MESSAGE_BYTES_V2 = 4 * 1024 * 1024  # a v2 digest names every open writer of the region
SIGNATURE_BYTES = 64

# How each digest format names its position (append a label when a digest format is added), and
# how long its message may be.
_POSITION_MEMBER = {DIGEST_LABEL_V1: "lastSeq", DIGEST_LABEL_V2: "seq"}
_MAX_BYTES = {DIGEST_LABEL_V1: MAX_MESSAGE_BYTES, DIGEST_LABEL_V2: MAX_MESSAGE_BYTES_V2}


class AnchorError(ValueError):
    """Bytes that are not a signed digest of a known format (a damaged file, a bad frame)."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """A signed digest held outside the region's database (see module docstring)."""

    region: str
    position: int
    digest_time: str
    message: bytes
    signature: bytes

    @property
    def digest_hash(self) -> bytes:
        return hashlib.sha256(self.message).digest()

    def line(self) -> bytes:
        """One line of an anchor file (newline included)."""
        body = {
            "v": ANCHOR_LINE_VERSION, "region": self.region, "position": self.position,
            "digestTime": self.digest_time, "digestHash": self.digest_hash.hex(),
            "message": base64.b64encode(self.message).decode(), "signature": base64.b64encode(self.signature).decode(),
        }  # fmt: skip
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"\n"


def parse_anchor(message: bytes, signature: bytes) -> Anchor:
    """Read a signed digest's region, position and time from its message; ``AnchorError`` if it is none."""
    message, signature = bytes(message), bytes(signature)
    if len(signature) != SIGNATURE_BYTES:
        raise AnchorError("an anchor's signature is 64 bytes")
    label = next((known for known in _POSITION_MEMBER if message.startswith(known)), None)
    if label is None:
        raise AnchorError("not a signed audit digest of a known format")
    if len(message) > _MAX_BYTES[label]:
        raise AnchorError("an anchor's message is too long")
    member = _POSITION_MEMBER[label]
    try:
        body: Any = orjson.loads(message[len(label) :])
    except orjson.JSONDecodeError:
        raise AnchorError("an anchor's digest is not JSON") from None
    if not isinstance(body, dict):
        raise AnchorError("an anchor's digest is not a JSON object")
    region, position, when = body.get("region"), body.get(member), body.get("digestTime")
    if not isinstance(region, str) or not region or len(region) > 64:
        raise AnchorError("an anchor's digest names no region")
    if isinstance(position, bool) or not isinstance(position, int) or not 0 < position < 2**63:
        raise AnchorError("an anchor's digest has no valid position")
    if not isinstance(when, str) or len(when) > 64:
        raise AnchorError("an anchor's digest has no time")
    if label == DIGEST_LABEL_V2:  # its heads are read by verify (regiond.audit.digests.decode), not here
        prev = body.get("previousDigestHash")
        prev_ok = prev is None or (isinstance(prev, str) and len(prev) == 64)
        if not isinstance(body.get("writers"), list) or not prev_ok:
            raise AnchorError("an anchor's v2 digest has no writers or previous digest hash")
    return Anchor(region, position, when, message, signature)


def parse_line(line: bytes) -> Anchor:
    """One line of an anchor file; the readable members must agree with the signed message."""
    try:
        body: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise AnchorError("not JSON") from None
    if not isinstance(body, dict) or body.get("v") != ANCHOR_LINE_VERSION:
        raise AnchorError("not an anchor line of version 1")
    try:
        message = base64.b64decode(str(body.get("message", "")), validate=True)
        signature = base64.b64decode(str(body.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise AnchorError("message or signature is not base64") from None
    anchor = parse_anchor(message, signature)
    if (body.get("region"), body.get("position"), body.get("digestHash")) != (
        anchor.region, anchor.position, anchor.digest_hash.hex(),
    ):  # fmt: skip
        raise AnchorError("the readable members disagree with the signed digest")
    return anchor
