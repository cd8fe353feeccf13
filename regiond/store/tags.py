"""Key tags repository: ``(key_id, tag_key) -> tag_value``; the service enforces AWS's limits."""

from __future__ import annotations

from regiond.store.pool import Conn

__all__ = ["count", "delete", "list_for_key", "upsert"]


async def upsert(con: Conn, key_id: str, tags: list[tuple[str, str]]) -> None:
    """Add tags, replacing the value of a key the resource already has (TagResource semantics)."""
    if not tags:
        return
    await con.executemany(
        "INSERT INTO key_tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3)"
        " ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = EXCLUDED.tag_value",
        [(key_id, k, v) for k, v in tags],
    )


async def delete(con: Conn, key_id: str, tag_keys: list[str]) -> None:
    await con.execute("DELETE FROM key_tags WHERE key_id = $1 AND tag_key = ANY($2::text[])", key_id, tag_keys)


async def count(con: Conn, key_id: str) -> int:
    return int(await con.fetchval("SELECT count(*) FROM key_tags WHERE key_id = $1", key_id))


async def list_for_key(con: Conn, key_id: str, *, after: str | None, limit: int) -> list[tuple[str, str]]:
    rows = await con.fetch(
        "SELECT tag_key, tag_value FROM key_tags WHERE key_id = $1 AND ($2::text IS NULL OR tag_key > $2)"
        " ORDER BY tag_key LIMIT $3",
        key_id, after, limit,
    )  # fmt: skip
    return [(r["tag_key"], r["tag_value"]) for r in rows]
