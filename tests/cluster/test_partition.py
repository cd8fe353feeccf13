"""Faults between regions: cut links, lost acknowledgements, a region's node SIGKILLed and restarted.

After every fault heals, each region must hold exactly the primary's shared state, every
outbox must be empty and every peer's applied sequence must equal what its source appended:
no entry lost, none applied twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import botocore.exceptions
import pytest
import structlog

from regiond.app import POOL
from regiond.protocol.ops import KMS_OPERATIONS
from replication.status import read_status
from tests.support.cluster import NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS
ROTATION = "RotateKeyOnDemand" in KMS_OPERATIONS


async def call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def shared_state(cluster: Cluster, region: str) -> dict[str, tuple[Any, ...]]:
    """Per multi-region key: primary, replicas, current version, backing versions (what must match)."""
    rows = await cluster.fetch(
        region,
        "SELECT k.key_id, k.mr_primary_region, k.mr_replica_regions, k.current_version,"
        " array_agg(v.version ORDER BY v.version) AS versions"
        " FROM keys k LEFT JOIN key_versions v ON v.key_id = k.key_id WHERE k.multi_region"
        " GROUP BY k.key_id ORDER BY k.key_id",
    )
    return {
        r["key_id"]: (
            r["mr_primary_region"], tuple(sorted(r["mr_replica_regions"])), r["current_version"], tuple(r["versions"])
        )
        for r in rows
    }


async def converged(cluster: Cluster, keys: set[str]) -> bool:
    if not await cluster.drained():
        return False
    states = [await shared_state(cluster, r) for r in cluster.regions]
    return all(set(s) == keys for s in states) and all(s == states[0] for s in states)


async def enabled_everywhere(cluster: Cluster, kms: dict[str, Any], key_id: str) -> None:
    async def check() -> bool:
        for region in cluster.regions:
            try:
                md = (await call(kms[region].describe_key, KeyId=key_id))["KeyMetadata"]
            except botocore.exceptions.ClientError:
                return False
            if md["KeyState"] != "Enabled":
                return False
        return True

    await wait_until(check, what=f"{key_id} enabled everywhere")


async def test_primary_keeps_serving_while_cut_and_replicas_converge_after_heal(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, proxies=True) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        for region in (EU, AP):
            await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=region)
        await enabled_everywhere(cluster, kms, key_id)
        blobs = [(await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"era 1"))["CiphertextBlob"]]

        cluster.isolate(EU)  # eu-west-1 hears nothing and says nothing
        # the primary keeps serving, creating, replicating (and rotating, where rotation exists)
        assert (await call(kms[US].decrypt, CiphertextBlob=blobs[0]))["Plaintext"] == b"era 1"
        if ROTATION:
            await call(kms[US].rotate_key_on_demand, KeyId=key_id)

            async def rotated() -> bool:
                query = "SELECT current_version > 1 FROM keys WHERE key_id = $1"
                return bool(await cluster.fetchval(US, query, key_id))

            await wait_until(rotated, what="the on-demand rotation")
            blobs.append((await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"era 2"))["CiphertextBlob"])
        more = []
        for n in range(3):
            created = (await call(kms[US].create_key, MultiRegion=True, Description=f"during {n}"))["KeyMetadata"]
            more.append(created["KeyId"])
            for region in (EU, AP):
                await call(kms[US].replicate_key, KeyId=created["KeyId"], ReplicaRegion=region)
        await wait_until(lambda: _present(cluster, AP, more), what="ap-southeast-2 to receive the new keys")
        assert not await _present(cluster, EU, more)

        # a region that is cut off is visible in the status: lag and the last error
        async def lagging() -> bool:
            status = await read_status(cluster.nodes[US].app[POOL], US, [EU, AP], dt.datetime.now(dt.UTC))
            eu = next(p for p in status.peers if p.peer == EU)
            return eu.lag_entries > 0 and eu.last_error is not None

        await wait_until(lagging, what="the status to show eu-west-1 lagging")

        cluster.heal_all()
        keys = {key_id, *more}
        await wait_until(lambda: converged(cluster, keys), what="all three regions to converge")
        for key in more:
            await enabled_everywhere(cluster, kms, key)
        for region in cluster.regions:
            for n, blob in enumerate(blobs, start=1):
                assert (await call(kms[region].decrypt, CiphertextBlob=blob))["Plaintext"] == f"era {n}".encode()


async def _present(cluster: Cluster, region: str, key_ids: list[str]) -> bool:
    found = await cluster.fetchval(region, "SELECT count(*) FROM keys WHERE key_id = ANY($1::text[])", key_ids)
    return bool(found == len(key_ids))


async def test_lost_acks_are_resent_and_never_applied_twice(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, regions=(US, EU), in_memory=True) as cluster:
        assert cluster.network is not None
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        with structlog.testing.capture_logs() as logs:
            cluster.network.lose_acks(US, EU)  # frames arrive and apply; the answers vanish
            made = []
            for _ in range(4):
                key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
                await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU)
                made.append(key_id)
            await wait_until(lambda: _present(cluster, EU, made), what="the replicas despite lost acks")
            await wait_until(lambda: _replayed(logs), what="a resend")
            cluster.network.heal_all()
            await wait_until(lambda: converged(cluster, set(made)), what="convergence")
        created = Counter(e["key_id"] for e in logs if e["event"] == "replication.replica_created")
        assert created == Counter({k: 1 for k in made})  # each applied exactly once
        assert any(e["event"] == "replication.frame_replayed" for e in logs)


async def _replayed(logs: list[MutableMapping[str, Any]]) -> bool:
    return any(e["event"] == "replication.frame_replayed" for e in logs)


async def test_a_sigkilled_region_resumes_without_loss_or_duplication(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, process=(EU,)) as cluster:
        eu = cluster.processes[EU]
        admin = await cluster.admin()
        kms = {US: cluster.nodes[US].client(admin), AP: cluster.nodes[AP].client(admin), EU: eu.client(admin)}
        # eu-west-1 is a primary too: its own outbox must survive the kill
        from_eu = []
        for _ in range(3):
            key_id = (await call(kms[EU].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
            for region in (US, AP):
                await call(kms[EU].replicate_key, KeyId=key_id, ReplicaRegion=region)
            from_eu.append(key_id)
        cluster.kill(EU)  # right after the responses: entries may be unsent, sent but unacked, or acked
        # while it is down, us-east-1 keeps queueing for it
        from_us = []
        for _ in range(3):
            key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
            for region in (EU, AP):
                await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=region)
            from_us.append(key_id)
        await cluster.wait_ready(cluster.start_process(EU))  # same database, state and ports
        keys = {*from_eu, *from_us}
        await wait_until(lambda: converged(cluster, keys), what="convergence after the restart")
        for key_id in keys:
            await enabled_everywhere(cluster, kms, key_id)
        blob = (await call(kms[EU].encrypt, KeyId=from_us[0], Plaintext=b"after"))["CiphertextBlob"]
        assert (await call(kms[AP].decrypt, CiphertextBlob=blob))["Plaintext"] == b"after"
