"""Sending a region the home region's complete IAM (``regiond replication resync-iam --to R``).

IAM replicates as it changes: each write in the IAM home region queues its change for every peer
the writing node knows. A region added to a running cluster therefore receives the changes made
after every home node has loaded the new peers file, and none of what existed before. This queues,
in the home region and for that one destination, the whole of IAM as it stands: every account
(with its root principal), user and role, access key (with its status; the secret is sealed to the
destination by the sender at send time, as for any access key, never written to the outbox) and
identity policy, in the order the receiver needs them (a principal before its keys and policies).

One snapshot, in order with everything else: the destination's sequence counter is locked first
(``outbox.hold_dest``), so a change queued before is committed and visible to the reads that
follow, and a change queued after waits for this transaction and lands behind the snapshot. The
receiver applies IAM idempotently (upserts keyed on the home region's ids), so a resync to a region
that already holds some or all of it changes nothing there but what differs. It does not delete
rows the destination holds that the home region no longer has.
"""

from __future__ import annotations

from dataclasses import dataclass

from regiond.domain.principal import PrincipalKind
from regiond.store import iam as iam_store
from regiond.store import outbox as outbox_store
from regiond.store.outbox import Outbox
from regiond.store.pool import Pool, transaction
from replication.errors import ReplicationError
from replication.messages import IamAccessKey, IamAccount, IamChange, IamPolicy, IamPrincipal

__all__ = ["ResyncRefused", "Resynced", "resync_iam"]


class ResyncRefused(ReplicationError):
    """Not from the IAM home region, or to a region that is not a peer."""


@dataclass(frozen=True)
class Resynced:
    dest: str
    accounts: int
    principals: int  # users and roles (account roots are counted as accounts)
    access_keys: int
    policies: int
    first_seq: int  # the destination's sequence numbers the snapshot took (0, 0: nothing queued)
    last_seq: int


async def resync_iam(pool: Pool, *, region: str, iam_home_region: str, peers: list[str], dest: str) -> Resynced:
    """Queue the whole of ``region``'s IAM for ``dest``; see the module docstring."""
    if region != iam_home_region:
        raise ResyncRefused(f"IAM is written in {iam_home_region}: resync from there, not from {region}")
    if dest == region or dest not in peers:
        raise ResyncRefused(f"{dest} is not a peer of {region} in the peers file")
    async with transaction(pool) as con:
        await outbox_store.hold_dest(con, dest)
        snapshot = await iam_store.iam_snapshot(con)
        changes: list[IamChange] = []
        for p in snapshot.principals:
            if p.kind is PrincipalKind.ROOT:
                changes.append(IamAccount(p.account_id, root_principal_id=p.principal_id))
            else:
                changes.append(IamPrincipal(p.arn, p.account_id, p.kind, p.name, p.principal_id))
        changes += [IamAccessKey(key_id, arn, status) for key_id, arn, status in snapshot.access_keys]
        changes += [IamPolicy(arn, name, document) for arn, name, document in snapshot.policies]
        to_dest = Outbox(region=region, peers=[dest], iam_home_region=iam_home_region)  # this destination only
        seqs = [(await to_dest.append_iam(con, change))[dest] for change in changes]
    accounts = sum(isinstance(c, IamAccount) for c in changes)
    return Resynced(
        dest, accounts, sum(isinstance(c, IamPrincipal) for c in changes), len(snapshot.access_keys),
        len(snapshot.policies), seqs[0] if seqs else 0, seqs[-1] if seqs else 0,
    )  # fmt: skip
