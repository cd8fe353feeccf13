"""The replication outbox: changes other regions must learn, appended in the writer's transaction.

DESIGN section 8. A change to a multi-region key's shared properties or to IAM is appended
here *in the same transaction* as the change itself, so the two commit or roll back together:
no change is ever made without being queued, and nothing is queued that did not happen.

Each destination region has its own contiguous sequence (1, 2, 3 ...). ``append`` takes the
destination's counter row with ``UPDATE ... RETURNING``; the row stays locked until the
appending transaction ends, so a destination's entries commit in sequence order and a sender
that reads ``seq > cursor`` never skips an entry that committed late. Destinations are locked
in sorted order, so two transactions appending to overlapping sets cannot deadlock.

What an entry holds is a ``replication.messages`` message, the body of the frame it becomes,
stored as JSON with no secret in it: key material and access-key secrets are absent, and the
sender reads them, unwrapped with the root key and sealed to the destination with HPKE, at send
time. Key entries with shared state also hold ``versions`` (the backing versions to seal, the
versions of the shared state), which senders of the previous release read. Single-region keys
never enter: ``append`` refuses a key id that is not ``mrk-`` (a ``ValueError``, a caller bug),
and a CHECK constraint in migration 0004 backs that up.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from regiond.domain.ids import KeyIdKind, key_id_kind
from regiond.store.pool import Conn
from replication import messages
from replication.frames import FrameKind
from replication.messages import (
    IamChange,
    KeyDeleted,
    KeyMaterial,
    KeyMessage,
    KeyUpdated,
    Message,
    Rotation,
    SharedState,
    VersionRecord,
)

__all__ = [
    "MAX_BODY_DEPTH",
    "Backlog",
    "KeyMembers",
    "Outbox",
    "OutboxEntry",
    "OutboxKind",
    "append",
    "backlog",
    "delete_acked",
    "hold_dest",
    "key_members",
    "last_seq",
    "read_batch",
    "shared_snapshot",
]

MAX_BODY_DEPTH = 12


class OutboxKind(enum.StrEnum):
    """What an entry records; the sender maps each to a ``replication.frames.FrameKind``."""

    KEY_CREATED = "key_created"  # a replica is created in the destination
    KEY_MATERIAL = "key_material"  # a new backing version (rotation, import) becomes current
    KEY_UPDATED = "key_updated"  # shared metadata changed (replica set, primary confirmed, ...)
    PRIMARY_MOVED = "primary_moved"  # UpdatePrimaryRegion: a new epoch and primary
    KEY_DELETED = "key_deleted"  # a replica was destroyed in the source region
    IAM_CHANGE = "iam_change"  # an IAM row changed in the home region

    @property
    def is_key(self) -> bool:
        return self is not OutboxKind.IAM_CHANGE

    @property
    def frame_kind(self) -> FrameKind:
        return FrameKind[self.name]

    @classmethod
    def of(cls, message: Message) -> OutboxKind:
        return cls[message.KIND.name]


SEAL_VERSIONS = "versions"
"""The outbox-only body key listing the versions to seal (read by senders of the previous release)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    dest: str
    seq: int
    kind: OutboxKind
    epoch: int
    key_id: str | None
    message: Message
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far a destination is behind: entries not yet acknowledged and the oldest one's age."""

    last_seq: int
    entries: int
    oldest_created_at: dt.datetime | None


