"""Random (version 4) UUIDs for request ids and audit event ids, at a fraction of ``uuid.uuid4``'s cost.

Every API call needs two: its ``x-amzn-RequestId`` and its audit ``eventID``. ``str(uuid.uuid4())``
pays for a 16-byte ``os.urandom`` system call, ``UUID.__init__``'s checks and the formatting;
here the random bytes come from ``os.urandom`` in batches of 64 ids and go straight into the
canonical text, dashes included, so taking an id is one ``popleft`` (a fraction of the cost:
benchmarks/README.md, "Design figures"). The ids are the same as
``uuid4``'s: 122 random bits from ``os.urandom``, version 4, RFC 4122 variant, canonical
lowercase form.

Prepared ids wait in a ``deque``: ``popleft`` is atomic, so two threads never get the same one. A
forked child drops its copy, which would otherwise hand out the ids its parent hands out next.
Ids are not secrets (every response carries one), so keeping a few dozen ready is harmless.
"""

from __future__ import annotations

import collections
import os
import uuid

__all__ = ["uuid4", "uuid4_pair", "uuid4_str"]

_BATCH = 64
_VARIANT = {d: "89ab"[int(d, 16) & 0b11] for d in "0123456789abcdef"}  # RFC 4122: top bits 10
_ready: collections.deque[str] = collections.deque()  # canonical text each, version and variant set


def _refill() -> None:
    h = os.urandom(16 * _BATCH).hex()
    _ready.extend(
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{_VARIANT[h[i + 16]]}{h[i + 17 : i + 20]}"
        f"-{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    )


def uuid4_str() -> str:
    """``str(uuid.uuid4())``, cheaper: ``xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx``."""
    while True:
        try:
            return _ready.popleft()
        except IndexError:  # empty (or another thread took the last one first): make more
            _refill()


def uuid4() -> uuid.UUID:
    """``uuid.uuid4()``, from the same prepared random bits."""
    return uuid.UUID(uuid4_str())


def uuid4_pair() -> tuple[uuid.UUID, str]:
    """One new id as a ``UUID`` and as its text (``str(uuid)`` would format it a second time)."""
    text = uuid4_str()
    return uuid.UUID(text), text


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ready.clear)
