"""Nearest healthy region: probe each region's ``/healthz``, prefer the fastest healthy one.

Probes run at most every ``probe_interval_s``; a region that failed a call is pushed to the
back until a later probe finds it healthy again. The order is: healthy regions by measured
round-trip time, then regions whose health is unknown, then failed ones (still tried last,
because a stale view must never stop the client from trying).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

PROBE_TIMEOUT_S = 2.0
PROBE_INTERVAL_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    region: str
    url: str


@dataclass
class _Health:
    healthy: bool | None = None
    rtt_s: float = float("inf")
    checked_at: float = field(default=-1e18)


class Router:
    def __init__(self, endpoints: list[Endpoint], *, probe_interval_s: float = PROBE_INTERVAL_S) -> None:
        self.endpoints = list(endpoints)
        self._health = {e: _Health() for e in endpoints}
        self._interval = probe_interval_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _probe(self, endpoint: Endpoint) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
        health = self._health[endpoint]
        started = time.perf_counter()
        try:
            async with self._session.get(endpoint.url + "/healthz") as resp:
                health.healthy = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            health.healthy = False
        health.rtt_s = time.perf_counter() - started if health.healthy else float("inf")
        health.checked_at = time.monotonic()

    async def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        stale = [e for e, h in self._health.items() if force or now - h.checked_at > self._interval]
        if stale:
            await asyncio.gather(*(self._probe(e) for e in stale))

    async def ordered(self) -> list[Endpoint]:
        await self.refresh()

        def rank(e: Endpoint) -> tuple[int, float]:
            h = self._health[e]
            return (0 if h.healthy else 1 if h.healthy is None else 2, h.rtt_s)

        return sorted(self.endpoints, key=rank)

    def mark_failed(self, endpoint: Endpoint) -> None:
        h = self._health[endpoint]
        h.healthy = False
        h.rtt_s = float("inf")
        h.checked_at = time.monotonic()

    def mark_ok(self, endpoint: Endpoint) -> None:
        h = self._health[endpoint]
        if not h.healthy:
            h.healthy = True

    def status(self) -> list[dict[str, object]]:
        return [
            {"region": e.region, "url": e.url, "healthy": h.healthy, "rtt_ms": round(h.rtt_s * 1000, 2)}
            for e, h in self._health.items()
        ]
