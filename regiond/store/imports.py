"""Import repository: GetParametersForImport's wrapping keys and tokens, and imported material.

``import_parameters`` rows hold a wrapping key pair's private half sealed under the root key
(only ``regiond.crypto.import_wrap`` opens it) and the token's validity. Imported material
itself goes into ``key_versions`` like any backing version; its ``key_materials`` row (0006)
says whether the bytes are present (``imported``) and when they expire. Deleting or expiring
imported material removes the ``key_versions`` row and keeps the ``key_materials`` row, so the
same material re-imported later lands on the same version number and old ciphertexts, whose
headers name that number, decrypt again.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from regiond.store.pool import Conn

__all__ = [
    "ImportParameters",
    "delete_expired_parameters",
    "delete_material",
    "delete_version",
    "expired_materials",
    "get_parameters",
    "insert_parameters",
    "put_version",
    "set_imported",
    "set_key_expiration",
    "set_pending_import",
]


@dataclass(frozen=True, slots=True)
class ImportParameters:
    token_id: uuid.UUID
    key_id: str
    wrapping_algorithm: str
    wrapping_key_spec: str
    private_key_sealed: bytes
    created_at: dt.datetime
    valid_to: dt.datetime


async def insert_parameters(con: Conn, params: ImportParameters) -> None:
    await con.execute(
        "INSERT INTO import_parameters (token_id, key_id, wrapping_algorithm, wrapping_key_spec,"
        " private_key_sealed, created_at, valid_to) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params.token_id, params.key_id, params.wrapping_algorithm, params.wrapping_key_spec,
        params.private_key_sealed, params.created_at, params.valid_to,
    )  # fmt: skip


def _parameters(row: Any) -> ImportParameters:
    return ImportParameters(
        token_id=row["token_id"],
        key_id=row["key_id"],
        wrapping_algorithm=row["wrapping_algorithm"],
        wrapping_key_spec=row["wrapping_key_spec"],
        private_key_sealed=bytes(row["private_key_sealed"]),
        created_at=row["created_at"],
        valid_to=row["valid_to"],
    )


async def get_parameters(con: Conn, token_id: uuid.UUID) -> ImportParameters | None:
    row = await con.fetchrow(
        "SELECT token_id, key_id, wrapping_algorithm, wrapping_key_spec, private_key_sealed, created_at, valid_to"
        " FROM import_parameters WHERE token_id = $1",
        token_id,
    )
    return _parameters(row) if row is not None else None


async def delete_expired_parameters(con: Conn, before: dt.datetime) -> int:
    """Forget wrapping keys whose tokens expired before ``before``; returns how many."""
    status: str = await con.execute("DELETE FROM import_parameters WHERE valid_to < $1", before)
    return int(status.rsplit(" ", 1)[-1])


async def put_version(con: Conn, key_id: str, version: int, wrapped: bytes, now: dt.datetime) -> None:
    """Store (or re-store, on re-import) the wrapped bytes of an imported version."""
    await con.execute(
        "INSERT INTO key_versions (key_id, version, material_wrapped, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (key_id, version) DO UPDATE SET material_wrapped = EXCLUDED.material_wrapped",
        key_id, version, wrapped, now,
    )  # fmt: skip


async def delete_version(con: Conn, key_id: str, version: int) -> None:
    """Drop the wrapped bytes of ``version`` (the key's ciphertexts of that era stop decrypting)."""
    await con.execute("DELETE FROM key_versions WHERE key_id = $1 AND version = $2", key_id, version)


async def delete_material(con: Conn, key_id: str, version: int) -> None:
    """Forget a material entirely: only for imported material still pending rotation, which no
    ciphertext can name and which AWS says "is not permanently associated with the KMS key"."""
    await delete_version(con, key_id, version)
    await con.execute("DELETE FROM key_materials WHERE key_id = $1 AND version = $2", key_id, version)


async def set_imported(
    con: Conn, key_id: str, version: int, *, expiration_model: str, valid_to: dt.datetime | None,
    description: str | None,
) -> None:  # fmt: skip
    """Mark ``version``'s material present, with this import's expiry; ``description=None`` keeps
    the one given at the last import of the same material (AWS)."""
    await con.execute(
        "UPDATE key_materials SET imported = true, expiration_model = $3, valid_to = $4,"
        " description = coalesce($5, description) WHERE key_id = $1 AND version = $2",
        key_id, version, expiration_model, valid_to, description,
    )  # fmt: skip


async def set_pending_import(con: Conn, key_id: str, version: int) -> None:
    """The bytes of ``version`` are gone (deleted or expired); its id and last expiry stay listed."""
    await con.execute("UPDATE key_materials SET imported = false WHERE key_id = $1 AND version = $2", key_id, version)


async def set_key_expiration(
    con: Conn, key_id: str, expiration_model: str | None, valid_to: dt.datetime | None, now: dt.datetime
) -> None:
    """``KeyMetadata.ExpirationModel``/``ValidTo``: those of the key's current material."""
    await con.execute(
        "UPDATE keys SET expiration_model = $2, valid_to = $3, updated_at = $4 WHERE key_id = $1",
        key_id, expiration_model, valid_to, now,
    )  # fmt: skip


async def expired_materials(con: Conn, now: dt.datetime, *, limit: int) -> list[tuple[str, int]]:
    """(key id, version) of imported material whose ValidTo has passed; key rows locked, rows
    held by a concurrent import skipped for this round."""
    rows = await con.fetch(
        "SELECT m.key_id, m.version FROM key_materials m JOIN keys k ON k.key_id = m.key_id"
        " WHERE m.imported AND m.valid_to IS NOT NULL AND m.valid_to <= $1"
        " ORDER BY m.valid_to LIMIT $2 FOR UPDATE OF k SKIP LOCKED",
        now, limit,
    )  # fmt: skip
    return [(r["key_id"], r["version"]) for r in rows]
