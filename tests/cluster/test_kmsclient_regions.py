"""kmsclient across three real regions: nearest measured, failover with no error reaching the
caller, single-region keys pinned to their region, and the official AWS Encryption SDK opening
multi-region messages made in another region (and we theirs).

Every region's HTTP endpoint sits behind a ``TcpProxy``: a delay makes a region distant, a cut
makes it vanish mid-request. A recording transport keeps what the client sent where.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aws_encryption_sdk.key_providers.kms import MRKAwareStrictAwsKmsMasterKeyProvider

import kmsclient
from kmsclient.errors import NoRegionAvailableError
from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384, try_parse_header
from kmsclient.transport import AiohttpTransport
from tests.cluster.test_multiregion import call, replicate_everywhere
from tests.support.cluster import ACCOUNT_ID, Identity, NodeFactory
from tests.support.esdk import OFFICIAL_SUITES, EndpointSession, official_client
from tests.support.proxy import TcpProxy
from tests.support.regions import REGIONS, Cluster, replicated_cluster

pytestmark = pytest.mark.cluster

US, EU, AP = REGIONS
CONTEXT = {"app": "orders"}


class RecordingTransport(AiohttpTransport):
    """The real transport, keeping (region, operation, KeyId) of every KMS call it sent."""

    def __init__(self, regions_by_url: dict[str, str]) -> None:
        super().__init__()
        self.regions_by_url = regions_by_url
        self.sent: list[tuple[str, str, str | None]] = []

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> tuple[int, bytes]:
        if method == "POST":
            import json

            key_id = json.loads(body).get("KeyId")
            region = self.regions_by_url[url.rstrip("/")]
            self.sent.append((region, headers["X-Amz-Target"].split(".", 1)[1], key_id))
        return await super().send(method, url, headers, body, timeout_s=timeout_s)


@dataclass
class World:
    cluster: Cluster
    admin: Identity
    proxies: dict[str, TcpProxy]
    kms: dict[str, Any]  # boto3 clients, direct to each node

    def endpoints(self) -> list[kmsclient.Endpoint]:
        return [kmsclient.Endpoint(r, f"http://127.0.0.1:{self.proxies[r].port}") for r in REGIONS]

    def client(self, home: str = US) -> tuple[kmsclient.KmsClient, RecordingTransport]:
        endpoints = self.endpoints()
        transport = RecordingTransport({e.url: e.region for e in endpoints})
        creds = kmsclient.Credentials(self.admin.access_key_id, self.admin.secret_access_key)
        return kmsclient.KmsClient(endpoints, creds, home_region=home, transport=transport, timeout_s=5.0), transport

    async def mrk(self) -> str:
        key_id = (await call(self.kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await replicate_everywhere(self.cluster, self.kms, key_id, US)
        return f"arn:aws:kms:{US}:{ACCOUNT_ID}:key/{key_id}"


@pytest.fixture
async def world(nodes: NodeFactory) -> AsyncIterator[World]:
    async with replicated_cluster(nodes, REGIONS) as cluster:
        admin = await cluster.admin()
        proxies = {}
        for region, node in cluster.nodes.items():
            proxies[region] = await TcpProxy("127.0.0.1", int(node.endpoint.rsplit(":", 1)[1])).start()
        try:
            yield World(cluster, admin, proxies, {r: n.client(admin) for r, n in cluster.nodes.items()})
        finally:
            for proxy in proxies.values():
                await proxy.close()


def _edk_regions(blob: bytes) -> list[str]:
    header = try_parse_header(blob)
    assert header is not None
    return [e.provider_info.decode().split(":")[3] for e in header.data_keys]


async def test_nearest_region_serves_an_mrk_and_a_stopped_region_costs_no_error(world: World) -> None:
    mrk = await world.mrk()
    # Each round trip through a proxy gains twice its delay: AP is nearest, then EU, then US, by margins
    # that no load spike on a shared machine closes.
    world.proxies[US].delay_s = 0.25
    world.proxies[EU].delay_s = 0.1
    client, transport = world.client(home=US)
    async with client:
        placement = await client.placement(mrk)
        assert placement.regions == (AP, EU, US)
        assert placement.key_id_in(AP) == mrk.replace(US, AP)
        keyring = kmsclient.AwsKmsMrkKeyring(client, mrk)
        blob = await kmsclient.encrypt(keyring, b"first", encryption_context=CONTEXT)
        assert _edk_regions(blob) == [AP]
        assert transport.sent[-1] == (AP, "GenerateDataKey", mrk.replace(US, AP))

        errors: list[BaseException] = []
        warmed_up = asyncio.Event()

        async def stream() -> None:
            for i in range(20):
                data = os.urandom(100 + i)
                try:
                    sealed = await kmsclient.encrypt(keyring, data, encryption_context=CONTEXT)
                    assert (await kmsclient.decrypt(keyring, sealed, encryption_context=CONTEXT)).plaintext == data
                    assert (await kmsclient.decrypt(keyring, blob, encryption_context=CONTEXT)).plaintext == b"first"
                except BaseException as exc:
                    errors.append(exc)
                if i == 4:
                    warmed_up.set()

        runner = asyncio.create_task(stream())
        await asyncio.wait_for(warmed_up.wait(), timeout=60)
        world.proxies[AP].cut()  # AP vanishes mid-run: open connections drop, new ones are refused
        await world.cluster.stop(AP)
        await asyncio.wait_for(runner, timeout=90)
        assert errors == []
        after = transport.sent[len(transport.sent) // 2 :]
        assert {r for r, _, _ in after} <= {AP, EU}
        assert any(r == EU for r, _, _ in after)  # the next nearest took over
        latest = await kmsclient.encrypt(keyring, b"later", encryption_context=CONTEXT)
        assert _edk_regions(latest) == [EU]


async def test_a_single_region_keys_data_key_never_goes_to_another_region(world: World) -> None:
    srk = (await call(world.kms[EU].create_key, Description="eu only"))["KeyMetadata"]
    await call(world.kms[EU].create_alias, AliasName="alias/eu-orders", TargetKeyId=srk["KeyId"])
    world.proxies[EU].delay_s = 0.05  # the farthest region, and still the only one used
    client, transport = world.client(home=EU)
    async with client:
        for key in (srk["Arn"], srk["KeyId"], "alias/eu-orders", f"arn:aws:kms:{EU}:{ACCOUNT_ID}:alias/eu-orders"):
            placement = await client.placement(key)
            assert placement.regions == (EU,)
        keyring = kmsclient.AwsKmsKeyring(client, srk["Arn"])
        by_alias = kmsclient.AwsKmsMrkKeyring(client, "alias/eu-orders")
        blob = await kmsclient.encrypt(keyring, b"eu data", encryption_context=CONTEXT)
        blob2 = await kmsclient.encrypt(by_alias, b"eu data", encryption_context=CONTEXT)
        assert _edk_regions(blob) == _edk_regions(blob2) == [EU]
        assert (await kmsclient.decrypt(keyring, blob2, encryption_context=CONTEXT)).plaintext == b"eu data"
        discovery = kmsclient.AwsKmsDiscoveryKeyring(
            client, discovery_filter=kmsclient.DiscoveryFilter(frozenset({ACCOUNT_ID}))
        )
        assert (await kmsclient.decrypt(discovery, blob, encryption_context=CONTEXT)).plaintext == b"eu data"

        world.proxies[EU].cut()  # its region is gone: the call fails rather than go elsewhere
        with pytest.raises(NoRegionAvailableError):
            await kmsclient.encrypt(keyring, b"eu data", encryption_context=CONTEXT)
        with pytest.raises(kmsclient.MaterialsError):
            await kmsclient.decrypt(discovery, blob, encryption_context=CONTEXT)
        assert {r for r, _, _ in transport.sent} == {EU}


async def test_a_multi_keyring_message_opens_in_whichever_region_is_left(world: World) -> None:
    us_key = (await call(world.kms[US].create_key))["KeyMetadata"]["Arn"]
    ap_key = (await call(world.kms[AP].create_key))["KeyMetadata"]["Arn"]
    world.proxies[US].delay_s = 0.25
    client, transport = world.client(home=US)
    async with client:
        us, ap = kmsclient.AwsKmsKeyring(client, us_key), kmsclient.AwsKmsKeyring(client, ap_key)
        multi = kmsclient.MultiKeyring(us, [ap], client=client)
        blob = await kmsclient.encrypt(multi, b"both", encryption_context=CONTEXT)
        assert _edk_regions(blob) == [US, AP]
        await client.router.refresh(force=True)
        transport.sent.clear()
        nearest = client.router.nearest_first([US, AP])[0]  # AP, unless the machine stalled AP's calls
        assert (await kmsclient.decrypt(multi, blob, encryption_context=CONTEXT)).plaintext == b"both"
        assert transport.sent == [(nearest, "Decrypt", ap_key if nearest == AP else us_key)]  # the nearest first
        world.proxies[AP].cut()
        assert (await kmsclient.decrypt(multi, blob, encryption_context=CONTEXT)).plaintext == b"both"


@pytest.mark.parametrize("suite", [COMMIT_KEY, COMMIT_KEY_ECDSA_P384], ids=lambda s: f"0x{s.id:04x}")
async def test_official_sdk_interoperates_with_a_multi_region_key_across_regions(world: World, suite: Any) -> None:
    mrk = await world.mrk()
    world.proxies[US].delay_s = 0.25  # kmsclient uses AP or EU; the official SDK is told EU or US
    endpoints = {r: n.endpoint for r, n in world.cluster.nodes.items()}
    session = EndpointSession(endpoints, world.admin)
    esdk = official_client()
    client, _ = world.client(home=US)
    async with client:
        ours_ring = kmsclient.AwsKmsMrkKeyring(client, mrk)
        data = os.urandom(70_000)
        ours = await kmsclient.encrypt(ours_ring, data, encryption_context=CONTEXT, suite=suite)
        assert _edk_regions(ours) != [US]
        in_eu = MRKAwareStrictAwsKmsMasterKeyProvider(key_ids=[mrk.replace(US, EU)], botocore_session=session)
        plain, header = await asyncio.to_thread(esdk.decrypt, source=ours, key_provider=in_eu)
        assert plain == data and header.algorithm == OFFICIAL_SUITES[suite.id]

        in_us = MRKAwareStrictAwsKmsMasterKeyProvider(key_ids=[mrk], botocore_session=session)
        theirs, _ = await asyncio.to_thread(
            esdk.encrypt, source=data, key_provider=in_us, encryption_context=CONTEXT,
            algorithm=OFFICIAL_SUITES[suite.id],
        )  # fmt: skip
        assert _edk_regions(theirs) == [US]
        eu_ring = kmsclient.AwsKmsMrkKeyring(client, mrk.replace(US, EU))
        assert (await kmsclient.decrypt(eu_ring, theirs, encryption_context=CONTEXT)).plaintext == data
