"""Replication frames: the unit a source region sends to a destination region.

Pure: encode/decode and sign/verify only, no I/O, so the sender, the receiver and the
in-memory transport all share one definition of what is on the wire.

Frame, format version 1 -- one msgpack array of exactly eight elements:

    [ version: uint = 1,
      kind:    uint (FrameKind),
      source:  str  (region name, the writer),
      dest:    str  (region name, the intended receiver),
      seq:     uint (the source's sequence number; apply is idempotent on (source, seq); < 2**63),
      epoch:   uint (primary epoch the writer believed in, < 2**63),
      body:    map  (str keys; values nil, bool, int, str, bin, array or map, nested <= 16;
                     what it holds for each kind is a ``replication.messages`` message),
      sent_at_ms: uint (writer's wall clock, Unix milliseconds, < 2**63) ]

The encoding is canonical: maps are written with keys in sorted order, str as msgpack str,
bytes as msgpack bin, every integer in its smallest form. ``decode`` accepts only that
canonical encoding (it re-encodes and compares), so one frame has exactly one byte string:
signatures, deduplication and hashes never disagree about "the same frame". Floats and
msgpack extension types are refused: nothing replicated needs them, and they are where
"equal" and "same bytes" part ways (NaN, -0.0, timestamps).

Envelope, format version 1 -- what travels and what is signed:

    0x01 | u8 len(signer) | signer region (ASCII) | 64-byte Ed25519 signature | frame bytes

    signature = Ed25519(identity key of signer, SIGNING_CONTEXT || frame bytes)

The signer is outside the signed frame only so the receiver can pick the public key and
check the signature *before* parsing any msgpack from an unauthenticated peer; it must then
equal the frame's ``source``. The context label keeps a frame signature from ever being
accepted as a signature of anything else the region identity signs (audit digests).

Version policy (raft ``RPCHeader``): a decoder accepts exactly the frame and envelope
versions it knows and refuses others with ``FrameError``, never guessing. A new field means
a new frame version (its dataclass field gets a default, so version 1 frames still build);
a new ``FrameKind`` takes a new number and numbers are never reused. Receivers refuse
unknown kinds rather than ack what they cannot apply, so upgrade receivers before senders
start emitting a new version or kind.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from regiond.crypto import sign
from replication.errors import ReplicationError

__all__ = [
    "ENVELOPE_VERSION",
    "FRAME_VERSION",
    "MAX_FRAME_BYTES",
    "REGION_PATTERN",
    "SIGNING_CONTEXT",
    "BadSignatureError",
    "Frame",
    "FrameError",
    "FrameKind",
    "UnknownRegionError",
    "WrongDestinationError",
    "decode",
    "encode",
    "sign_frame",
    "verify_envelope",
]

FRAME_VERSION = 1
ENVELOPE_VERSION = 1
FRAME_FIELDS_V1 = 8
MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Key material and IAM documents are small; anything bigger is an error or an attack."""
MAX_BODY_DEPTH = 16
MAX_REGION_CHARS = 64
U63_MAX = 2**63 - 1
SIGNING_CONTEXT = b"regionkms/replication/frame/v1\x00"

REGION_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
"""A region name, as frames and their messages carry it."""
_REGION_RE = re.compile(REGION_PATTERN)
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class FrameError(ReplicationError, ValueError):
    """A frame or envelope is malformed, of an unknown version or kind, or not authentic."""


class UnknownRegionError(FrameError):
    """The envelope claims a signer whose identity key this region does not know."""


class BadSignatureError(FrameError):
    """The signature does not verify, or the signer is not the frame's source."""


class WrongDestinationError(FrameError):
    """An authentic frame addressed to another region (a misroute or a replay)."""


class FrameKind(IntEnum):
    """What a frame carries. Numbers are wire values: append, never renumber or reuse.

    The body of each kind is a ``replication.messages`` message. Number 3 is reserved
    (``messages.RESERVED_KINDS``: KEY_ROTATED, defined once and never sent).
    """

    KEY_CREATED = 1
    KEY_MATERIAL = 2
    KEY_DELETED = 4
    PRIMARY_MOVED = 5
    IAM_CHANGE = 6
    HEARTBEAT = 7
    KEY_UPDATED = 8
    AUDIT_ANCHORS = 9  # the source's newest signed audit digests (outside the outbox stream: seq 0)
    AUTHORIZE_QUERY = 10  # not sequenced (seq 0): replication.authorize, never in a batch
    AUTHORIZE_ANSWER = 11


