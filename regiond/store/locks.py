"""Every PostgreSQL advisory lock regionkms takes, named, in one place.

Advisory locks elect the one runner of region-wide work when several nodes and workers share
a database (DESIGN section 9). PostgreSQL keeps two lock key spaces apart, and both are used:

    one bigint (LockId, 0x726B6D73_NN: "rkms" + NN), transaction-scoped
        01  MIGRATIONS          every migrating node, blocking (store/migrate.py)
        02  DELETION_SWEEPER    one sweep at a time (background/sweeper.py)
        03  ROTATION_SCHEDULER  one scheduler round at a time (background/rotation_scheduler.py)
        04  IMPORT_EXPIRY       one import-expiry sweep at a time (background/import_expiry.py)
    one bigint hashed from a name (``hashtextextended(name, 0)``), transaction-scoped
        "aws-managed:<account>:<service>"  two first uses make one AWS managed key (service/keys.py)
    two int4s (SENDER_LOCK_CLASS = "rkms", crc32 of the destination), session-scoped
        one replication sender per destination region (replication/sender.py), held while it streams

A new lock takes the next ``LockId`` number (never reuse one: an old node would contend with
it during a rolling upgrade) or a new name prefix, and a line here.
"""

from __future__ import annotations

import enum
import zlib

from regiond.store.pool import Conn

__all__ = [
    "SENDER_LOCK_CLASS",
    "LockId",
    "lock_name",
    "lock_xact",
    "sender_lock_key",
    "sender_unlock",
    "try_lock_xact",
    "try_sender_lock",
]


class LockId(enum.IntEnum):
    MIGRATIONS = 0x72_6B_6D_73_01
    DELETION_SWEEPER = 0x72_6B_6D_73_02
    ROTATION_SCHEDULER = 0x72_6B_6D_73_03
    IMPORT_EXPIRY = 0x72_6B_6D_73_04


SENDER_LOCK_CLASS = 0x726B6D73
"""The first int4 of a replication sender's lock ("rkms"); the second is ``sender_lock_key``."""


async def try_lock_xact(con: Conn, lock: LockId) -> bool:
    """``pg_try_advisory_xact_lock``: true if this transaction now holds ``lock``."""
    return bool(await con.fetchval("SELECT pg_try_advisory_xact_lock($1)", int(lock)))


async def lock_xact(con: Conn, lock: LockId) -> None:
    """``pg_advisory_xact_lock``: wait until this transaction holds ``lock``."""
    await con.execute("SELECT pg_advisory_xact_lock($1)", int(lock))


async def lock_name(con: Conn, name: str) -> None:
    """A transaction-scoped advisory lock on an arbitrary name (e.g. one AWS managed key)."""
    await con.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name)


def sender_lock_key(dest: str) -> int:
    """The second half of a sender's advisory lock: a stable signed int4 from the destination."""
    value = zlib.crc32(dest.encode())
    return value - 2**32 if value >= 2**31 else value


async def try_sender_lock(con: Conn, dest: str) -> bool:
    """Take the session lock of the sender to ``dest`` on ``con`` if no one holds it."""
    return bool(await con.fetchval("SELECT pg_try_advisory_lock($1, $2)", SENDER_LOCK_CLASS, sender_lock_key(dest)))


async def sender_unlock(con: Conn, dest: str) -> None:
    await con.execute("SELECT pg_advisory_unlock($1, $2)", SENDER_LOCK_CLASS, sender_lock_key(dest))
