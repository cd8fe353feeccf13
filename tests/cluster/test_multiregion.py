"""Multi-region keys across three regions (three nodes, three databases), replicated over mTLS."""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.exceptions
import pytest

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
            found.update((await call(kms.describe_key, KeyId=key_id))["KeyMetadata"])
        except botocore.exceptions.ClientError:
            return False
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
            md = (await call(kms[region].describe_key, KeyId=key_id))["KeyMetadata"]
            config = md["MultiRegionConfiguration"]
            assert md["KeyId"] == key_id and md["MultiRegion"] is True
            assert config["MultiRegionKeyType"] == ("PRIMARY" if region == US else "REPLICA")
            assert config["PrimaryKey"] == {"Arn": f"arn:aws:kms:{US}:{ACCOUNT_ID}:key/{key_id}", "Region": US}
            assert sorted(r["Region"] for r in config["ReplicaKeys"]) == sorted([EU, AP])

        # a ciphertext made in any region decrypts in every other
        for source in cluster.regions:
            blob = (await call(kms[source].encrypt, KeyId=key_id, Plaintext=source.encode(),
                               EncryptionContext={"from": source}))["CiphertextBlob"]  # fmt: skip
            for dest in cluster.regions:
                out = await call(kms[dest].decrypt, CiphertextBlob=blob, EncryptionContext={"from": source})
                assert out["Plaintext"] == source.encode()
                assert out["KeyId"] == f"arn:aws:kms:{dest}:{ACCOUNT_ID}:key/{key_id}"

        # a single-region key's ciphertext does not decrypt elsewhere
        local = (await call(kms[US].create_key))["KeyMetadata"]["KeyId"]
        blob = (await call(kms[US].encrypt, KeyId=local, Plaintext=b"stays home"))["CiphertextBlob"]
        for region in (EU, AP):
            assert await error_code(kms[region].decrypt, CiphertextBlob=blob) in (
                "NotFoundException", "InvalidCiphertextException",
            )  # fmt: skip
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
