"""Failed authentication: bounded metric labels and a per-source throttle.

AWS does not audit a request that fails authentication (CloudTrail records no event without
an identity), and neither do we; what is left is a log line naming the source address and
the access key id the request claimed, a counter per access key id, and a throttle.

**Metric labels** (``key_label``): an attacker chooses the access key ids it sends, so they
cannot all become label values. A failure is labelled with its key id only when that id
names a key that exists (the set operators create), and at most ``MAX_KEY_LABELS`` distinct
ids per process; any other failure is ``unknown`` (well-formed, no such key), ``malformed``
(not IAM's AccessKeyId shape), ``none`` (no Authorization header parsed) or ``other`` (past
the cap).

**The throttle** (``FailureThrottle``) is a token bucket per source: ``burst`` failures, given
back at ``refill_per_s``. Only failures past the parse count (an access key id that does not
exist or is inactive, a wrong signature): that is what guessing looks like, and what the
difference between the answers gives away. While a source's bucket is empty, its requests
that fail that way are answered ``ThrottlingException`` (AWS's throttling error, which SDKs
retry with backoff) instead of their specific error, so the answer stops telling a guessed key
id that exists from one that does not, and they make no database lookup for a key id this
worker has not cached. An unsigned or malformed request reveals nothing and costs no lookup:
it keeps its own error and is not counted. Requests from a throttled source that authenticate
with a cached key are served as usual: a client behind the same NAT as a misconfigured one
keeps working. Memory is bounded (``max_sources`` buckets; the oldest goes first), IPv6
sources count per /64 (one host can hold a whole /64), and each worker process keeps its own
buckets. It is a brake on
guessing from one place, not a defence against a distributed flood (OPERATIONS.md).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

MAX_KEY_LABELS = 1000


class KeyLabels:
    """The bounded set of access key ids used as metric label values in this process."""

    def __init__(self, max_labels: int = MAX_KEY_LABELS) -> None:
        self._max = max_labels
        self._seen: set[str] = set()

    def label(self, access_key_id: str) -> str:
        """``access_key_id`` (of a key that exists) as a label value, or ``other`` past the cap."""
        if access_key_id in self._seen:
            return access_key_id
        if len(self._seen) >= self._max:
            return "other"
        self._seen.add(access_key_id)
        return access_key_id


def source_bucket(source_ip: str) -> str:
    """The throttle's unit for a source address: the address itself, or its /64 for IPv6."""
    if ":" not in source_ip:
        return source_ip
    try:
        address = ipaddress.IPv6Address(source_ip)
    except ValueError:
        return source_ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class FailureThrottle:
    """Token buckets of failed authentications per source; ``burst`` 0 turns throttling off."""

    def __init__(
        self,
        *,
        burst: int,
        refill_per_s: float,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._refill_per_s = refill_per_s
        self._max_sources = max_sources
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, as of)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, source: str, now: float) -> float:
        held = self._buckets.get(source)
        if held is None:
            return self._burst
        tokens, as_of = held
        return min(self._burst, tokens + (now - as_of) * self._refill_per_s)

    def exhausted(self, source_ip: str) -> bool:
        """Whether ``source_ip`` has used up its failures: its next failure is throttled."""
        if not self._burst or not self._buckets:
            return False
        source = source_bucket(source_ip)
        if source not in self._buckets:
            return False
        now = self._clock()
        tokens = self._tokens(source, now)
        if tokens >= self._burst:
            del self._buckets[source]  # refilled: nothing to remember
            return False
        return tokens < 1.0

    def failed(self, source_ip: str) -> bool:
        """Count one failure of ``source_ip``; True when it is the one that empties the bucket."""
        if not self._burst:
            return False
        source = source_bucket(source_ip)
        now = self._clock()
        tokens = self._tokens(source, now)
        if source not in self._buckets and len(self._buckets) >= self._max_sources:
            del self._buckets[next(iter(self._buckets))]
        left = max(0.0, tokens - 1.0)
        self._buckets[source] = (left, now)
        return tokens >= 1.0 > left
