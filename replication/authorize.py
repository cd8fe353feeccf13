"""Asking another region for an authorization decision: a signed query and a signed answer.

Some operations need a permission that is decided in another region. AWS, UpdatePrimaryRegion:
"kms:UpdatePrimaryRegion on the current replica key (in the replica key's Region). Include this
permission in the replica key's key policy." Key policies and grants are per region and never
replicated, so only the replica's region can decide it: the primary asks it, synchronously,
before it changes anything, and refuses the call unless the answer is an authentic "allowed".

Wire format, version 1 (one exchange on the replication channel's mutual-TLS listener):

    request  POST /replication/v1/authorize   body: envelope of an AUTHORIZE_QUERY frame
    response 200                               body: envelope of an AUTHORIZE_ANSWER frame
             4xx                               anything else: the query was refused

Both are ordinary frames (``replication.frames``: canonical msgpack, Ed25519-signed envelope),
not sequenced (``seq`` and ``epoch`` 0); the frame kind keeps a query or an answer from ever
being taken for a replication frame, and the reverse. Bodies:

    query   {"nonce": bin(16), "principal": str, "action": str, "key_id": str,
             "values": {str: [str, ...]}}          # the request's condition values
    answer  {"nonce": bin(16), "allowed": bool}

The answering region checks that the query is signed by the region on the other end of the
TLS connection, is addressed to it and is fresh (``sent_at_ms`` within ``MAX_AGE_S``). The
asking region checks that the answer is signed by the region it asked, addressed to it, and
carries its nonce, so an answer can never be replayed into another question. Any failure --
unreachable, slow, malformed, wrong signer or nonce -- is ``AuthorizeError``, and the caller
fails closed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regiond.crypto.sign import RegionIdentityKey
from replication import frames
from replication.frames import Frame, FrameKind

__all__ = [
    "AUTHORIZE_PATH",
    "MAX_AGE_S",
    "MAX_QUERY_BYTES",
    "AuthorizeError",
    "AuthorizeQuery",
    "answer_envelope",
    "open_answer",
    "open_query",
    "query_envelope",
]

AUTHORIZE_PATH = "/replication/v1/authorize"
MAX_AGE_S = 60.0
MAX_QUERY_BYTES = 64 * 1024
NONCE_BYTES = 16
MAX_VALUES = 64
MAX_TEXT_CHARS = 2048


class AuthorizeError(Exception):
    """No authentic answer: the caller must refuse the operation."""


@dataclass(frozen=True)
class AuthorizeQuery:
    """What the asking region wants decided: may ``principal_arn`` perform ``action`` on ``key_id``
    in the answering region, with these condition ``values``?"""

    source: str
    principal_arn: str
    action: str
    key_id: str
    values: Mapping[str, tuple[str, ...]]
    nonce: bytes


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_CHARS:
        raise AuthorizeError(f"query field {name!r} is missing or malformed")
    return value


def _nonce(body: Mapping[str, Any]) -> bytes:
    nonce = body.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise AuthorizeError("nonce is missing or malformed")
    return nonce


def _values(raw: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or len(raw) > MAX_VALUES:
        raise AuthorizeError("query values are malformed")
    out: dict[str, tuple[str, ...]] = {}
    for key, items in raw.items():
        if not isinstance(key, str) or not isinstance(items, list) or len(items) > MAX_VALUES:
            raise AuthorizeError("query values are malformed")
        if not all(isinstance(v, str) and len(v) <= MAX_TEXT_CHARS for v in items):
            raise AuthorizeError("query values are malformed")
        out[key] = tuple(items)
    return out


def _open(envelope: bytes, keys: Mapping[str, bytes], local_region: str, kind: FrameKind) -> Frame:
    if len(envelope) > MAX_QUERY_BYTES:
        raise AuthorizeError("envelope too large")
    try:
        frame = frames.verify_envelope(envelope, keys, local_region=local_region)
    except frames.FrameError as exc:
        raise AuthorizeError(f"{type(exc).__name__}: {exc}") from None
    if frame.kind is not kind or frame.seq != 0 or frame.epoch != 0:
        raise AuthorizeError(f"expected an unsequenced {kind.name} frame")
    return frame


def query_envelope(
    identity: RegionIdentityKey, *, source: str, dest: str, principal_arn: str, action: str, key_id: str,
    values: Mapping[str, tuple[str, ...]], now_ms: int,
) -> tuple[bytes, bytes]:  # fmt: skip
    """A signed query and its nonce (keep the nonce to check the answer with)."""
    nonce = os.urandom(NONCE_BYTES)
    body = {
        "nonce": nonce, "principal": principal_arn, "action": action, "key_id": key_id,
        "values": {k: list(v) for k, v in values.items()},
    }  # fmt: skip
    frame = Frame(frames.FRAME_VERSION, FrameKind.AUTHORIZE_QUERY, source, dest, 0, 0, body, now_ms)
    return frames.sign_frame(frames.encode(frame), identity), nonce


def open_query(
    envelope: bytes, keys: Mapping[str, bytes], *, local_region: str, peer_region: str | None, now_ms: int
) -> AuthorizeQuery:
    """Verify a query received from ``peer_region`` (the mTLS-authenticated caller)."""
    frame = _open(envelope, keys, local_region, FrameKind.AUTHORIZE_QUERY)
    if peer_region is not None and frame.source != peer_region:
        raise AuthorizeError(f"query from {frame.source} on {peer_region}'s connection")
    if abs(now_ms - frame.sent_at_ms) > MAX_AGE_S * 1000:
        raise AuthorizeError("query is not fresh")
    body = frame.body
    return AuthorizeQuery(
        source=frame.source, principal_arn=_text(body, "principal"), action=_text(body, "action"),
        key_id=_text(body, "key_id"), values=_values(body.get("values")), nonce=_nonce(body),
    )  # fmt: skip


def answer_envelope(identity: RegionIdentityKey, query: AuthorizeQuery, *, local_region: str, allowed: bool,
                    now_ms: int) -> bytes:  # fmt: skip
    body = {"nonce": query.nonce, "allowed": allowed}
    frame = Frame(frames.FRAME_VERSION, FrameKind.AUTHORIZE_ANSWER, local_region, query.source, 0, 0, body, now_ms)
    return frames.sign_frame(frames.encode(frame), identity)


def open_answer(
    envelope: bytes, keys: Mapping[str, bytes], *, local_region: str, asked: str, nonce: bytes
) -> bool:
    """The decision in an answer from ``asked`` to the query that had ``nonce``."""
    frame = _open(envelope, keys, local_region, FrameKind.AUTHORIZE_ANSWER)
    if frame.source != asked:
        raise AuthorizeError(f"answer from {frame.source}, asked {asked}")
    if _nonce(frame.body) != nonce:
        raise AuthorizeError("answer is for another query")
    allowed = frame.body.get("allowed")
    if not isinstance(allowed, bool):
        raise AuthorizeError("answer has no decision")
    return allowed
