"""Re-wrapping a region's sealed values under its active root key version (``regiond rotate-root-key``).

Runs beside serving nodes: each value is opened with whichever version sealed it, sealed again
under the active one and written back by compare-and-set (regiond/store/sealed.py), so a value
that a node changed meanwhile (a rotation, a new access key) is neither lost nor overwritten; it
is looked at again in the next pass. Passes repeat until one finds nothing left, and then once
more after a pause: a node that had not yet seen the new keyring file when it sealed a value may
commit it under the old version after a pass went by (regiond/crypto/keyring.py:
``FileRootKeyring`` re-reads the file before sealing, so that window is one transaction long).

Every step is idempotent: a run that is stopped anywhere (a crash, a lost connection) has
committed whole batches only, and a new run starts from what is still not under the active
version. The secret values pass through this process's memory only, never a log line, the
progress lines or the report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from regiond.crypto import wrap
from regiond.crypto.keyring import AesRootKeyring, KeyringError, sealed_prefix
from regiond.store import sealed
from regiond.store.pool import Pool

log = structlog.get_logger(__name__)

__all__ = ["Progress", "RewrapReport", "remaining", "rewrap_database"]

MAX_PASSES = 20
SETTLE_S = 1.0  # the pause before the pass that confirms nothing was sealed under an old version meanwhile

Progress = Callable[[str, str, int, int], None]
"""Called after each batch: (table, what happened, values re-wrapped in it so far, values to do at the pass's start)."""


@dataclass
class RewrapReport:
    rewrapped: dict[str, int] = field(default_factory=dict)  # per table
    unreadable: dict[str, int] = field(default_factory=dict)  # values no version of the keyring opens
    passes: int = 0
    remaining: dict[str, int] = field(default_factory=dict)  # not under the active version at the end

    @property
    def complete(self) -> bool:
        return not any(self.remaining.values())


def _aad(row: sealed.SealedRow) -> bytes:
    table = row.column.table
    if table == "key_versions":
        key_id, version = row.key
        return wrap.backing_key_aad(str(key_id), int(version))
    if table == "access_keys":
        return wrap.access_key_aad(str(row.key[0]))
    if table == "import_parameters":
        return wrap.private_key_aad(str(row.extra["key_id"]), str(row.key[0]))
    raise ValueError(f"no AAD known for {table}")


async def _one_pass(
    pool: Pool, keyring: AesRootKeyring, batch_size: int, report: RewrapReport, progress: Progress | None
) -> int:
    """Re-seal every value not under the active version once; how many were re-sealed."""
    prefix = sealed_prefix(keyring.active_version)
    to_do = await sealed.count_not_under(pool, prefix)
    stored_in_pass = 0
    for col in sealed.SEALED_COLUMNS:
        if not to_do.get(col.table):
            continue
        after: tuple[object, ...] | None = None
        done = 0
        while True:
            rows = await sealed.rows_not_under(pool, col, prefix, after, batch_size)
            if not rows:
                break
            after = rows[-1].key
            updates = []
            for row in rows:
                aad = _aad(row)
                try:
                    secret = keyring.unwrap(row.sealed, aad)
                except KeyringError:
                    report.unreadable[col.table] = report.unreadable.get(col.table, 0) + 1
                    log.error("root_key.value_unreadable", table=col.table, row=[str(k) for k in row.key])
                    continue
                updates.append((row, keyring.wrap(secret, aad)))
                del secret
            if updates:
                stored = await sealed.write_back(pool, updates)
                done += stored
                report.rewrapped[col.table] = report.rewrapped.get(col.table, 0) + stored
            if progress is not None:
                progress(col.table, "re-wrapped", done, to_do[col.table])
        stored_in_pass += done
    return stored_in_pass


async def rewrap_database(
    pool: Pool, keyring: AesRootKeyring, *, batch_size: int = 200, progress: Progress | None = None
) -> RewrapReport:
    """Re-seal every sealed value of the region's database under ``keyring``'s active version."""
    report = RewrapReport()
    settled = False
    while report.passes < MAX_PASSES:
        report.passes += 1
        report.unreadable.clear()
        stored = await _one_pass(pool, keyring, batch_size, report, progress)
        if stored:
            settled = False
            continue
        if settled:
            break  # two passes in a row, a pause apart, found nothing (or only what nothing opens)
        settled = True
        await asyncio.sleep(SETTLE_S)
    report.remaining = await remaining(pool, keyring)
    return report


async def remaining(pool: Pool, keyring: AesRootKeyring) -> dict[str, int]:
    """Per table, the values not (yet) sealed under the active version."""
    return await sealed.count_not_under(pool, sealed_prefix(keyring.active_version))