def _check_json(value: object, depth: int = 0) -> None:
    """Bodies are JSON without floats (frames refuse floats) and without bytes (no secrets)."""
    if depth > MAX_BODY_DEPTH:
        raise ValueError("outbox body nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("outbox body keys must be strings")
            _check_json(v, depth + 1)
        return
    raise ValueError(f"outbox body cannot hold a {type(value).__name__}")


def _require_mrk(key_id: str | None, kind: OutboxKind) -> None:
    if kind.is_key:
        if key_id is None or key_id_kind(key_id) is not KeyIdKind.MULTI_REGION or key_id != key_id.lower():
            # Single-region keys and their material never leave their region (DESIGN section 8).
            raise ValueError("only multi-region (mrk-) keys may enter the replication outbox")
    elif key_id is not None:
        raise ValueError(f"{kind} entries carry no key id")


async def append(
    con: Conn,
    *,
    dests: Iterable[str],
    kind: OutboxKind,
    body: Mapping[str, Any],
    key_id: str | None = None,
    epoch: int = 0,
) -> dict[str, int]:
    """Queue one change for each of ``dests`` inside the caller's transaction; seq per destination.

    Must run inside a transaction (the counter locks are what order the entries). Returns
    ``{dest: seq}``. An empty ``dests`` appends nothing: a region with no peers replicates nothing.
    """
    _require_mrk(key_id, kind)
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    snapshot = dict(body)
    _check_json(snapshot)
    if not con.is_in_transaction():
        raise RuntimeError("outbox.append must run inside the transaction that makes the change")
    out: dict[str, int] = {}
    for dest in sorted(set(dests)):
        seq = await con.fetchval(
            "INSERT INTO replication_dest_seq AS s (dest, last_seq) VALUES ($1, 1)"
            " ON CONFLICT (dest) DO UPDATE SET last_seq = s.last_seq + 1 RETURNING last_seq",
            dest,
        )
        await con.execute(
            "INSERT INTO replication_outbox (dest, seq, kind, epoch, key_id, body) VALUES ($1, $2, $3, $4, $5, $6)",
            dest, seq, kind.value, epoch, key_id, snapshot,
        )  # fmt: skip
        out[dest] = int(seq)
    return out


async def hold_dest(con: Conn, dest: str) -> None:
    """Take ``dest``'s sequence counter lock until the transaction ends, appending nothing: every change
    that queued for ``dest`` before is committed, every later one queues after this transaction's
    entries (what a consistent snapshot sent to ``dest`` needs, ``replication.resync``)."""
    if not con.is_in_transaction():
        raise RuntimeError("outbox.hold_dest must run inside a transaction")
    await con.execute(
        "INSERT INTO replication_dest_seq AS s (dest, last_seq) VALUES ($1, 0)"
        " ON CONFLICT (dest) DO UPDATE SET last_seq = s.last_seq",
        dest,
    )


def _body(message: Message) -> dict[str, Any]:
    body = message.to_body()
    shared = getattr(message, "shared", None)
    if isinstance(shared, SharedState):
        body[SEAL_VERSIONS] = list(shared.versions)
    return body


def _entry(row: Any) -> OutboxEntry:
    kind = OutboxKind(row["kind"])
    body = dict(row["body"])
    body.pop(SEAL_VERSIONS, None)  # the same list as the shared state's versions
    return OutboxEntry(
        dest=row["dest"],
        seq=int(row["seq"]),
        kind=kind,
        epoch=int(row["epoch"]),
        key_id=row["key_id"],
        message=messages.decode(kind.frame_kind, body),
        created_at=row["created_at"],
    )


async def read_batch(con: Conn, dest: str, *, after: int, limit: int) -> list[OutboxEntry]:
    """Entries for ``dest`` with ``seq > after``, in order, at most ``limit``."""
    rows = await con.fetch(
        "SELECT dest, seq, kind, epoch, key_id, body, created_at FROM replication_outbox"
        " WHERE dest = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        dest, after, limit,
    )  # fmt: skip
    return [_entry(r) for r in rows]


async def delete_acked(con: Conn, dest: str, upto: int) -> int:
    """Drop entries the destination has acknowledged (they are applied there, durably)."""
    done: str = await con.execute("DELETE FROM replication_outbox WHERE dest = $1 AND seq <= $2", dest, upto)
    return int(done.rsplit(" ", 1)[-1])


async def last_seq(con: Conn, dest: str) -> int:
    value = await con.fetchval("SELECT last_seq FROM replication_dest_seq WHERE dest = $1", dest)
    return int(value or 0)


async def backlog(con: Conn, dest: str, acked: int) -> Backlog:
    row = await con.fetchrow(
        "SELECT (SELECT last_seq FROM replication_dest_seq WHERE dest = $1) AS last_seq,"
        " (SELECT min(created_at) FROM replication_outbox WHERE dest = $1 AND seq > $2) AS oldest",
        dest, acked,
    )  # fmt: skip
    assert row is not None  # a SELECT of two scalar subqueries always returns one row
    last = int(row["last_seq"] or 0)
    return Backlog(last_seq=last, entries=max(0, last - acked), oldest_created_at=row["oldest"])


class Outbox:
    """A region's view of where its changes go: bound to the region, its peers and the IAM home.

    Services receive one of these (``None`` when the node runs without replication) and call
    ``append_iam`` / ``append_key`` inside their own transactions.
    """

    def __init__(self, *, region: str, peers: Sequence[str], iam_home_region: str | None) -> None:
        self.region = region
        self.peers = tuple(sorted(p for p in peers if p != region))
        self.iam_home_region = iam_home_region or region

    @property
    def is_iam_home(self) -> bool:
        return self.iam_home_region == self.region

    def knows(self, region: str) -> bool:
        return region in self.peers

    async def append_iam(self, con: Conn, change: IamChange) -> dict[str, int]:
        """Queue an IAM change for every peer (only the home region writes IAM)."""
        if not self.is_iam_home:
            raise RuntimeError(f"IAM is written in {self.iam_home_region}, not {self.region}")
        return await append(con, dests=self.peers, kind=OutboxKind.IAM_CHANGE, body=_body(change))

    async def append_key(self, con: Conn, message: KeyMessage, *, epoch: int, dests: Iterable[str]) -> dict[str, int]:
        """Queue a multi-region key change for ``dests`` (unknown regions and this one are skipped)."""
        targets = [d for d in dests if d != self.region and d in self.peers]
        return await append(con, dests=targets, kind=OutboxKind.of(message), body=_body(message),
                            key_id=message.key_id, epoch=epoch)  # fmt: skip

    async def key_material_added(self, con: Conn, key_id: str, version: int) -> dict[str, int]:
        """A new backing version of a multi-region key became current here (rotation, import).

        Call it in the transaction that inserts the version, in the primary region only (replicas
        refuse rotation, as AWS does). The material itself is read and sealed by the sender. Like
        every key entry from the primary, it carries *all* backing versions, so any one of them
        brings a replica that missed something back to the primary's complete state.
        Single-region keys are refused (``ValueError``), so callers may pass any key's id only
        after checking ``key.multi_region``.
        """
        members = await key_members(con, key_id)
        if members is None:
            raise ValueError(f"key {key_id} does not exist")
        if members.primary != self.region:
            raise RuntimeError(f"{key_id}: only the primary region ({members.primary}) adds key material")
        message = KeyMaterial(key_id, version, members.current_version, await shared_snapshot(con, key_id))
        return await self.append_key(con, message, epoch=members.epoch, dests=members.replicas)

    async def key_rotation_changed(self, con: Conn, key_id: str) -> dict[str, int]:
        """The primary's automatic-rotation settings changed (Enable/DisableKeyRotation): the
        replicas take the same schedule (a shared property). Call it in that transaction."""
        members = await key_members(con, key_id)
        if members is None or members.primary != self.region:
            return {}
        message = KeyUpdated(key_id, members.primary, members.replicas, members.current_version,
                             await shared_snapshot(con, key_id))  # fmt: skip
        return await self.append_key(con, message, epoch=members.epoch, dests=members.replicas)

    async def key_destroyed(self, con: Conn, key_id: str) -> dict[str, int]:
        """This region's copy of a multi-region key is being destroyed: tell the other members.

        Call it in the deletion transaction, before the row goes. The primary then drops this
        region from ReplicaKeys (and may start its own deletion, PendingReplicaDeletion).
        """
        members = await key_members(con, key_id)
        if members is None:
            return {}
        others = [r for r in (members.primary, *members.replicas) if r != self.region]
        return await self.append_key(con, KeyDeleted(key_id, self.region), epoch=members.epoch, dests=others)


async def shared_snapshot(con: Conn, key_id: str, *, versions: Sequence[int] | None = None) -> SharedState:
    """The shared state of a multi-region key that travels in key entries beside its material.

    ``versions``: the backing versions whose material the sender must seal into the frame
    (``None``: all of them), with what ListKeyRotations shows of each (rotation type and date);
    the automatic-rotation schedule follows the primary.
    """
    rows = await con.fetch(
        "SELECT v.version, m.rotation_type, m.rotation_date FROM key_versions v"
        " LEFT JOIN key_materials m ON m.key_id = v.key_id AND m.version = v.version"
        " WHERE v.key_id = $1 AND ($2::int[] IS NULL OR v.version = ANY($2::int[])) ORDER BY v.version",
        key_id, None if versions is None else list(versions),
    )  # fmt: skip
    schedule = await con.fetchrow(
        "SELECT enabled, period_days, anchor_date, next_rotation_date FROM key_rotation WHERE key_id = $1", key_id
    )
    return SharedState(
        materials=tuple(VersionRecord(r["version"], r["rotation_type"], r["rotation_date"]) for r in rows),
        rotation=None if schedule is None else Rotation(
            schedule["enabled"], schedule["period_days"], schedule["anchor_date"], schedule["next_rotation_date"]
        ),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeyMembers:
    """Where a multi-region key lives, as this region knows it."""

    primary: str
    replicas: tuple[str, ...]
    epoch: int
    current_version: int | None


async def key_members(con: Conn, key_id: str) -> KeyMembers | None:
    row = await con.fetchrow(
        "SELECT k.region, k.mr_primary_region, k.mr_replica_regions, k.current_version,"
        " coalesce(e.epoch, 1) AS epoch FROM keys k LEFT JOIN mrk_epochs e ON e.key_id = k.key_id"
        " WHERE k.key_id = $1",
        key_id,
    )
    if row is None:
        return None
    primary = row["mr_primary_region"] or row["region"]
    replicas = tuple(sorted(r for r in (row["mr_replica_regions"] or []) if r != primary))
    return KeyMembers(primary, replicas, int(row["epoch"]), row["current_version"])
