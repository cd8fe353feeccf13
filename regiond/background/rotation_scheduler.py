"""The rotation scheduler: rotates keys whose NextRotationDate has passed, and finishes accepted
on-demand rotations whose request did not (a node that died between RotateKeyOnDemand's steps).

One round runs in one transaction holding a transaction-level advisory lock, so one node of
a region schedules at a time and the others skip the round (the deletion sweeper's pattern).
Due key rows are taken ``FOR UPDATE SKIP LOCKED``: a key whose row a request holds (an
on-demand rotation, a DisableKey) waits for the next round. Each key's rotation runs in its own
savepoint, so a key that fails (logged) does not undo the others; every rotation commits with
the round, all-or-nothing per key (``store.rotation.add_backing_version``).

Only Enabled keys rotate: AWS does not rotate a Disabled key, and once it is enabled again a
NextRotationDate in the past makes it due at once. Pending deletion keys are skipped too.
AWS managed keys are on the schedule from creation with a 365-day period.

Time comes from the injectable clock; tests call ``run_once(now)`` with a future ``now``
(moving a node's clock by days would break SigV4's skew check for its clients).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import structlog

from regiond.background.periodic import run_periodically
from regiond.clock import Clock
from regiond.errors import KmsError
from regiond.service.rotation import RotationService
from regiond.store import keys as key_store
from regiond.store import locks
from regiond.store import rotation as rotation_store
from regiond.store.locks import LockId
from regiond.store.pool import Pool, transaction
from regiond.store.rotation import RotationType

log = structlog.get_logger(__name__)

__all__ = ["Rotated", "RotationScheduler"]

DEFAULT_INTERVAL_S = 300.0
BATCH = 100


@dataclass(frozen=True, slots=True)
class Rotated:
    key_id: str
    version: int
    rotation_type: RotationType


class RotationScheduler:
    def __init__(
        self, pool: Pool, rotation: RotationService, clock: Clock, *, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self._pool = pool
        self._rotation = rotation
        self._clock = clock
        self._interval_s = interval_s

    async def run_once(self, now: dt.datetime) -> list[Rotated]:
        """Rotate every key due at ``now``; [] if another node holds the lock this round."""
        done: list[Rotated] = []
        while True:
            batch, full = await self._round(now)
            done.extend(batch)
            if not full:
                return done

    async def _round(self, now: dt.datetime) -> tuple[list[Rotated], bool]:
        done: list[Rotated] = []
        async with transaction(self._pool) as con:
            if not await locks.try_lock_xact(con, LockId.ROTATION_SCHEDULER):
                return done, False
            due = await rotation_store.due_for_rotation(con, now, limit=BATCH)
            for key_id, rotation_type in due:
                try:
                    async with con.transaction():  # a savepoint: this key's rotation or nothing
                        record = await key_store.get_key(con, key_id, for_update=True)
                        if record is None:
                            continue
                        version = await self._rotation.rotate_locked(con, record, now, rotation_type)
                except KmsError as exc:
                    # A refusal will not change by retrying (e.g. the imported material an accepted
                    # on-demand rotation was for was deleted meanwhile): drop the on-demand marker.
                    log.warning("rotation.refused", key_id=key_id, rotation_type=rotation_type.value, error=exc.code)
                    if rotation_type is RotationType.ON_DEMAND:
                        async with con.transaction():
                            await rotation_store.clear_on_demand(con, key_id, now)
                    continue
                except Exception:
                    log.exception("rotation.failed", key_id=key_id, rotation_type=rotation_type.value)
                    continue
                done.append(Rotated(key_id, version, rotation_type))
        for rotated in done:
            self._rotation.invalidate(rotated.key_id)
        # A full batch may hide more due keys; failed keys stay due, so stop when none succeeded.
        return done, len(due) == BATCH and bool(done)

    async def run(self, stop: asyncio.Event) -> None:
        """A round every ``interval_s`` until ``stop`` is set; a failed round is logged and retried."""
        await run_periodically("rotation", self.run_once, clock=self._clock, interval_s=self._interval_s, stop=stop)
