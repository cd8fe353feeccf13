"""IAM is written in the home region and replicated read-only to every other region."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from regiond.protocol.routes import SERVICES
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory
from tests.support.raw import signed_post
from tests.support.regions import REGIONS, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS
IAM = "RegionKmsIam"


async def test_one_access_key_works_in_every_region_and_follows_the_home_region(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes) as cluster:
        admin = await cluster.admin()
        node = cluster.nodes

        async def iam(region: str, who: Identity, operation: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
            status, payload, _ = await signed_post(
                node[region].endpoint, region, who, f"{IAM}.{operation}", json.dumps(body).encode()
            )
            return status, payload

        # writes outside the home region are refused with a pointer to it
        status, payload = await iam(EU, admin, "CreateUser", {"UserName": "bob"})
        assert status == 400 and payload["__type"] == "UnsupportedOperationException"
        assert US in payload["message"]

        status, _ = await iam(US, admin, "CreateUser", {"UserName": "alice"})
        assert status == 200
        status, payload = await iam(US, admin, "CreateAccessKey", {"UserName": "alice"})
        key = payload["AccessKey"]
        alice = Identity(f"arn:aws:iam::{ACCOUNT_ID}:user/alice", key["AccessKeyId"], key["SecretAccessKey"])
        allow = {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}
        document = json.dumps({"Version": "2012-10-17", "Statement": [allow]})
        put = {"UserName": "alice", "PolicyName": "list", "PolicyDocument": document}
        status, _ = await iam(US, admin, "PutUserPolicy", put)
        assert status == 200

        # the same access key authenticates, and the same policy authorizes, in every region
        for region in cluster.regions:
            await cluster.wait_for_access_key(region, alice.access_key_id)
            kms = node[region].client(alice)
            assert "Keys" in await asyncio.to_thread(kms.list_keys)
            status, payload = await iam(region, alice, "GetCallerIdentity", {})
            assert payload["Arn"] == alice.arn
        principal_ids = {
            await cluster.fetchval(r, "SELECT principal_id FROM principals WHERE arn = $1", alice.arn)
            for r in cluster.regions
        }
        assert len(principal_ids) == 1  # the home region's identifiers, not one per region

        # deactivation and deletion at home reach every region too
        change = {"UserName": "alice", "AccessKeyId": alice.access_key_id, "Status": "Inactive"}
        status, _ = await iam(US, admin, "UpdateAccessKey", change)
        assert status == 200

        async def refused_everywhere() -> bool:
            for region in cluster.regions:
                _, payload, _ = await signed_post(
                    node[region].endpoint, region, alice, f"{IAM}.GetCallerIdentity", b"{}"
                )
                if payload.get("__type") != "UnrecognizedClientException":
                    return False
            return True

        await wait_until(refused_everywhere, what="the deactivated key to be refused in every region")
        status, _ = await iam(US, admin, "DeleteAccessKey", {"UserName": "alice", "AccessKeyId": alice.access_key_id})
        assert status == 200
        await wait_until(cluster.drained, what="every outbox to drain")
        for region in cluster.regions:
            assert not await cluster.fetchval(
                region, "SELECT count(*) FROM access_keys WHERE access_key_id = $1", alice.access_key_id
            )


async def test_access_key_secret_never_rests_in_the_outbox(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, regions=(US, EU), proxies=True) as cluster:
        cluster.cut(US, EU)  # keep the entry queued so it can be inspected
        iam = cluster.nodes[US].app[SERVICES].iam
        await iam.ensure_account(ACCOUNT_ID)
        root = await iam.create_access_key(f"arn:aws:iam::{ACCOUNT_ID}:root")
        bodies = [r["body"] for r in await cluster.fetch(US, "SELECT body::text AS body FROM replication_outbox")]
        assert any(root.access_key_id in b for b in bodies)
        assert not any(root.secret_access_key in b for b in bodies)
        cluster.heal(US, EU)

        async def arrived() -> bool:
            return bool(await cluster.fetchval(
                EU, "SELECT count(*) FROM access_keys WHERE access_key_id = $1", root.access_key_id
            ))  # fmt: skip

        await wait_until(arrived, what="the access key in eu-west-1")
        who = Identity(f"arn:aws:iam::{ACCOUNT_ID}:root", root.access_key_id, root.secret_access_key)
        status, payload, _ = await signed_post(
            cluster.nodes[EU].endpoint, EU, who, f"{IAM}.GetCallerIdentity", b"{}"
        )
        assert status == 200 and payload["Account"] == ACCOUNT_ID
        # at rest in eu-west-1 the secret is wrapped by eu-west-1's own root key
        stored = await cluster.fetchval(
            EU, "SELECT secret_wrapped FROM access_keys WHERE access_key_id = $1", root.access_key_id
        )
        assert root.secret_access_key.encode() not in bytes(stored)
