"""Adding a region to a running cluster: new peers files, a rolling restart, ``regiond replication
resync-iam --to R`` for the IAM that existed before, then ReplicateKey of an existing key to it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from regiond.__main__ import parser
from tests.cluster.test_multiregion import call, describe_when, error_code
from tests.support.cluster import NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS
NEW = "eu-central-1"


async def resync(cluster: Cluster, capsys: pytest.CaptureFixture[str], region: str, to: str) -> tuple[int, str]:
    args = parser().parse_args([
        "replication", "resync-iam", "--database-url", cluster.databases[region], "--region", region,
        "--peers-file", str(cluster.peers_files[region]), "--to", to,
    ])  # fmt: skip
    capsys.readouterr()
    code = await asyncio.to_thread(args.func, args)
    captured = capsys.readouterr()
    return int(code), captured.out + captured.err


def result(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{") and '"access_keys"' in line:
            document: dict[str, Any] = json.loads(line)
            return document
    raise AssertionError(f"no result line in {output!r}")


async def test_add_a_fourth_region_resync_iam_and_replicate_a_key_to_it(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await call(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        old = (await call(kms[US].encrypt, KeyId=key_id, Plaintext=b"from before"))["CiphertextBlob"]

        await cluster.add_region(NEW)
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}  # restarted: new ports
        # the new region knows nothing of the IAM made before it joined
        assert await error_code(kms[NEW].list_keys) == "UnrecognizedClientException"

        code, out = await resync(cluster, capsys, EU, NEW)  # not the IAM home
        assert code == 1 and "IAM is written in us-east-1" in out
        code, out = await resync(cluster, capsys, US, "sa-east-1")  # not in the cluster
        assert code == 1 and "not a peer" in out
        code, out = await resync(cluster, capsys, US, NEW)
        assert code == 0, out
        done = result(out)
        assert (done["region"], done["to"], done["accounts"], done["principals"]) == (US, NEW, 1, 1)
        assert done["access_keys"] >= 1 and done["policies"] >= 1
        await wait_until(cluster.drained, what="every outbox to drain")
        for table in ("accounts", "principals", "access_keys", "identity_policies"):
            count = f"SELECT count(*) FROM {table}"
            assert await cluster.fetchval(NEW, count) == await cluster.fetchval(US, count), table
        assert "Keys" in await call(kms[NEW].list_keys)
        principal = "SELECT principal_id FROM principals WHERE arn = $1"
        assert await cluster.fetchval(NEW, principal, admin.arn) == await cluster.fetchval(US, principal, admin.arn)

        # an existing multi-region key replicates to it, and its old ciphertexts decrypt there
        await call(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=NEW)
        await describe_when(kms[NEW], key_id, lambda md: md["KeyState"] == "Enabled", "the replica in eu-central-1")
        assert (await call(kms[NEW].decrypt, CiphertextBlob=old))["Plaintext"] == b"from before"

        # a resync again changes nothing there (idempotent)
        code, out = await resync(cluster, capsys, US, NEW)
        assert code == 0 and result(out)["seq"][0] > done["seq"][1]
        await wait_until(cluster.drained, what="every outbox to drain")
        for table in ("accounts", "principals", "access_keys", "identity_policies"):
            count = f"SELECT count(*) FROM {table}"
            assert await cluster.fetchval(NEW, count) == await cluster.fetchval(US, count), table
        assert "Keys" in await call(kms[NEW].list_keys)
