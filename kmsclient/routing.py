"""Which regions may serve a key, nearest first.

Where a key lives decides where it may be used (``place``):

- a single-region key (a key ARN, an alias ARN, a bare key id, an alias name) exists in one region
  only: the ARN's region, or for a bare id or alias the configured home region. Its calls go there
  and nowhere else, so its data keys never travel to another region.
- a multi-region key (``mrk-``, bare or as a key ARN) has replicas: any region holding one may
  serve it, nearest first. The ARN is rewritten to the serving region (``arn:aws:kms:R:...``), as
  the AWS Encryption SDK's MRK-aware keyrings do. A region that answers NotFoundException for it
  holds no replica and is skipped for that key for ``no_replica_ttl_s``.

Nearest is measured: each region's latency is a moving average (EWMA) of ``/healthz`` probes and
of the observed latency of real calls. A region whose call failed is set aside with an exponential
backoff and retried after it; probes run again every ``probe_interval_s`` in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kmsclient.errors import ConfigurationError, KmsClientError, NoRegionAvailableError
from kmsclient.transport import Transport

PROBE_TIMEOUT_S = 2.0
PROBE_INTERVAL_S = 15.0
SMOOTHING = 0.3
FAILURE_BACKOFF_S = 1.0
FAILURE_BACKOFF_CAP_S = 30.0
NO_REPLICA_TTL_S = 60.0

_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<resource>.+)$")
_MRK = re.compile(r"^mrk-[0-9a-f]{32}$")


@dataclass(frozen=True)
class Endpoint:
    region: str
    url: str


@dataclass(frozen=True)
class KeyRef:
    """A parsed KMS key identifier (AWS's four forms)."""

    raw: str
    region: str | None  # from the ARN, None for bare ids and alias names
    resource_type: str  # "key" or "alias"
    resource_id: str
    partition: str = "aws"
    account: str | None = None

    @property
    def is_arn(self) -> bool:
        return self.region is not None

    @property
    def multi_region(self) -> bool:
        return self.resource_type == "key" and bool(_MRK.match(self.resource_id))

    def in_region(self, region: str) -> str:
        """This identifier as it must be sent to ``region``: an mrk ARN gets that region."""
        if self.is_arn and self.multi_region and region != self.region:
            return f"arn:{self.partition}:kms:{region}:{self.account}:key/{self.resource_id}"
        return self.raw


def parse_key_id(key_id: str) -> KeyRef:
    if not key_id or len(key_id) > 2048:
        raise ConfigurationError("a key identifier is 1 to 2048 characters")
    m = _ARN.match(key_id)
    if m:
        kind, sep, rid = m["resource"].partition("/")
        if not sep or kind not in ("key", "alias") or not rid:
            raise ConfigurationError(f"not a KMS key or alias ARN: {key_id[:120]!r}")
        return KeyRef(key_id, m["region"], kind, rid if kind == "key" else f"alias/{rid}", m["partition"], m["account"])
    if key_id.startswith("arn:"):
        raise ConfigurationError(f"not a KMS key or alias ARN: {key_id[:120]!r}")
    if key_id.startswith("alias/"):
        return KeyRef(key_id, None, "alias", key_id)
    return KeyRef(key_id, None, "key", key_id)


@dataclass(frozen=True)
class Placement:
    """Where a key's calls may go, in the order they will be tried, and why."""

    key: KeyRef
    regions: tuple[str, ...]
    reason: str

    def key_id_in(self, region: str) -> str:
        return self.key.in_region(region)


@dataclass
class _Health:
    healthy: bool | None = None
    latency_s: float = math.inf  # EWMA
    failures: int = 0
    down_until: float = 0.0
    probed_at: float = -math.inf

    def observe(self, seconds: float) -> None:
        self.latency_s = (
            seconds if math.isinf(self.latency_s) else (1 - SMOOTHING) * self.latency_s + SMOOTHING * seconds
        )


@dataclass
class Router:
    endpoints: list[Endpoint]
    home_region: str
    transport: Transport
    probe_interval_s: float = PROBE_INTERVAL_S
    no_replica_ttl_s: float = NO_REPLICA_TTL_S
    clock: Callable[[], float] = time.monotonic
    _health: dict[str, _Health] = field(init=False)
    _by_region: dict[str, Endpoint] = field(init=False)
    _no_replica: dict[tuple[str, str], float] = field(init=False, default_factory=dict)
    _refreshing: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ConfigurationError("at least one endpoint is needed")
        self._by_region = {e.region: e for e in self.endpoints}
        self._health = {e.region: _Health() for e in self.endpoints}
        if self.home_region not in self._by_region:
            raise ConfigurationError(f"the home region {self.home_region} has no endpoint")

    def endpoint(self, region: str) -> Endpoint:
        try:
            return self._by_region[region]
        except KeyError:
            raise ConfigurationError(f"no endpoint is configured for region {region}") from None

    @property
    def regions(self) -> list[str]:
        return list(self._by_region)

    # --- measuring ------------------------------------------------------------------------------

    async def _probe(self, endpoint: Endpoint) -> None:
        health = self._health[endpoint.region]
        started = self.clock()
        try:
            status, _ = await self.transport.send("GET", endpoint.url + "/healthz", {}, b"", timeout_s=PROBE_TIMEOUT_S)
            ok = status == 200
        except KmsClientError:
            ok = False
        health.probed_at = self.clock()
        if ok:
            health.observe(health.probed_at - started)
            health.healthy = True
            health.failures = 0
            health.down_until = 0.0
        else:
            self._set_down(health)

    async def refresh(self, *, force: bool = False) -> None:
        """Probe every region whose measurement is older than the probe interval (all, with ``force``)."""
        now = self.clock()
        stale = [e for e in self.endpoints if force or now - self._health[e.region].probed_at > self.probe_interval_s]
        if stale:
            await asyncio.gather(*(self._probe(e) for e in stale))

    async def _ensure_measured(self) -> None:
        if any(math.isinf(h.probed_at) for h in self._health.values()):
            await self.refresh()
        elif self._refreshing is None or self._refreshing.done():
            now = self.clock()
            if any(now - h.probed_at > self.probe_interval_s for h in self._health.values()):
                self._refreshing = asyncio.get_running_loop().create_task(self.refresh())

    def observe(self, region: str, seconds: float) -> None:
        """A call to ``region`` was answered after ``seconds``."""
        health = self._health[region]
        health.observe(seconds)
        health.healthy = True
        health.failures = 0
        health.down_until = 0.0

    def _set_down(self, health: _Health) -> None:
        health.healthy = False
        health.failures += 1
        health.down_until = self.clock() + min(FAILURE_BACKOFF_CAP_S, FAILURE_BACKOFF_S * 2 ** (health.failures - 1))

    def mark_failed(self, region: str) -> None:
        self._set_down(self._health[region])

    def mark_no_replica(self, key: KeyRef, region: str) -> None:
        self._no_replica[(key.resource_id, region)] = self.clock() + self.no_replica_ttl_s

    # --- ordering -------------------------------------------------------------------------------

    def nearest_first(self, regions: list[str] | None = None) -> list[str]:
        now = self.clock()

        def rank(region: str) -> tuple[int, float]:
            h = self._health[region]
            if h.healthy is False and h.down_until > now:
                return (2, h.down_until)
            return (0 if h.healthy else 1, h.latency_s)

        return sorted(regions if regions is not None else self.regions, key=rank)

    async def place(self, key_id: str, *, mrk_aware: bool = True) -> Placement:
        key = parse_key_id(key_id)
        if key.multi_region and mrk_aware:
            await self._ensure_measured()
            now = self.clock()
            holding = [r for r in self.regions if self._no_replica.get((key.resource_id, r), 0.0) <= now]
            if key.is_arn and key.region in self._by_region and key.region not in holding:
                holding.append(key.region)  # the named region is always worth a last try
            if not holding:
                raise NoRegionAvailableError(f"no configured region holds a replica of {key.resource_id}")
            return Placement(key, tuple(self.nearest_first(holding)), "multi-region key: nearest region holding it")
        region = key.region or self.home_region
        self.endpoint(region)
        if key.multi_region:
            why = "multi-region key, strict keyring: the region of its ARN only"
        elif key.resource_type == "alias":
            why = "alias: the region of its ARN only" if key.is_arn else "alias: the home region only (per region)"
        else:
            why = "single-region key: its own region only" + ("" if key.is_arn else " (a bare id: the home region)")
        return Placement(key, (region,), why)

    async def ordered(self) -> list[str]:
        """Every region, nearest first (for calls that name no key)."""
        await self._ensure_measured()
        return self.nearest_first()

    def status(self) -> list[dict[str, object]]:
        now = self.clock()
        return [
            {
                "region": e.region,
                "url": e.url,
                "healthy": self._health[e.region].healthy,
                "latency_ms": None
                if math.isinf(self._health[e.region].latency_s)
                else round(self._health[e.region].latency_s * 1000, 2),
                "retry_in_s": round(max(0.0, self._health[e.region].down_until - now), 1) or None,
                "home": e.region == self.home_region,
            }
            for e in self.endpoints
        ]

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
            self._refreshing = None
