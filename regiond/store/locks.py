"""Every PostgreSQL advisory lock regionkms takes, named, in one place.

Advisory locks elect the one runner of region-wide work when several nodes and workers share
a database (DESIGN section 9). PostgreSQL keeps two lock key spaces apart, and both are used:

    one bigint (LockId, 0x726B6D73_NN: "rkms" + NN), transaction-scoped
        01  MIGRATIONS          every migrating node, blocking (store/migrate.py)
        02  DELETION_SWEEPER    one sweep at a time (background/sweeper.py)
        03  ROTATION_SCHEDULER  one scheduler round at a time (background/rotation_scheduler.py)
        04  IMPORT_EXPIRY       one import-expiry sweep at a time (background/import_expiry.py)
        09  AUDIT_DIGEST        one audit v2 digest at a time (audit/digests.py)
    one bigint (LockId, as above), session-scoped on a dedicated connection: the leader of a task
        05  LEAD_DELETION_SWEEPER    the one runner of the deletion sweeper in the region
        06  LEAD_ROTATION_SCHEDULER  the one runner of the rotation scheduler
        07  LEAD_IMPORT_EXPIRY       the one runner of the import-expiry sweeper
        08  LEAD_AUDIT_DIGESTS       the one signer of the region's audit v2 digests (audit/digests.py)
        (``LEADER_LOCKS`` names them by task; background/leadership.py holds them.) A leader lock
        is not its task's round lock: session and transaction locks on one key exclude each
        other, so the leader's own rounds would skip themselves.
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

import asyncpg

from regiond.store.pool import Conn, connect

__all__ = [
    "APPLICATION_NAME_CHARS",
    "LEADER_LOCKS",
    "SENDER_LOCK_CLASS",
    "LockId",
    "SessionLocks",
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
    LEAD_DELETION_SWEEPER = 0x72_6B_6D_73_05
    LEAD_ROTATION_SCHEDULER = 0x72_6B_6D_73_06
    LEAD_IMPORT_EXPIRY = 0x72_6B_6D_73_07
    LEAD_AUDIT_DIGESTS = 0x72_6B_6D_73_08
    AUDIT_DIGEST = 0x72_6B_6D_73_09


LEADER_LOCKS: dict[str, LockId] = {
    "deletion-sweeper": LockId.LEAD_DELETION_SWEEPER,
    "rotation-scheduler": LockId.LEAD_ROTATION_SCHEDULER,
    "import-expiry-sweeper": LockId.LEAD_IMPORT_EXPIRY,
    "audit-digests": LockId.LEAD_AUDIT_DIGESTS,
}
"""The session lock whose holder runs each region-wide background task (background/leadership.py)."""


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


# Keepalives on a leader's lock connection, so that the server ends the session of a holder
# whose machine vanished (no FIN: power loss, a partition) and frees its locks after about
# idle + interval * count = 10 + 3 * 3 = 19 s; a process that dies is noticed at once (its
# kernel closes the socket). Per-session settings any user may set. This is the server's side; the
# node's side of every connection has its own keepalives (store.pool.KEEPALIVE), so a lock session
# whose server vanished is noticed by its holder too.
APPLICATION_NAME_CHARS = 63  # PostgreSQL truncates application_name at NAMEDATALEN - 1
LEADER_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "3", "tcp_keepalives_count": "3"}


class SessionLocks:
    """A dedicated connection holding session-level advisory locks: a pooled one would not do.

    asyncpg resets a connection returned to its pool with ``pg_advisory_unlock_all()``, and the
    pool may close it at any time; a leader's lock must live exactly as long as its session, so
    that the session's end (the process died, the connection broke) is what frees it. Its
    ``application_name`` names the holder in ``pg_stat_activity``.
    """

    def __init__(self, database_url: str, application_name: str) -> None:
        self._url = database_url
        self._name = application_name[:APPLICATION_NAME_CHARS]
        self._con: asyncpg.Connection[asyncpg.Record] | None = None

    async def connect(self, timeout_s: float) -> None:
        self._con = await connect(
            self._url, timeout_s=timeout_s, server_settings={"application_name": self._name, **LEADER_KEEPALIVES}
        )

    def _live(self) -> asyncpg.Connection[asyncpg.Record]:
        if self._con is None or self._con.is_closed():
            raise ConnectionError("the lock connection is closed")
        return self._con

    async def try_lock(self, lock: LockId, timeout_s: float) -> bool:
        """``pg_try_advisory_lock``: true if this session now holds ``lock`` (it may already have)."""
        return bool(await self._live().fetchval("SELECT pg_try_advisory_lock($1)", int(lock), timeout=timeout_s))

    async def unlock(self, lock: LockId, timeout_s: float) -> None:
        await self._live().fetchval("SELECT pg_advisory_unlock($1)", int(lock), timeout=timeout_s)

    async def ping(self, timeout_s: float) -> None:
        """One round trip: the session, and with it every lock it holds, is still there."""
        await self._live().fetchval("SELECT 1", timeout=timeout_s)

    async def close(self) -> None:
        """End the session, which frees its locks (at once, or when the server notices a broken link)."""
        con, self._con = self._con, None
        if con is None or con.is_closed():
            return
        try:
            await con.close(timeout=2)
        except Exception:  # a server that does not answer cannot take part in a clean close
            con.terminate()
