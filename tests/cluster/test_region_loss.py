"""Losing a region: ``regiond replication promote`` makes a surviving replica the primary, and the
old primary, when it comes back, is a replica that cannot overwrite the new primary's state."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from regiond.__main__ import parser
from regiond.audit.query import EventFilter, find
from regiond.store.pool import create_pool
from tests.cluster.test_multiregion import call, describe_when, error_code
from tests.support.cluster import NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS


async def promote(cluster: Cluster, capsys: pytest.CaptureFixture[str], region: str, *argv: str) -> tuple[int, str]:
    """``regiond replication promote`` for ``region``, in this process: (exit code, stdout + stderr)."""
    args = parser().parse_args([
        "replication", "promote", "--database-url", cluster.databases[region], "--region", region,
        "--state-dir", str(cluster.state_dirs[region]), "--peers-file", str(cluster.peers_files[region]),
        "--probe-timeout", "2", *argv,
    ])  # fmt: skip
    capsys.readouterr()
    code = await asyncio.to_thread(args.func, args)
    captured = capsys.readouterr()
    return int(code), captured.out + captured.err


def result_line(output: str) -> dict[str, Any]:
    """The command's one-line JSON result (log lines of the in-process nodes may share the output)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{") and '"promoted"' in line:
            document: dict[str, Any] = json.loads(line)
            return document
    raise AssertionError(f"no result line in {output!r}")


async def test_promote_a_replica_when_the_primary_region_is_lost(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with replicated_cluster(nodes, proxies=True) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU)
        await describe_when(kms[EU], key_id, lambda md: md["KeyState"] == "Enabled", "the replica in eu-west-1")
        old = (await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"before the loss"))["CiphertextBlob"]

        # us-east-1 answers: not lost, refused (nothing changes)
        code, out = await promote(cluster, capsys, EU, "--key", key_id)
        assert code == 1 and "us-east-1 answers" in out and "--force" in out
        assert (await call(kms[EU].describe_key, KeyId=key_id))["KeyMetadata"]["MultiRegionConfiguration"][
            "MultiRegionKeyType"] == "REPLICA"  # fmt: skip

        # us-east-1 is cut off; alone, it still acts as the primary (a rotation at the old epoch), then stops
        cluster.isolate(US)
        await call(kms[US].rotate_key_on_demand, KeyId=key_id)
        await cluster.stop(US)

        code, out = await promote(cluster, capsys, EU, "--all-from-region", US)
        assert code == 0, out
        assert "us-east-1 does not answer" in out and f"{key_id}: primary us-east-1 -> eu-west-1 at epoch 2" in out
        assert result_line(out) == {"region": EU, "promoted": [key_id], "already_primary": [], "refused": [],
                                    "forced": False}  # fmt: skip
        code, out = await promote(cluster, capsys, EU, "--key", key_id)  # again: nothing to do
        assert code == 0 and result_line(out)["already_primary"] == [key_id]
        missing = "mrk-" + "0" * 32
        code, out = await promote(cluster, capsys, EU, "--key", f"arn:aws:kms:{EU}:111122223333:key/{missing}")
        assert code == 1 and result_line(out)["refused"] == [{"key_id": missing, "reason": f"{missing} does not "
                                                              "exist in eu-west-1"}]  # fmt: skip
        code, out = await promote(cluster, capsys, EU, "--key", "1234abcd-12ab-34cd-56ef-1234567890ab")
        assert code == 2 and "multi-Region key id" in out

        md = await describe_when(kms[EU], key_id, lambda md: md["MultiRegionConfiguration"]["MultiRegionKeyType"]
                                 == "PRIMARY", "eu-west-1 to serve the key as its primary")  # fmt: skip
        assert md["KeyState"] == "Enabled"
        assert [r["Region"] for r in md["MultiRegionConfiguration"]["ReplicaKeys"]] == [US]
        assert (await call(kms[EU].decrypt, CiphertextBlob=old))["Plaintext"] == b"before the loss"
        new = (await call(kms[EU].encrypt, KeyId=key_id, Plaintext=b"after"))["CiphertextBlob"]
        assert (await call(kms[EU].decrypt, CiphertextBlob=new))["Plaintext"] == b"after"

        # the promotion is in eu-west-1's audit trail
        pool = await create_pool(cluster.databases[EU], min_size=1, max_size=1)
        try:
            hits = await find(pool, EventFilter(event_name="PromoteReplica"))
        finally:
            await pool.close()
        event = json.loads(hits[-1].record)
        assert event["eventSource"] == "regionkms.operator" and event["userIdentity"] is None
        assert event["requestParameters"] == {"keyId": key_id, "previousPrimaryRegion": US, "forced": False}
        assert event["responseElements"]["epoch"] == 2 and event["resources"][0]["ARN"].endswith(key_id)

        # the new primary manages the key set: ReplicateKey, then UpdatePrimaryRegion
        await call(kms[EU].replicate_key, KeyId=key_id, ReplicaRegion=AP)
        await describe_when(kms[AP], key_id, lambda md: md["KeyState"] == "Enabled", "the replica in ap-southeast-2")
        assert (await call(kms[AP].decrypt, CiphertextBlob=old))["Plaintext"] == b"before the loss"
        await call(kms[EU].update_primary_region, KeyId=key_id, PrimaryRegion=AP)
        await describe_when(kms[AP], key_id, lambda md: md["MultiRegionConfiguration"]["MultiRegionKeyType"]
                            == "PRIMARY", "ap-southeast-2 to become the primary")  # fmt: skip

        # us-east-1 comes back with its old-epoch rotation queued: it is a replica now, and what it
        # did alone is refused everywhere
        cluster.heal_all()
        kms[US] = (await cluster.start(US)).client(admin)  # a new port
        await describe_when(kms[US], key_id, lambda md: md["MultiRegionConfiguration"]["PrimaryKey"]["Region"]
                            == AP, "us-east-1 to follow the new primary")  # fmt: skip
        assert await error_code(kms[US].update_primary_region, KeyId=key_id, PrimaryRegion=US) == (
            "UnsupportedOperationException")  # fmt: skip

        async def refused() -> bool:
            return bool(await cluster.fetchval(
                EU, "SELECT refused_count FROM replication_inbound WHERE source = $1", US))  # fmt: skip

        await wait_until(refused, what="eu-west-1 to refuse us-east-1's old-epoch rotation")
        for region in (EU, AP):
            assert await cluster.fetchval(region, "SELECT count(*) FROM key_versions WHERE key_id = $1", key_id) == 1
        assert (await call(kms[US].decrypt, CiphertextBlob=new))["Plaintext"] == b"after"
