"""Single-region keys and their material never enter the outbox or the channel.

The regions are joined by the in-memory transport, whose ``sent`` list holds every envelope the
senders transmitted; the test decodes each one and scans the raw bytes too, then looks into each
region's database.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from regiond.crypto import sign
from replication import frames
from tests.support.cluster import NodeFactory
from tests.support.regions import REGIONS, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS


def _frame(envelope: bytes) -> frames.Frame:
    signer_len = envelope[1]
    return frames.decode(envelope[2 + signer_len + sign.SIGNATURE_BYTES :])


async def test_single_region_keys_never_leave_their_region(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, in_memory=True) as cluster:
        assert cluster.network is not None
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        local: dict[str, str] = {}
        for region in cluster.regions:
            key_id = (await asyncio.to_thread(kms[region].create_key, Description=f"only {region}"))["KeyMetadata"][
                "KeyId"
            ]
            local[region] = key_id
            await asyncio.to_thread(kms[region].create_alias, AliasName=f"alias/{region}", TargetKeyId=key_id)
            await asyncio.to_thread(kms[region].tag_resource, KeyId=key_id, Tags=[{"TagKey": "t", "TagValue": "v"}])
            await asyncio.to_thread(kms[region].encrypt, KeyId=key_id, Plaintext=b"secret")
            await asyncio.to_thread(kms[region].disable_key, KeyId=key_id)
            await asyncio.to_thread(kms[region].schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        # a multi-region key for contrast: it does travel
        mrk = (await asyncio.to_thread(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        for region in (EU, AP):
            await asyncio.to_thread(kms[US].replicate_key, KeyId=mrk, ReplicaRegion=region)
        await wait_until(cluster.drained, what="every outbox to drain")

        sent = cluster.network.sent
        assert sent, "the senders transmitted nothing at all"
        key_ids = set()
        for item in sent:
            for key_id in local.values():
                assert key_id.encode() not in item.envelope, f"{key_id} crossed {item.source} -> {item.dest}"
            body_key = _frame(item.envelope).body.get("key_id")
            if body_key is not None:
                key_ids.add(body_key)
        assert key_ids == {mrk}
        kinds = {_frame(item.envelope).kind for item in sent}
        assert frames.FrameKind.KEY_CREATED in kinds and frames.FrameKind.IAM_CHANGE in kinds

        for region in cluster.regions:
            held = {r["key_id"] for r in await cluster.fetch(region, "SELECT key_id FROM keys")}
            assert held == {local[region], mrk}  # its own single-region key, and the shared one
            versions = {r["key_id"] for r in await cluster.fetch(region, "SELECT DISTINCT key_id FROM key_versions")}
            assert versions == {local[region], mrk}
            # the outbox never held a non-mrk key (its CHECK and the append guard), and it is empty now
            assert await cluster.fetchval(region, "SELECT count(*) FROM replication_outbox") == 0
            aliases = {r["alias_name"] for r in await cluster.fetch(region, "SELECT alias_name FROM aliases")}
            assert aliases == {f"alias/{region}"}
        with pytest.raises(asyncpg.CheckViolationError):  # the database refuses one too
            await cluster.fetchval(
                US, "INSERT INTO replication_outbox (dest, seq, kind, key_id, body) VALUES ($1, 1000000, $2, $3, '{}')",
                EU, "key_created", local[US],
            )  # fmt: skip
