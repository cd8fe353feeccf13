"""The import-expiry sweeper: deletes imported key material whose ValidTo has passed, and
forgets GetParametersForImport wrapping keys whose tokens have expired.

"When the key material expires, AWS KMS deletes the key material and the KMS key becomes
unusable": the material's wrapped bytes are removed from ``key_versions`` (its
``key_materials`` row stays, so the same material can be re-imported onto the same version)
and the key moves to PendingImport (``KeyEvent.MATERIAL_EXPIRED``; PendingDeletion keys keep
their state). After commit no node can use the material: the key NOTIFY drops every cached
copy, and this process's cache is told directly.

Same shape as the deletion sweeper: one transaction per round under a transaction-level
advisory lock, rows ``FOR UPDATE SKIP LOCKED``, time from the injectable clock, and
``run_once(now)`` for tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import structlog

from regiond.background.periodic import run_periodically
from regiond.clock import Clock
from regiond.service.importing import ImportService
from regiond.store import imports as import_store
from regiond.store import locks
from regiond.store.locks import LockId
from regiond.store.pool import Pool, transaction

log = structlog.get_logger(__name__)

__all__ = ["ImportExpirySweeper"]

DEFAULT_INTERVAL_S = 60.0
BATCH = 100
TOKEN_RETENTION = dt.timedelta(hours=1)
"""Expired wrapping keys are kept this much longer, so a late import still gets
ExpiredImportTokenException rather than InvalidImportTokenException."""


class ImportExpirySweeper:
    def __init__(
        self, pool: Pool, importing: ImportService, clock: Clock, *, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self._pool = pool
        self._importing = importing
        self._clock = clock
        self._interval_s = interval_s

    async def run_once(self, now: dt.datetime) -> list[tuple[str, int]]:
        """Expire every material due at ``now``; returns (key id, version) pairs expired."""
        expired: list[tuple[str, int]] = []
        while True:
            batch, full = await self._round(now)
            expired.extend(batch)
            if not full:
                return expired

    async def _round(self, now: dt.datetime) -> tuple[list[tuple[str, int]], bool]:
        done: list[tuple[str, int]] = []
        async with transaction(self._pool) as con:
            if not await locks.try_lock_xact(con, LockId.IMPORT_EXPIRY):
                return done, False
            due = await import_store.expired_materials(con, now, limit=BATCH)
            for key_id, version in due:
                if await self._importing.expire_material(con, key_id, version, now):
                    done.append((key_id, version))
            forgotten = await import_store.delete_expired_parameters(con, now - TOKEN_RETENTION)
        for key_id, _version in done:
            self._importing.invalidate(key_id)
        if forgotten:
            log.info("import.parameters_forgotten", count=forgotten)
        return done, len(due) == BATCH and bool(done)

    async def run(self, stop: asyncio.Event) -> None:
        """A round every ``interval_s`` until ``stop`` is set; a failed round is logged and retried."""
        await run_periodically(
            "import_expiry", self.run_once, clock=self._clock, interval_s=self._interval_s, stop=stop
        )
