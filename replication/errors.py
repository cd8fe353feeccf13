"""The one error root of ``replication``; each class lives beside the code that raises it.

    ReplicationError
    ├── FrameError (ValueError)        frames: malformed, unknown version or kind, not authentic
    │   ├── UnknownRegionError         the envelope's signer is not a known region
    │   ├── BadSignatureError          the signature does not verify, or the signer is not the source
    │   └── WrongDestinationError      an authentic frame addressed to another region
    ├── MessageError (ValueError)      messages: a body is not its kind's message
    │   ├── UnknownFieldError, MissingFieldError, MistypedFieldError
    ├── ChannelError                   channel: a malformed batch or ack (never retried into success)
    ├── TransportError                 channel: the peer could not be reached (retried with backoff)
    ├── Refused                        sender: the peer answered with a refusal code (backed off, retried)
    ├── ApplyError                     apply: a frame cannot be applied now (rolled back, retried)
    ├── AuthorizeError                 authorize: no authentic answer from the key's region (refuse)
    ├── PromoteRefused                 promote: this key cannot be promoted here (nothing changed)
    ├── ResyncRefused                  resync-iam: not the IAM home region, or an unknown destination
    └── PeersFileError (ValueError)    peers: the peers file or the region's TLS files are unusable

Where a class was a ``ValueError`` it still is, so callers that caught that keep working.
``tests/unit/test_replication_errors.py`` checks that every exception class in ``replication``
descends from ``ReplicationError``.
"""

from __future__ import annotations

__all__ = ["ReplicationError"]


class ReplicationError(Exception):
    """Base of every failure raised by ``replication``."""
