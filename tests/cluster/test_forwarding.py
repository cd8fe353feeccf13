"""Any node serves any region of its cluster (issue 18 item 1): one endpoint URL for every region.

A request signed for another region of the peers file is relayed over the replication channel's
mutual TLS with its bytes intact, and that region authenticates, authorizes and audits it. The
attacker tests hold a real region's certificate (a compromised forwarding node) or none.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from dataclasses import replace
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from kmsclient.sigv4 import Credentials, sign_headers
from regiond.audit.query import EventFilter, find
from regiond.crypto import pki
from regiond.crypto.keyring import load_file_keyring
from regiond.protocol import forwarding
from regiond.runtime.metrics import REGISTRY
from regiond.store.pool import create_pool
from replication.channel import FORWARD_PATH, ForwardClient, TransportError
from replication.peers import load_region_tls, load_topology, server_name
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS


async def call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def error_of(fn: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return dict(info.value.response)


def forwarded(region: str, outcome: str) -> float:
    labels = {"region": region, "outcome": outcome}
    return REGISTRY.get_sample_value("regionkms_forwarded_requests_total", labels) or 0.0


async def test_one_endpoint_serves_both_regions_with_replicas_and_target_audit(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replicated_cluster(nodes, (US, EU), audit=(EU,)) as cluster:
        admin = await cluster.admin()
        us_node = cluster.nodes[US]
        kms_us = us_node.client(admin)
        # The SDK's own setting: every KMS client goes to one URL, whatever its region.
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", us_node.endpoint)
        kms_eu = boto3.client(
            "kms", region_name=EU, aws_access_key_id=admin.access_key_id,
            aws_secret_access_key=admin.secret_access_key, config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip
        assert kms_eu.meta.endpoint_url == us_node.endpoint
        ok_before = forwarded(EU, "ok")

        # A key made in eu-west-1 through us-east-1's endpoint lives in eu-west-1 only.
        local = (await call(kms_eu.create_key, Description="made in eu through us"))["KeyMetadata"]
        assert local["Arn"] == f"arn:aws:kms:{EU}:{ACCOUNT_ID}:key/{local['KeyId']}"
        missing = await error_of(kms_us.describe_key, KeyId=local["KeyId"])
        assert missing["Error"]["Code"] == "NotFoundException"
        blob = (await call(kms_eu.encrypt, KeyId=local["KeyId"], Plaintext=b"eu secret"))["CiphertextBlob"]
        assert (await call(kms_eu.decrypt, CiphertextBlob=blob))["Plaintext"] == b"eu secret"

        # The multi-region flow as Terraform drives it, all on one endpoint.
        mrk = (await call(kms_us.create_key, MultiRegion=True, Description="orders"))["KeyMetadata"]["KeyId"]
        replica = await call(kms_us.replicate_key, KeyId=mrk, ReplicaRegion=EU, Description="replica")
        assert replica["ReplicaKeyMetadata"]["Arn"] == f"arn:aws:kms:{EU}:{ACCOUNT_ID}:key/{mrk}"

        async def enabled() -> bool:
            try:
                md = (await call(kms_eu.describe_key, KeyId=mrk))["KeyMetadata"]
            except botocore.exceptions.ClientError:
                return False
            kind = md["MultiRegionConfiguration"]["MultiRegionKeyType"]
            return bool(md["KeyState"] == "Enabled" and kind == "REPLICA")

        await wait_until(enabled, what="the replica enabled in eu-west-1, seen through us-east-1")
        sealed = (await call(kms_us.encrypt, KeyId=mrk, Plaintext=b"both regions"))["CiphertextBlob"]
        opened = await call(kms_eu.decrypt, CiphertextBlob=sealed, KeyId=mrk)
        assert opened["Plaintext"] == b"both regions" and opened["KeyId"].startswith(f"arn:aws:kms:{EU}:")

        # Errors come back as the target answered them.
        refused = await error_of(kms_eu.describe_key, KeyId="alias/nowhere")
        assert refused["Error"]["Code"] == "NotFoundException"
        assert refused["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert refused["ResponseMetadata"]["RequestId"]
        assert forwarded(EU, "ok") - ok_before >= 5 and forwarded(EU, "error") >= 1

        # STS too: who signed, answered by the region the call was signed for.
        me = await call(us_node.client(admin, "sts", region=EU).get_caller_identity)
        assert me["Arn"] == admin.arn and me["Account"] == ACCOUNT_ID

        # A region outside the cluster gets AWS's answer, as before forwarding existed.
        outside = us_node.client(admin, region=AP)
        wrong = await error_of(outside.list_keys)
        assert wrong["Error"]["Code"] == "InvalidSignatureException"
        assert f"Credential should be scoped to a valid region, not '{AP}'" in wrong["Error"]["Message"]

        # eu-west-1 audited the call as its own, naming the region that relayed it.
        pool = await create_pool(cluster.databases[EU], max_size=2)
        try:
            async def audited() -> bool:
                rows = await find(pool, EventFilter(event_name="CreateKey"))
                return any(json.loads(r.record).get("responseElements") for r in rows)

            await wait_until(audited, what="eu-west-1's CreateKey event")
            rows = await find(pool, EventFilter(event_name="CreateKey"))
        finally:
            await pool.close()
        event = json.loads(rows[0].record)
        assert event["awsRegion"] == EU and event["userIdentity"]["arn"] == admin.arn
        assert event["additionalEventData"]["forwardedFromRegion"] == US
        assert event["sourceIPAddress"] == "127.0.0.1"  # the forwarding node: no claim about the client


async def test_unreachable_region_is_a_prompt_5xx(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, (US, EU), proxies=True, forward_timeout_s=1.5) as cluster:
        admin = await cluster.admin()
        kms_eu = cluster.nodes[US].client(admin, region=EU)
        assert (await call(kms_eu.list_keys))["Keys"] == []
        cluster.proxies[(US, EU)].freeze()  # a hung peer: connected, never answers
        hung = await error_of(kms_eu.list_keys)
        assert hung["Error"]["Code"] == "DependencyTimeoutException"
        assert hung["ResponseMetadata"]["HTTPStatusCode"] == 503
        cluster.heal(US, EU)
        cluster.cut(US, EU)  # connections refused
        down = await error_of(kms_eu.list_keys)
        assert down["Error"]["Code"] == "KMSInternalException"
        assert down["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert forwarded(EU, "timeout") >= 1 and forwarded(EU, "unreachable") >= 1
        cluster.heal(US, EU)
        assert (await call(kms_eu.list_keys))["Keys"] == []


def _signed(endpoint: str, identity: Identity, region: str, body: bytes) -> forwarding.ForwardedRequest:
    headers = sign_headers(
        credentials=Credentials(identity.access_key_id, identity.secret_access_key), method="POST",
        url=endpoint + "/", body=body, region=region, service="kms", now=dt.datetime.now(dt.UTC),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"},
    )  # fmt: skip
    pairs = tuple((k.encode(), v.encode()) for k, v in headers.items())
    return forwarding.ForwardedRequest("POST", b"/", pairs, body, True)


class ForwardingNode:
    """Speaks the forward channel to eu-west-1 as us-east-1, with us-east-1's own certificate."""

    def __init__(self, cluster: Cluster) -> None:
        sdir = cluster.state_dirs[US]
        cert, key = load_region_tls(sdir, load_file_keyring(sdir / "root.key"))
        topology = load_topology(cluster.peers_files[US], US)
        self.peer = topology.peer(EU)
        self.ca = topology.ca_cert_pem
        self.client = ForwardClient(pki.ssl_client_context(cert, key, topology.ca_cert_pem))

    async def send(self, request: forwarding.ForwardedRequest) -> tuple[int, dict[str, Any]]:
        reply = forwarding.decode_reply(await self.client.forward(self.peer, forwarding.encode_request(request)))
        return reply.status, json.loads(reply.body)


