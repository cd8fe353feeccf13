"""Key policies repository: the ``policy`` column of ``keys`` (migration 0002).

A key has exactly one key policy, named ``default`` (AWS). Writing it updates the key row, so
the ``regionkms_keys`` NOTIFY trigger of migration 0002 tells every process of the region to
drop its cached key, whose parsed policy the authorizer reads.
"""

from __future__ import annotations

import datetime as dt

from regiond.store.pool import Conn

__all__ = ["get_policy", "set_policy"]


async def get_policy(con: Conn, key_id: str) -> str | None:
    """The key policy document as it was stored (the caller's text, byte for byte)."""
    value = await con.fetchval("SELECT policy FROM keys WHERE key_id = $1", key_id)
    return str(value) if value is not None else None


async def set_policy(con: Conn, key_id: str, document: str, now: dt.datetime) -> None:
    await con.execute("UPDATE keys SET policy = $2, updated_at = $3 WHERE key_id = $1", key_id, document, now)