def _check_region(value: object, field: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_REGION_CHARS or not _REGION_RE.fullmatch(value):
        raise FrameError(f"{field} is not a valid region name")


def _check_u63(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U63_MAX:
        raise FrameError(f"{field} must be an integer in [0, 2**63)")


def _canonical(value: object, depth: int = 0) -> Any:
    """Validate a body value and return it with every map's keys in sorted order."""
    if depth > MAX_BODY_DEPTH:
        raise FrameError(f"frame body nested deeper than {MAX_BODY_DEPTH}")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise FrameError("frame body integer out of msgpack range")
        return value
    if isinstance(value, list):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise FrameError("frame body map keys must be strings")
        return {k: _canonical(value[k], depth + 1) for k in sorted(value)}
    raise FrameError(f"frame body cannot carry a {type(value).__name__}")


@dataclass(frozen=True)
class Frame:
    """One replication frame (layout in the module docstring); validated when built."""

    version: int
    kind: FrameKind
    source: str
    dest: str
    seq: int
    epoch: int
    body: dict[str, Any]
    sent_at_ms: int

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or self.version != FRAME_VERSION:
            raise FrameError("unsupported frame version")
        if not isinstance(self.kind, FrameKind):
            raise FrameError("unknown frame kind")
        _check_region(self.source, "source")
        _check_region(self.dest, "dest")
        _check_u63(self.seq, "seq")
        _check_u63(self.epoch, "epoch")
        _check_u63(self.sent_at_ms, "sent_at_ms")
        if not isinstance(self.body, dict):
            raise FrameError("frame body must be a map")
        _canonical(self.body)


def encode(frame: Frame) -> bytes:
    """The canonical msgpack bytes of ``frame``."""
    fields = [
        frame.version,
        int(frame.kind),
        frame.source,
        frame.dest,
        frame.seq,
        frame.epoch,
        _canonical(frame.body),
        frame.sent_at_ms,
    ]
    try:
        data: bytes = msgpack.packb(fields, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a str with a lone surrogate
        raise FrameError("frame cannot be encoded") from exc
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame larger than {MAX_FRAME_BYTES} bytes")
    return data


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FrameError("msgpack extension types are not allowed in frames")


def decode(data: bytes) -> Frame:
    """Parse canonical frame bytes; ``FrameError`` for anything else.

    Refuses: oversize input, trailing bytes, floats, extension types, non-string map keys,
    a wrong element count, unknown versions and kinds, and any non-canonical encoding.
    """
    data = bytes(data)
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except FrameError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, ...
        raise FrameError("frame is not valid msgpack") from exc
    if not isinstance(raw, list) or not raw:
        raise FrameError("frame must be a msgpack array")
    version = raw[0]
    if isinstance(version, bool) or version != FRAME_VERSION:
        raise FrameError("unsupported frame version")
    if len(raw) != FRAME_FIELDS_V1:
        raise FrameError(f"frame version 1 has {FRAME_FIELDS_V1} fields")
    _, kind, source, dest, seq, epoch, body, sent_at_ms = raw
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise FrameError("unknown frame kind")
    try:
        frame_kind = FrameKind(kind)
    except ValueError:
        raise FrameError("unknown frame kind") from None
    if not isinstance(body, dict):
        raise FrameError("frame body must be a map")
    frame = Frame(
        version=version,
        kind=frame_kind,
        source=source,
        dest=dest,
        seq=seq,
        epoch=epoch,
        body=body,
        sent_at_ms=sent_at_ms,
    )
    if encode(frame) != data:
        raise FrameError("frame is not canonically encoded")
    return frame


def sign_frame(frame_bytes: bytes, identity_private: sign.RegionIdentityKey) -> bytes:
    """Wrap encoded frame bytes in a signed envelope (layout in the module docstring).

    The frame is decoded first, so only well-formed frames get signed, and the envelope's
    signer is the frame's own ``source``.
    """
    frame_bytes = bytes(frame_bytes)
    signer = decode(frame_bytes).source.encode("ascii")
    signature = identity_private.sign(SIGNING_CONTEXT + frame_bytes)
    return struct.pack(">BB", ENVELOPE_VERSION, len(signer)) + signer + signature + frame_bytes


def verify_envelope(
    envelope: bytes, known_region_public_keys: Mapping[str, bytes], *, local_region: str
) -> Frame:
    """Check an envelope and return its frame, or raise a ``FrameError``.

    The signature is checked with the public key configured for the claimed signer before
    any msgpack is parsed; the frame's ``source`` must be that signer and its ``dest`` must
    be ``local_region`` -- a frame signed for one region is never accepted by another.
    """
    envelope = bytes(envelope)
    if len(envelope) < 2:
        raise FrameError("envelope truncated")
    if envelope[0] != ENVELOPE_VERSION:
        raise FrameError("unsupported envelope version")
    signer_len = envelope[1]
    sig_start = 2 + signer_len
    frame_start = sig_start + sign.SIGNATURE_BYTES
    if len(envelope) <= frame_start:
        raise FrameError("envelope truncated")
    try:
        signer = envelope[2:sig_start].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("envelope signer is not a region name") from None
    _check_region(signer, "envelope signer")
    public_key = known_region_public_keys.get(signer)
    if public_key is None:
        raise UnknownRegionError(f"no identity key known for region {signer!r}")
    frame_bytes = envelope[frame_start:]
    if not sign.verify(public_key, SIGNING_CONTEXT + frame_bytes, envelope[sig_start:frame_start]):
        raise BadSignatureError(f"bad frame signature for region {signer!r}")
    frame = decode(frame_bytes)
    if frame.source != signer:
        raise BadSignatureError("frame source differs from its signer")
    if frame.dest != local_region:
        raise WrongDestinationError(f"frame addressed to {frame.dest!r}, not {local_region!r}")
    return frame