async def test_forwarded_requests_cannot_be_forged_injected_or_looped(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, (US, EU), auth_failure_burst=3, auth_failure_refill_per_s=0.01) as cluster:
        admin = await cluster.admin()
        relay = ForwardingNode(cluster)
        endpoint = cluster.nodes[US].endpoint
        try:
            intact = _signed(endpoint, admin, EU, b"{}")
            status, body = await relay.send(intact)
            assert status == 200 and body["Keys"] == []

            # The relaying node cannot change what the client signed: body, header or target.
            for forged in (
                forwarding.ForwardedRequest("POST", b"/", intact.headers, b'{"Limit": 1}', True),
                forwarding.ForwardedRequest("POST", b"/", tuple(
                    (n, b"TrentService.CreateKey") if n.lower() == b"x-amz-target" else (n, v)
                    for n, v in intact.headers), b"{}", True),
                forwarding.ForwardedRequest("POST", b"/?x=1", intact.headers, b"{}", True),
            ):  # fmt: skip
                status, body = await relay.send(forged)
                assert status == 400 and body["__type"] == "InvalidSignatureException", body

            # Loop guard: a request signed for the relaying region is never sent back to it.
            looped_before = forwarded(US, "ok") + forwarded(US, "error")
            status, body = await relay.send(_signed(endpoint, admin, US, b"{}"))
            assert status == 400 and body["__type"] == "InvalidSignatureException"
            assert f"not '{US}'" in body["message"]
            assert forwarded(US, "ok") + forwarded(US, "error") == looped_before

            # A client guessing through the relay exhausts its own throttle bucket, not the relay's.
            guesser = Identity(admin.arn, admin.access_key_id, "w" * 40)
            answers = []
            for _ in range(6):
                wrong = _signed(endpoint, guesser, EU, b"{}")
                answers.append((await relay.send(replace(wrong, client_address="203.0.113.9")))[1]["__type"])
            assert answers[0] == "InvalidSignatureException" and answers[-1] == "ThrottlingException"
            other = replace(_signed(endpoint, guesser, EU, b"{}"), client_address="203.0.113.10")
            assert (await relay.send(other))[1]["__type"] == "InvalidSignatureException"

            # A malformed envelope is refused by the channel, not served.
            with pytest.raises(TransportError, match="HTTP 400"):
                await relay.client.forward(relay.peer, b"\x93\x01\x02\x03")
        finally:
            await relay.client.close()

        # Without a cluster certificate there is no channel: no client certificate, or one of another CA.
        url = relay.peer.endpoint + FORWARD_PATH
        data = forwarding.encode_request(intact)
        bare = ssl.create_default_context(cadata=relay.ca.decode())
        bare.check_hostname = False
        other_ca, other_key = pki.make_cluster_ca("not the cluster")
        cert, key = pki.issue_region_cert(other_ca, other_key, US, (server_name(US),))
        stranger = pki.ssl_client_context(cert, key, relay.ca, check_hostname=False)
        for context in (bare, stranger):
            async with aiohttp.ClientSession() as session:
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                    async with session.post(url, data=data, ssl=context) as resp:
                        await resp.read()
                        raise AssertionError(f"served without a cluster certificate: HTTP {resp.status}")
