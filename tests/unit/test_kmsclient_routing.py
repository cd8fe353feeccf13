"""Routing and retries of the client, against the in-memory KMS twin (no server)."""

from __future__ import annotations

import pytest

import kmsclient
from kmsclient.errors import ConfigurationError, NoRegionAvailableError, TransportError
from kmsclient.routing import parse_key_id
from tests.support.fake_kms import FakeKms

US, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-2"


@pytest.fixture
def kms() -> FakeKms:
    return FakeKms((US, EU, AP))


def test_key_identifiers_are_parsed_in_all_four_forms() -> None:
    arn = parse_key_id("arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef")
    assert (arn.region, arn.account, arn.multi_region) == (EU, "111122223333", True)
    assert arn.in_region(AP) == "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-0123456789abcdef0123456789abcdef"
    alias_arn = parse_key_id("arn:aws:kms:eu-west-1:111122223333:alias/orders")
    assert (alias_arn.resource_type, alias_arn.resource_id, alias_arn.multi_region) == ("alias", "alias/orders", False)
    assert parse_key_id("alias/orders").region is None
    assert not parse_key_id("1234abcd-12ab-34cd-56ef-1234567890ab").multi_region
    assert not parse_key_id("mrk-short").multi_region
    for bad in ("", "arn:aws:kms:us-east-1:111122223333:bucket/x", "arn:aws:s3:::bucket", "x" * 3000):
        with pytest.raises(ConfigurationError):
            parse_key_id(bad)


async def test_an_mrk_goes_to_the_nearest_region_with_its_arn_rewritten(kms: FakeKms) -> None:
    mrk = kms.create_key(US, multi_region=True, replicas=(EU, AP))
    kms.latency_s.update({US: 0.03, EU: 0.015})
    async with kms.client(US) as client:
        placement = await client.placement(mrk)
        assert placement.regions == (AP, EU, US)
        made = await client.generate_data_key(mrk)
        assert made.key_arn == mrk.replace(US, AP)
        last = kms.calls[-1]
        assert (last.region, last.key_id, last.signed_region) == (AP, mrk.replace(US, AP), AP)


async def test_a_region_without_the_replica_is_skipped_and_remembered(kms: FakeKms) -> None:
    mrk = kms.create_key(US, multi_region=True, replicas=(EU,))
    kms.latency_s.update({US: 0.03, EU: 0.015})  # AP nearest, but it holds no replica
    async with kms.client(US) as client:
        assert (await client.generate_data_key(mrk)).key_arn == mrk.replace(US, EU)
        assert [c.region for c in kms.calls] == [AP, EU]
        await client.generate_data_key(mrk)
        assert [c.region for c in kms.calls] == [AP, EU, EU]
        assert (await client.placement(mrk)).regions == (EU, US)


async def test_a_replica_disabled_in_the_nearest_region_is_passed_over(kms: FakeKms) -> None:
    mrk = kms.create_key(US, multi_region=True, replicas=(EU, AP))
    kms.latency_s.update({US: 0.03, EU: 0.015})
    kms.disabled.add((AP, mrk.rsplit("/", 1)[1]))  # enabled state is per region
    async with kms.client(US) as client:
        assert (await client.generate_data_key(mrk)).key_arn == mrk.replace(US, EU)
    srk = kms.create_key(AP)
    kms.disabled.add((AP, srk.rsplit("/", 1)[1]))
    async with kms.client(US) as client:
        with pytest.raises(kmsclient.ServiceError) as info:
            await client.generate_data_key(srk)  # a single-region key has nowhere else to go
        assert info.value.code == "DisabledException"


@pytest.mark.parametrize("fault", ["down", "lost", "throttled"])
async def test_idempotent_calls_fail_over_without_an_error(kms: FakeKms, fault: str) -> None:
    mrk = kms.create_key(US, multi_region=True, replicas=(EU, AP))
    kms.latency_s.update({US: 0.03, EU: 0.015})
    async with kms.client(US) as client:
        await client.placement(mrk)
        if fault == "throttled":
            kms.throttled[AP] = 1
        else:
            getattr(kms, fault).add(AP)
        made = await client.generate_data_key(mrk, {"a": "b"})
        out = await client.decrypt(made.ciphertext, {"a": "b"}, key_id=mrk)
        assert out.plaintext == made.plaintext
        if fault != "throttled":
            assert made.key_arn == mrk.replace(US, EU)  # after a real failure: the next nearest


