"""Readiness: whether this worker can serve a request correctly right now (``GET /readyz``).

Liveness (``/healthz``) says only that the process answers: a load balancer or Kubernetes
restarts a node that fails it. Readiness says whether to send it traffic, and fails while any of
these does not hold, each checked on every probe (names as in the answer's ``checks``):

- ``database``: the pool reaches the region's database within ``PROBE_TIMEOUT_S``;
- ``migrations``: every migration of this build is applied (a node newer than its schema), and none
  that this release cannot serve (``regiond.store.migrate.unservable``: a node older than its schema);
- ``writable``: the database takes writes (not a standby, sessions not read-only); every call
  writes its audit event, and a node pooled onto a demoted primary would fail them all;
- ``audit``: the audit writer runs and its last batch did not fail (``AUDIT_FAILURE_HOLD_S``):
  a call whose event cannot be made durable is refused, so a node that cannot audit cannot serve;
- ``notifications``: the LISTEN connection that invalidates every cache is up (without it a
  revoked grant or a disabled key could be served from cache until the TTL);
- ``caches``: the first preload pass has finished (regiond.service.preload), so first requests
  do not all miss at once.

The answer lists every check (``ok`` or why not) and, when not ready, the first failure as
``reason``; no secret or driver message is included (exception type names only).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from regiond.service.preload import Preloader
from regiond.store import migrate as migrations
from regiond.store.notify import Listener
from regiond.store.pool import Pool, ping, read_only_reason

__all__ = ["AUDIT_FAILURE_HOLD_S", "PROBE_TIMEOUT_S", "Readiness"]

PROBE_TIMEOUT_S = 2.0
"""A probe is answered within about this (a hung database must not hang the probe past its own timeout)."""
AUDIT_FAILURE_HOLD_S = 10.0
"""How long a failed audit batch keeps the node unready."""
OK = "ok"


class _AuditHealth(Protocol):
    def problem(self, hold_s: float) -> str | None: ...


@dataclass
class Readiness:
    pool: Pool
    listener: Listener
    preloader: Preloader
    audit: object | None  # the audit sink; checked when it can say (``problem``), None: audit off

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the answer's body)."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await ping(self.pool)
                checks["database"] = OK
                missing = await migrations.pending(self.pool)
                too_new = await migrations.unservable(self.pool)
                checks["migrations"] = (
                    migrations.unservable_message(too_new) if too_new else f"pending: {missing}" if missing else OK
                )
                checks["writable"] = await read_only_reason(self.pool) or OK
        except TimeoutError:
            checks.setdefault("database", f"no answer within {PROBE_TIMEOUT_S:g} s")
        except Exception as exc:
            checks.setdefault("database", f"unreachable ({type(exc).__name__})")
        audit = self._audit_problem()
        checks["audit"] = audit or OK
        checks["notifications"] = OK if self.listener.connected else "the change notification connection is down"
        checks["caches"] = OK if self.preloader.loaded else "the first preload pass is still running"
        failed = [f"{name}: {state}" for name, state in checks.items() if state != OK]
        body: dict[str, Any] = {"status": "ready" if not failed else "unavailable", "checks": checks}
        if failed:
            body["reason"] = failed[0]
        else:
            body["schema_version"] = migrations.latest_version()
        return not failed, body

    def _audit_problem(self) -> str | None:
        if self.audit is None:
            return None
        problem = getattr(self.audit, "problem", None)
        if problem is None:  # a sink that cannot say (the null sink of benchmarks)
            return None
        health: _AuditHealth = self.audit  # type: ignore[assignment]
        return health.problem(AUDIT_FAILURE_HOLD_S)
