"""Who may replicate a multi-Region key, as AWS documents it (issue 13, finding 2).

AWS, ReplicateKey "Required permissions": kms:ReplicateKey on the primary key (in the primary
key's Region, its key policy); kms:CreateKey in an IAM policy in the replica Region; to use
Tags, kms:TagResource in an IAM policy in the replica Region. Without kms:CreateKey a principal
could create a replica with a key policy of its own choosing and decrypt the primary's
ciphertexts there.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import botocore.exceptions
import pytest

from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.protocol.routes import SERVICES
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS
ROOT = f"arn:aws:iam::{ACCOUNT_ID}:root"


async def call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def error_code(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return str(info.value.response["Error"]["Code"])


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


async def user(cluster: Cluster, name: str, *statements: dict[str, Any]) -> Identity:
    """A user made in the IAM home region with ``statements`` as its identity policy (none if empty)."""
    iam = cluster.nodes[US].app[SERVICES].iam
    arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, name)
    if not any(p.arn == arn for p in await iam.list_principals(ACCOUNT_ID, PrincipalKind.USER)):
        await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, name)
    await set_iam(cluster, arn, *statements)
    new = await iam.create_access_key(arn)  # usable at once in the home region, later elsewhere
    return Identity(arn, new.access_key_id, new.secret_access_key)


async def set_iam(cluster: Cluster, arn: str, *statements: dict[str, Any]) -> None:
    iam = cluster.nodes[US].app[SERVICES].iam
    if statements:
        await iam.put_identity_policy(arn, "inline", document(*statements))
    elif "inline" in await iam.identity_policies(arn):
        await iam.delete_identity_policy(arn, "inline")


def allow(principal: str, *actions: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": list(actions), "Resource": "*"}


def iam_allow(*actions: str, **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    if condition:
        statement["Condition"] = condition
    return statement


async def test_replicate_key_needs_create_key_in_the_replica_region(nodes: NodeFactory) -> None:
    """The attack of finding 2 fails, and each permission AWS lists is needed and enough."""
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        mallory = await user(cluster, "mallory")
        primary_policy = document(allow(ROOT, "kms:*"), allow(mallory.arn, "kms:ReplicateKey", "kms:DescribeKey"))
        key_id = (await call(kms[US].create_key, MultiRegion=True, Policy=primary_policy))["KeyMetadata"]["KeyId"]
        blob = (await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"payroll"))["CiphertextBlob"]
        as_mallory = cluster.nodes[US].client(mallory)
        own_policy = document(allow(mallory.arn, "kms:*"))

        # kms:ReplicateKey + kms:DescribeKey alone: a replica with a policy of mallory's own is refused
        assert await error_code(as_mallory.replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=own_policy) == (
            "AccessDeniedException"
        )
        # kms:CreateKey only in another Region (aws:RequestedRegion) does not count either
        await set_iam(cluster, mallory.arn, iam_allow("kms:CreateKey", StringEquals={"aws:RequestedRegion": AP}))
        assert await error_code(as_mallory.replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=own_policy) == (
            "AccessDeniedException"
        )
        # ... nor an IAM Deny of multi-Region keys (kms:MultiRegion, as AWS's example)
        await set_iam(
            cluster, mallory.arn, iam_allow("kms:CreateKey"),
            {"Effect": "Deny", "Action": "kms:CreateKey", "Resource": "*", "Condition": {
                "StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}}},
        )  # fmt: skip
        assert await error_code(as_mallory.replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=own_policy) == (
            "AccessDeniedException"
        )
        await wait_until(cluster.drained, what="every outbox to drain")
        assert await cluster.fetchval(EU, "SELECT count(*) FROM keys WHERE key_id = $1", key_id) == 0

        # kms:CreateKey in the replica Region: allowed, but Tags need kms:TagResource (IAM) too
        await set_iam(cluster, mallory.arn, iam_allow("kms:CreateKey", StringEquals={"aws:RequestedRegion": EU}))
        tags = [{"TagKey": "team", "TagValue": "red"}]
        assert await error_code(as_mallory.replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=own_policy,
                                Tags=tags) == "AccessDeniedException"  # fmt: skip
        # the lockout safety check holds for a replica's policy: one that only delegates to IAM
        # counts only if mallory's IAM allows kms:PutKeyPolicy, which it does not
        delegating = document(allow(ROOT, "kms:*"))
        assert await error_code(as_mallory.replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=delegating) == (
            "MalformedPolicyDocumentException"
        )
        await set_iam(
            cluster, mallory.arn, iam_allow("kms:CreateKey", StringEquals={"aws:RequestedRegion": EU}),
            {"Effect": "Allow", "Action": "kms:TagResource", "Resource": f"arn:aws:kms:{EU}:{ACCOUNT_ID}:key/*"},
        )  # fmt: skip
        out = await call(as_mallory.replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=own_policy, Tags=tags)
        assert out["ReplicaKeyMetadata"]["Arn"] == f"arn:aws:kms:{EU}:{ACCOUNT_ID}:key/{key_id}"

        # having been allowed kms:CreateKey there, mallory's replica is mallory's to use (as in AWS)
        await cluster.wait_for_access_key(EU, mallory.access_key_id)
        in_eu = cluster.nodes[EU].client(mallory)

        async def decrypts() -> bool:
            try:
                return bool((await call(in_eu.decrypt, CiphertextBlob=blob))["Plaintext"] == b"payroll")
            except botocore.exceptions.ClientError:
                return False

        await wait_until(decrypts, what="the replica in eu-west-1")


async def test_replicate_key_policy_condition_kms_replica_region(nodes: NodeFactory) -> None:
    """AWS's example: kms:ReplicaRegion in the primary's key policy limits where it may be replicated."""
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()
        kms = cluster.nodes[US].client(admin)
        ops = await user(cluster, "ops", iam_allow("kms:CreateKey", "kms:PutKeyPolicy"))
        statement = allow(ops.arn, "kms:ReplicateKey")
        statement["Condition"] = {"StringEquals": {"kms:ReplicaRegion": [AP]}}
        policy = document(allow(ROOT, "kms:*"), statement)
        key_id = (await call(kms.create_key, MultiRegion=True, Policy=policy))["KeyMetadata"]["KeyId"]
        as_ops = cluster.nodes[US].client(ops)
        assert await error_code(as_ops.replicate_key, KeyId=key_id, ReplicaRegion=EU) == "AccessDeniedException"
        out = await call(as_ops.replicate_key, KeyId=key_id, ReplicaRegion=AP)
        assert out["ReplicaKeyMetadata"]["Arn"].startswith(f"arn:aws:kms:{AP}:")


async def test_update_primary_region_needs_the_permission_on_the_replica_in_its_region(nodes: NodeFactory) -> None:
    """Issue 13, finding 8. AWS: kms:UpdatePrimaryRegion on the current primary key (in its Region)
    *and* on the current replica key (in the replica key's Region, its key policy). The replica's
    policy lives only in its region, which the primary asks before changing anything."""
    async with replicated_cluster(nodes, regions=(US, EU), proxies=True) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        ops = await user(cluster, "ops", iam_allow("kms:DescribeKey"))
        for region in cluster.regions:
            await cluster.wait_for_access_key(region, ops.access_key_id)
        move = allow(ops.arn, "kms:UpdatePrimaryRegion")
        key_id = (await call(kms[US].create_key, MultiRegion=True, Policy=document(allow(ROOT, "kms:*"), move)))[
            "KeyMetadata"]["KeyId"]  # fmt: skip
        await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=document(allow(ROOT, "kms:*")))
        await wait_until(cluster.drained, what="the replica to arrive")
        as_ops = cluster.nodes[US].client(ops)

        # allowed by the primary's key policy only: refused, and nothing moves
        assert await error_code(as_ops.update_primary_region, KeyId=key_id, PrimaryRegion=EU) == (
            "AccessDeniedException"
        )
        md = (await call(kms[US].describe_key, KeyId=key_id))["KeyMetadata"]
        assert (md["KeyState"], md["MultiRegionConfiguration"]["MultiRegionKeyType"]) == ("Enabled", "PRIMARY")

        # the replica's key policy allows it too, but only towards another primary Region (kms:PrimaryRegion)
        only_ap = {**move, "Condition": {"StringEquals": {"kms:PrimaryRegion": AP}}}
        await call(kms[EU].put_key_policy, KeyId=key_id, Policy=document(allow(ROOT, "kms:*"), only_ap))
        assert await error_code(as_ops.update_primary_region, KeyId=key_id, PrimaryRegion=EU) == (
            "AccessDeniedException"
        )
        await call(kms[EU].put_key_policy, KeyId=key_id, Policy=document(allow(ROOT, "kms:*"), move))

        # the replica's region cannot be reached: refused (no authentic answer), nothing moves
        cluster.cut(US, EU)
        assert await error_code(as_ops.update_primary_region, KeyId=key_id, PrimaryRegion=EU) == (
            "KMSInternalException"
        )
        md = (await call(kms[US].describe_key, KeyId=key_id))["KeyMetadata"]
        assert md["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
        cluster.heal(US, EU)

        # both key policies allow it: the primary moves
        await call(as_ops.update_primary_region, KeyId=key_id, PrimaryRegion=EU)

        async def moved() -> bool:
            md = (await call(kms[EU].describe_key, KeyId=key_id))["KeyMetadata"]
            return bool(md["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY")

        await wait_until(moved, what="eu-west-1 to become the primary")


async def test_replica_deletion_is_decided_by_the_replicas_own_key_policy(nodes: NodeFactory) -> None:
    """AWS: "To schedule the deletion of a multi-Region key, you need only ... kms:ScheduleKeyDeletion",
    on that key in its Region: the primary's key policy neither gives nor takes it for a replica."""
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        ops = await user(cluster, "ops", iam_allow("kms:DescribeKey"))
        await cluster.wait_for_access_key(EU, ops.access_key_id)
        deleter = allow(ops.arn, "kms:ScheduleKeyDeletion")
        key_id = (await call(kms[US].create_key, MultiRegion=True, Policy=document(allow(ROOT, "kms:*"), deleter)))[
            "KeyMetadata"]["KeyId"]  # fmt: skip
        await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=document(allow(ROOT, "kms:*")))
        await wait_until(cluster.drained, what="the replica to arrive")
        in_eu = cluster.nodes[EU].client(ops)
        assert await error_code(in_eu.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7) == (
            "AccessDeniedException"
        )
        await call(kms[EU].put_key_policy, KeyId=key_id, Policy=document(allow(ROOT, "kms:*"), deleter))
        out = await call(in_eu.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        assert out["KeyState"] == "PendingDeletion"
        # the primary with a replica (now pending deletion) is the primary's policy's to decide
        out = await call(cluster.nodes[US].client(ops).schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        assert out["KeyState"] == "PendingReplicaDeletion"
