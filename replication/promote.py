"""Promoting a replica when its primary's region is gone for good (``regiond replication promote``).

AWS's UpdatePrimaryRegion runs in the primary region and needs it reachable; when that region is
lost (its database and backups destroyed, or it will not be back in any useful time), the key set
has no primary: nothing can rotate it, replicate it or move its primary. This is the operator's
disaster path, run in a surviving region that holds a replica, against that region's database:

1. ``probe`` asks the old primary's replication endpoint for a heartbeat over the cluster's mutual
   TLS. Any answer means the region is not lost, and the command refuses unless forced: two
   regions acting as primary of one key would each refuse the other's changes (below) and the key
   set would split.
2. ``promote_key`` in one transaction: the replica becomes the primary (the old primary joins the
   replicas), the key's epoch goes one past the epoch this region holds, and the complete shared
   state (every backing version, the rotation schedule) is queued at the new epoch for every
   other member, the old primary included -- exactly what a new primary sends when it takes over
   after UpdatePrimaryRegion (``replication.apply``).

Fail closed when the old region comes back: its copies **become replicas**. Under the epoch rule
(``replication.apply.epoch_admits``) every frame it queued at the old epoch (a rotation made while
it was cut off, a membership change) is refused by every region that applied the new epoch, and
the first frame it applies from the new primary (the takeover queued here) makes its copy a
replica of the new primary. What it did alone at the old epoch stays in its region only: backing
versions it added remain there (its ciphertexts under them decrypt there and nowhere else), and it
never regains primacy.

The epoch goes up by one, as UpdatePrimaryRegion's does. Promote one replica per key: two regions
promoted for the same key reach the same epoch, refuse each other's frames, and the split is
visible in ``regiond replication status`` (refusals), never silently merged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import structlog

from regiond.domain.key import KeyState, MultiRegionKeyType, Origin
from regiond.store import keys as key_store
from regiond.store import replication as repl_store
from regiond.store.outbox import Outbox, shared_snapshot
from regiond.store.pool import Pool, connection, transaction
from replication.channel import Transport, TransportError
from replication.errors import ReplicationError
from replication.messages import KeyUpdated
from replication.peers import Peer
from replication.sender import FrameBuilder

log = structlog.get_logger("replication.promote")

__all__ = ["PROMOTABLE_STATES", "PromoteRefused", "Promoted", "primary_of", "probe", "promote_key", "replicas_of"]

PROMOTABLE_STATES = frozenset({KeyState.ENABLED, KeyState.DISABLED, KeyState.PENDING_IMPORT})
"""A replica in these states can become the primary. Creating has no material yet; a replica
pending deletion would make a primary pending deletion (cancel the deletion first)."""


class PromoteRefused(ReplicationError):
    """This key cannot be promoted here; the message says why (for the operator)."""


@dataclass(frozen=True)
class Promoted:
    key_id: str
    account: str
    previous_primary: str
    primary: str
    epoch: int
    replicas: tuple[str, ...]
    already: bool = False  # this region was already the primary: nothing changed


async def probe(transport: Transport, builder: FrameBuilder, peer: Peer, *, timeout_s: float) -> str | None:
    """``None`` if ``peer`` does not answer a heartbeat within ``timeout_s``, else what it answered.

    The answer comes over mutual TLS from a server whose certificate names ``peer``'s region, so a
    proxy or a stranger on its address cannot make a lost region look alive (nor the reverse)."""
    try:
        async with asyncio.timeout(timeout_s):
            ack = await transport.send(peer, [builder.heartbeat(peer)])
    except (TransportError, TimeoutError, OSError):
        return None
    return f"applied {ack.applied}" + (f", {ack.error}" if ack.error else "")


async def replicas_of(pool: Pool, primary_region: str) -> list[str]:
    """The multi-region keys this region holds as replicas of ``primary_region``."""
    async with connection(pool) as con:
        return await repl_store.replica_keys_with_primary(con, primary_region)


async def promote_key(
    pool: Pool, outbox: Outbox, key_id: str, *, lost_region: str | None, now: dt.datetime
) -> Promoted:
    """Make this region (``outbox.region``) the primary of ``key_id``; see the module docstring.

    ``lost_region``: refuse unless the key's primary is that region (``--all-from-region``)."""
    here = outbox.region
    async with transaction(pool) as con:
        record = await key_store.get_key(con, key_id, for_update=True)
        if record is None:
            raise PromoteRefused(f"{key_id} does not exist in {here}")
        key = record.key
        config = key.multi_region_configuration
        if config is None:
            raise PromoteRefused(f"{key_id} is not a multi-Region key")
        previous = config.primary_key.region
        replicas = {r.region for r in config.replica_keys}
        if config.key_type is MultiRegionKeyType.PRIMARY:
            epoch = await repl_store.epoch(con, key_id)
            return Promoted(key_id, key.account, here, here, epoch, tuple(sorted(replicas)), already=True)
        if lost_region is not None and previous != lost_region:
            raise PromoteRefused(f"{key_id}'s primary is in {previous}, not {lost_region}")
        if key.key_state not in PROMOTABLE_STATES:
            raise PromoteRefused(f"{key_id} is {key.key_state.value} in {here}; only an Enabled, Disabled or "
                                 "PendingImport replica can become the primary")  # fmt: skip
        epoch = await repl_store.epoch(con, key_id) + 1
        members = sorted((replicas | {previous}) - {here})
        await repl_store.set_mr_config(con, key_id, here, members, now)
        await repl_store.set_epoch(con, key_id, epoch)
        # As a primary taking over after UpdatePrimaryRegion: the complete shared state at the new epoch.
        shared = await shared_snapshot(con, key_id, versions=None if key.origin is Origin.AWS_KMS else [])
        takeover = KeyUpdated(key_id, here, tuple(members), record.current_version, shared)
        await outbox.append_key(con, takeover, epoch=epoch, dests=members)
    log.warning("replication.replica_promoted", key_id=key_id, previous_primary=previous, epoch=epoch)
    return Promoted(key_id, key.account, previous, here, epoch, tuple(members))


async def primary_of(pool: Pool, key_id: str) -> str | None:
    """The primary region of ``key_id`` as this region holds it (``None``: not a multi-region key here)."""
    async with connection(pool) as con:
        record = await key_store.get_key(con, key_id)
    if record is None or record.key.multi_region_configuration is None:
        return None
    return record.key.multi_region_configuration.primary_key.region
