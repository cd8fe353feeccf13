"""Multi-region keys across three regions (three nodes, three databases), replicated over mTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import botocore.exceptions
import pytest

from regiond.app import ROTATION_SCHEDULER, SWEEPER
from tests.support.cluster import ACCOUNT_ID, NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS


async def call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def error_code(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return str(info.value.response["Error"]["Code"])


async def describe_when(kms: Any, key_id: str, ok: Any, what: str) -> dict[str, Any]:
    """DescribeKey until ``ok(metadata)`` holds (the key may not have arrived yet)."""
    found: dict[str, Any] = {}

    async def check() -> bool:
        try:
            md = (await call(kms.describe_key, KeyId=key_id))["KeyMetadata"]
        except botocore.exceptions.ClientError:
            return False
        found.clear()
        found.update(md)
        return bool(ok(found))

    await wait_until(check, what=what)
    return found


async def replicate_everywhere(cluster: Cluster, clients: dict[str, Any], key_id: str, primary: str) -> None:
    for region in cluster.regions:
        if region != primary:
            out = await call(clients[primary].replicate_key, KeyId=key_id, ReplicaRegion=region,
                             Description=f"replica in {region}")  # fmt: skip
            assert out["ReplicaKeyMetadata"]["KeyState"] == "Creating"
            assert out["ReplicaKeyMetadata"]["Arn"] == f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{key_id}"
    for region in cluster.regions:
        await describe_when(clients[region], key_id, lambda md: md["KeyState"] == "Enabled",
                            f"{key_id} enabled in {region}")  # fmt: skip


async def test_mrk_replicates_to_every_region_and_ciphertexts_cross_regions(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()  # made in the IAM home region, replicated: one access key everywhere
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        created = (await call(kms[US].create_key, MultiRegion=True, Description="orders"))["KeyMetadata"]
        key_id = created["KeyId"]
        assert key_id.startswith("mrk-") and len(key_id) == 36
        assert created["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
        await replicate_everywhere(cluster, kms, key_id, US)

        for region in cluster.regions:
            # A replica learns of its sibling replicas from a later frame than its own creation.
            md = await describe_when(
                kms[region], key_id,
                lambda md: len(md["MultiRegionConfiguration"]["ReplicaKeys"]) == 2,
                f"{region} to know both replicas",
            )  # fmt: skip
            config = md["MultiRegionConfiguration"]
            assert md["KeyId"] == key_id and md["MultiRegion"] is True
            assert config["MultiRegionKeyType"] == ("PRIMARY" if region == US else "REPLICA")
            assert config["PrimaryKey"] == {"Arn": f"arn:aws:kms:{US}:{ACCOUNT_ID}:key/{key_id}", "Region": US}
            assert sorted(r["Region"] for r in config["ReplicaKeys"]) == sorted([EU, AP])

        # a ciphertext made in any region decrypts in every other
        for source in cluster.regions:
            plaintext = f"written in {source}".encode()  # not the region's name: the secret scan would find it
            blob = (await call(kms[source].encrypt, KeyId=key_id, Plaintext=plaintext,
                               EncryptionContext={"from": source}))["CiphertextBlob"]  # fmt: skip
            for dest in cluster.regions:
                out = await call(kms[dest].decrypt, CiphertextBlob=blob, EncryptionContext={"from": source})
                assert out["Plaintext"] == plaintext
                assert out["KeyId"] == f"arn:aws:kms:{dest}:{ACCOUNT_ID}:key/{key_id}"

        # a single-region key's ciphertext does not decrypt elsewhere
        local = (await call(kms[US].create_key))["KeyMetadata"]["KeyId"]
        blob = (await call(kms[US].encrypt, KeyId=local, Plaintext=b"stays home"))["CiphertextBlob"]
        for region in (EU, AP):
            # AWS: "The ciphertext refers to a customer master key that does not exist, does not exist in this
            # region, or you are not allowed to access." (AccessDeniedException)
            with pytest.raises(botocore.exceptions.ClientError) as info:
                await call(kms[region].decrypt, CiphertextBlob=blob)
            assert info.value.response["Error"] == {"Code": "AccessDeniedException", "Message": (
                "The ciphertext refers to a customer master key that does not exist, does not exist in this "
                "region, or you are not allowed to access.")}  # fmt: skip
            other = (await call(kms[region].create_key))["KeyMetadata"]["KeyId"]
            assert await error_code(kms[region].re_encrypt, CiphertextBlob=blob, DestinationKeyId=other) == (
                "AccessDeniedException"
            )
            assert await error_code(kms[region].describe_key, KeyId=local) == "NotFoundException"

        # AWS's refusals: single-region key, a region that already has a replica, a replica as source
        assert await error_code(kms[US].replicate_key, KeyId=local, ReplicaRegion=EU) == (
            "UnsupportedOperationException"
        )
        assert await error_code(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU) == "AlreadyExistsException"
        assert await error_code(kms[EU].replicate_key, KeyId=key_id, ReplicaRegion=AP) == (
            "UnsupportedOperationException"
        )
        assert await error_code(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=US) == "ValidationException"


async def test_update_primary_region_moves_the_role_and_the_new_primary_replicates(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, proxies=True) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU)
        await describe_when(kms[EU], key_id, lambda md: md["KeyState"] == "Enabled", "replica in eu-west-1")
        blob = (await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"before the move"))["CiphertextBlob"]

        # Hold the new primary's answer back, so the old primary's Updating state can be seen.
        cluster.cut(EU, US, both=False)
        await call(kms[US].update_primary_region, KeyId=key_id, PrimaryRegion=EU)
        old = (await call(kms[US].describe_key, KeyId=key_id))["KeyMetadata"]
        assert old["KeyState"] == "Updating"
        assert old["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
        assert await error_code(kms[US].disable_key, KeyId=key_id) == "KMSInvalidStateException"
        assert (await call(kms[US].decrypt, CiphertextBlob=blob))["Plaintext"] == b"before the move"  # still usable
        new = await describe_when(
            kms[EU], key_id, lambda md: md["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY",
            "eu-west-1 to become the primary",
        )  # fmt: skip
        assert new["KeyState"] == "Enabled"
        assert [r["Region"] for r in new["MultiRegionConfiguration"]["ReplicaKeys"]] == [US]

        cluster.heal(EU, US)
        await describe_when(kms[US], key_id, lambda md: md["KeyState"] == "Enabled", "the old primary's update to end")

        # the old primary refuses primary-only operations; the new one replicates
        assert await error_code(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=AP) == (
            "UnsupportedOperationException"
        )
        assert await error_code(kms[US].update_primary_region, KeyId=key_id, PrimaryRegion=US) == (
            "UnsupportedOperationException"
        )
        assert await error_code(kms[EU].update_primary_region, KeyId=key_id, PrimaryRegion=AP) == "NotFoundException"
        out = await call(kms[EU].replicate_key, KeyId=key_id, ReplicaRegion=AP)
        assert out["ReplicaKeyMetadata"]["MultiRegionConfiguration"]["PrimaryKey"]["Region"] == EU
        ap = await describe_when(kms[AP], key_id, lambda md: md["KeyState"] == "Enabled", "replica in ap-southeast-2")
        assert ap["MultiRegionConfiguration"]["PrimaryKey"]["Region"] == EU
        await describe_when(
            kms[US], key_id,
            lambda md: sorted(r["Region"] for r in md["MultiRegionConfiguration"]["ReplicaKeys"]) == [AP, US],
            "the old primary to learn of the new replica",
        )  # fmt: skip
        for region in cluster.regions:
            assert (await call(kms[region].decrypt, CiphertextBlob=blob))["Plaintext"] == b"before the move"
        await wait_until(cluster.drained, what="every outbox to drain")


async def test_replica_policy_alias_tags_description_and_state_stay_local(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True, Description="primary",
                             Tags=[{"TagKey": "team", "TagValue": "core"}]))["KeyMetadata"]["KeyId"]  # fmt: skip
        policy = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "ReplicaOnly", "Effect": "Allow", "Principal": {"AWS": admin.arn}, "Action": "kms:*",
             "Resource": "*"},
        ]})  # fmt: skip
        out = await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=policy,
                         Description="replica", Tags=[{"TagKey": "team", "TagValue": "eu"}])  # fmt: skip
        assert out["ReplicaPolicy"] == policy
        assert out["ReplicaTags"] == [{"TagKey": "team", "TagValue": "eu"}]
        await describe_when(kms[EU], key_id, lambda md: md["KeyState"] == "Enabled", "replica in eu-west-1")

        await call(kms[EU].create_alias, AliasName="alias/eu-only", TargetKeyId=key_id)
        await call(kms[EU].disable_key, KeyId=key_id)
        await call(kms[EU].update_key_description, KeyId=key_id, Description="changed in eu")
        await call(kms[EU].tag_resource, KeyId=key_id, Tags=[{"TagKey": "cost", "TagValue": "7"}])
        await wait_until(cluster.drained, what="every outbox to drain")

        primary = (await call(kms[US].describe_key, KeyId=key_id))["KeyMetadata"]
        assert (primary["KeyState"], primary["Description"]) == ("Enabled", "primary")
        assert await error_code(kms[US].describe_key, KeyId="alias/eu-only") == "NotFoundException"
        assert (await call(kms[US].list_resource_tags, KeyId=key_id))["Tags"] == [
            {"TagKey": "team", "TagValue": "core"}
        ]
        stored = "SELECT policy FROM keys WHERE key_id = $1"  # GetKeyPolicy belongs to another issue
        assert await cluster.fetchval(US, stored, key_id) != policy
        replica = (await call(kms[EU].describe_key, KeyId="alias/eu-only"))["KeyMetadata"]
        assert (replica["KeyState"], replica["Description"]) == ("Disabled", "changed in eu")
        assert await cluster.fetchval(EU, stored, key_id) == policy
        assert sorted((t["TagKey"], t["TagValue"]) for t in (await call(kms[EU].list_resource_tags, KeyId=key_id))[
            "Tags"]) == [("cost", "7"), ("team", "eu")]  # fmt: skip
        # shared properties are still shared: the primary's ciphertext is refused only by state here
        blob = (await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"x"))["CiphertextBlob"]
        assert await error_code(kms[EU].decrypt, CiphertextBlob=blob) == "DisabledException"
        await call(kms[EU].enable_key, KeyId=key_id)
        assert (await call(kms[EU].decrypt, CiphertextBlob=blob))["Plaintext"] == b"x"


async def test_primary_waits_for_its_replicas_to_be_deleted(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await replicate_everywhere(cluster, kms, key_id, US)

        out = await call(kms[US].schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        assert out["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in out
        md = (await call(kms[US].describe_key, KeyId=key_id))["KeyMetadata"]
        assert md["PendingDeletionWindowInDays"] == 7 and "DeletionDate" not in md
        # each replica is scheduled on its own, and destroyed by its own region's sweeper
        for region in (EU, AP):
            out = await call(kms[region].schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
            assert out["KeyState"] == "PendingDeletion"
        later = dt.timedelta(days=8)
        await cluster.nodes[EU].app[SWEEPER].run_once(cluster.nodes[EU].clock.now() + later)
        await describe_when(kms[US], key_id,
                            lambda md: [r["Region"] for r in md["MultiRegionConfiguration"]["ReplicaKeys"]] == [AP],
                            "the primary to drop eu-west-1")  # fmt: skip
        assert (await call(kms[US].describe_key, KeyId=key_id))["KeyMetadata"]["KeyState"] == "PendingReplicaDeletion"
        assert await error_code(kms[EU].describe_key, KeyId=key_id) == "NotFoundException"
        await cluster.nodes[AP].app[SWEEPER].run_once(cluster.nodes[AP].clock.now() + later)
        gone = await describe_when(kms[US], key_id, lambda md: md["KeyState"] == "PendingDeletion",
                                   "the primary's own waiting period to start")  # fmt: skip
        assert gone["MultiRegionConfiguration"]["ReplicaKeys"] == []
        assert "DeletionDate" in gone, gone
        assert "PendingDeletionWindowInDays" not in gone, gone


async def test_rotation_on_the_primary_reaches_the_replicas_and_every_era_decrypts_everywhere(
    nodes: NodeFactory,
) -> None:
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await replicate_everywhere(cluster, kms, key_id, US)
        blobs = [(await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"era 1"))["CiphertextBlob"]]

        async def current_everywhere(version: int) -> bool:
            query = "SELECT current_version FROM keys WHERE key_id = $1"
            return all([await cluster.fetchval(r, query, key_id) == version for r in cluster.regions])

        # on-demand rotation, then an automatic one when the primary's clock passes the schedule
        await call(kms[US].enable_key_rotation, KeyId=key_id, RotationPeriodInDays=90)
        await call(kms[US].rotate_key_on_demand, KeyId=key_id)
        await wait_until(lambda: current_everywhere(2), what="version 2 current everywhere")
        blobs.append((await call(kms[EU].encrypt, KeyId=key_id, Plaintext=b"era 2"))["CiphertextBlob"])
        primary = cluster.nodes[US]
        await primary.app[ROTATION_SCHEDULER].run_once(primary.clock.now() + dt.timedelta(days=91))
        await wait_until(lambda: current_everywhere(3), what="version 3 current everywhere")
        blobs.append((await call(kms[AP].encrypt, KeyId=key_id, Plaintext=b"era 3"))["CiphertextBlob"])
        await wait_until(cluster.drained, what="every outbox to drain")

        for region in cluster.regions:
            for n, blob in enumerate(blobs, start=1):
                assert (await call(kms[region].decrypt, CiphertextBlob=blob))["Plaintext"] == f"era {n}".encode()
        # the schedule and the rotation history are shared properties: the same in every region
        status = {r: await call(kms[r].get_key_rotation_status, KeyId=key_id) for r in cluster.regions}
        rotations = {r: (await call(kms[r].list_key_rotations, KeyId=key_id))["Rotations"] for r in cluster.regions}
        for region in (EU, AP):
            assert status[region]["KeyRotationEnabled"] is True and status[region]["RotationPeriodInDays"] == 90
            assert status[region]["NextRotationDate"] == status[US]["NextRotationDate"]
            assert rotations[region] == rotations[US]
        assert [r["RotationType"] for r in rotations[US]] == ["ON_DEMAND", "AUTOMATIC"]
        # replicas rotate only through their primary
        for region in (EU, AP):
            assert await error_code(kms[region].rotate_key_on_demand, KeyId=key_id) == "UnsupportedOperationException"
            assert await error_code(kms[region].enable_key_rotation, KeyId=key_id) == "UnsupportedOperationException"
        await call(kms[US].disable_key_rotation, KeyId=key_id)

        async def disabled_everywhere() -> bool:
            for region in cluster.regions:
                if (await call(kms[region].get_key_rotation_status, KeyId=key_id))["KeyRotationEnabled"]:
                    return False
            return True

        await wait_until(disabled_everywhere, what="rotation disabled everywhere")