async def test_a_single_region_key_never_leaves_its_region(kms: FakeKms) -> None:
    srk = kms.create_key(EU)
    kms.alias(EU, "alias/orders", srk)
    kms.latency_s.update({EU: 0.03})
    async with kms.client(EU) as client:
        for key in (srk, srk.rsplit("/", 1)[1], "alias/orders"):
            assert (await client.placement(key)).regions == (EU,)
            await client.generate_data_key(key)
        kms.down.add(EU)
        with pytest.raises(NoRegionAvailableError):
            await client.generate_data_key(srk)
    assert {c.region for c in kms.calls} == {EU}


async def test_a_bare_id_or_alias_uses_the_home_region(kms: FakeKms) -> None:
    srk = kms.create_key(AP)
    kms.alias(AP, "alias/x", srk)
    async with kms.client(US) as client:
        with pytest.raises(kmsclient.ServiceError) as info:
            await client.generate_data_key("alias/x")  # the home region has no such alias
        assert info.value.code == "NotFoundException" and info.value.region == US
    async with kms.client(AP) as client:
        await client.generate_data_key("alias/x")


async def test_a_call_that_may_have_been_applied_is_never_repeated(kms: FakeKms) -> None:
    async with kms.client(US) as client:
        kms.lost.add(US)
        with pytest.raises(TransportError):
            await client.call("CreateKey", {})
        assert kms.operations() == ["CreateKey"]
        kms.lost.clear()
        kms.throttled[US] = 2  # throttled: surely not applied, so retried
        out = await client.call("CreateKey", {})
        assert out["KeyMetadata"]["KeyId"]
        assert kms.operations() == ["CreateKey"] * 4


async def test_connection_refused_retries_even_a_non_idempotent_call(kms: FakeKms) -> None:
    class FlakyOnce(FakeKms):
        refused = 1

        async def send(self, method, url, headers, body, *, timeout_s):  # type: ignore[no-untyped-def]
            if method == "POST" and self.refused:
                self.refused -= 1
                raise TransportError("refused", sent=False)
            return await super().send(method, url, headers, body, timeout_s=timeout_s)

    flaky = FlakyOnce((US,))
    async with flaky.client(US) as client:
        await client.call("CreateKey", {})
    assert flaky.operations() == ["CreateKey"]


async def test_error_answers_carry_the_aws_code_and_region(kms: FakeKms) -> None:
    async with kms.client(US) as client:
        with pytest.raises(kmsclient.errors.NotFoundException) as info:
            await client.generate_data_key(f"arn:aws:kms:{US}:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
        assert isinstance(info.value, kmsclient.KmsClientError)
        assert (info.value.code, info.value.region, info.value.status) == ("NotFoundException", US, 400)


async def test_regions_of_no_endpoint_are_a_configuration_error(kms: FakeKms) -> None:
    async with kms.client(US) as client:
        with pytest.raises(ConfigurationError):
            await client.placement("arn:aws:kms:sa-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")


def test_the_sync_wrapper_runs_the_async_client(kms: FakeKms) -> None:
    srk = kms.create_key(US)
    endpoints = [kmsclient.Endpoint(r, kms.url(r)) for r in kms.regions]
    with kmsclient.SyncKmsClient(endpoints, kmsclient.Credentials("AKID", "secret"), transport=kms) as client:
        out = client.call("GenerateDataKey", {"KeyId": srk, "NumberOfBytes": 32})
        assert out["KeyId"] == srk
        keyring = kmsclient.AwsKmsKeyring(client.aio, srk)
        blob = client.run(kmsclient.encrypt(keyring, b"sync"))
        assert client.run(kmsclient.decrypt(keyring, blob)).plaintext == b"sync"
