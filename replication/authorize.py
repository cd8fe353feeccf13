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
being taken for a replication frame, and the reverse. Their bodies are the messages
``messages.AuthorizeQuery`` (a 16-byte nonce, principal, action, key id and the request's
condition values) and ``messages.AuthorizeAnswer`` (the nonce and the decision).

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
from typing import TypeVar

from regiond.crypto.sign import RegionIdentityKey
from replication import frames, messages
from replication.errors import ReplicationError
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

M = TypeVar("M", messages.AuthorizeQuery, messages.AuthorizeAnswer)


class AuthorizeError(ReplicationError):
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


def _message(frame: Frame, kind: type[M]) -> M:
    try:
        message = messages.decode(frame.kind, frame.body)
    except messages.MessageError as exc:
        raise AuthorizeError(str(exc)[:300]) from None
    assert isinstance(message, kind)
    if len(message.nonce) != NONCE_BYTES:
        raise AuthorizeError("nonce is malformed")
    return message


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


def _signed(identity: RegionIdentityKey, message: messages.Message, source: str, dest: str, now_ms: int) -> bytes:
    frame = Frame(frames.FRAME_VERSION, message.KIND, source, dest, 0, 0, message.to_body(), now_ms)
    return frames.sign_frame(frames.encode(frame), identity)


def query_envelope(
    identity: RegionIdentityKey, *, source: str, dest: str, principal_arn: str, action: str, key_id: str,
    values: Mapping[str, tuple[str, ...]], now_ms: int,
) -> tuple[bytes, bytes]:  # fmt: skip
    """A signed query and its nonce (keep the nonce to check the answer with)."""
    nonce = os.urandom(NONCE_BYTES)
    query = messages.AuthorizeQuery(
        nonce=nonce, principal=principal_arn, action=action, key_id=key_id,
        values=tuple(messages.ConditionValue(k, tuple(v)) for k, v in values.items()),
    )  # fmt: skip
    return _signed(identity, query, source, dest, now_ms), nonce


def open_query(
    envelope: bytes, keys: Mapping[str, bytes], *, local_region: str, peer_region: str | None, now_ms: int
) -> AuthorizeQuery:
    """Verify a query received from ``peer_region`` (the mTLS-authenticated caller)."""
    frame = _open(envelope, keys, local_region, FrameKind.AUTHORIZE_QUERY)
    if peer_region is not None and frame.source != peer_region:
        raise AuthorizeError(f"query from {frame.source} on {peer_region}'s connection")
    if abs(now_ms - frame.sent_at_ms) > MAX_AGE_S * 1000:
        raise AuthorizeError("query is not fresh")
    query = _message(frame, messages.AuthorizeQuery)
    texts = (query.principal, query.action, query.key_id)
    if not all(0 < len(t) <= MAX_TEXT_CHARS for t in texts) or len(query.values) > MAX_VALUES:
        raise AuthorizeError("query fields are out of bounds")
    values: dict[str, tuple[str, ...]] = {}
    for item in query.values:
        if len(item.values) > MAX_VALUES or any(len(v) > MAX_TEXT_CHARS for v in (item.key, *item.values)):
            raise AuthorizeError("query values are out of bounds")
        values[item.key] = item.values
    return AuthorizeQuery(
        source=frame.source, principal_arn=query.principal, action=query.action, key_id=query.key_id,
        values=values, nonce=query.nonce,
    )  # fmt: skip


def answer_envelope(identity: RegionIdentityKey, query: AuthorizeQuery, *, local_region: str, allowed: bool,
                    now_ms: int) -> bytes:  # fmt: skip
    answer = messages.AuthorizeAnswer(nonce=query.nonce, allowed=allowed)
    return _signed(identity, answer, local_region, query.source, now_ms)


def open_answer(
    envelope: bytes, keys: Mapping[str, bytes], *, local_region: str, asked: str, nonce: bytes
) -> bool:
    """The decision in an answer from ``asked`` to the query that had ``nonce``."""
    frame = _open(envelope, keys, local_region, FrameKind.AUTHORIZE_ANSWER)
    if frame.source != asked:
        raise AuthorizeError(f"answer from {frame.source}, asked {asked}")
    answer = _message(frame, messages.AuthorizeAnswer)
    if answer.nonce != nonce:
        raise AuthorizeError("answer is for another query")
    return answer.allowed
