"""The caching CMM's limits and metrics, and the keyrings' matching rules (in-memory KMS twin)."""

from __future__ import annotations

import pytest

import kmsclient
from kmsclient.cmm import LocalCache
from kmsclient.errors import ConfigurationError, MaterialsError
from kmsclient.keyrings import mrk_match
from tests.support.fake_kms import FakeKms

US, EU = "us-east-1", "eu-west-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kms() -> FakeKms:
    return FakeKms((US, EU))


def _gdk(kms: FakeKms) -> int:
    return kms.operations().count("GenerateDataKey")


async def test_encrypt_materials_are_reused_within_age_messages_and_bytes(kms: FakeKms) -> None:
    keyring = kmsclient.AwsKmsKeyring(kms.client(), kms.create_key(US))
    clock = Clock()
    cmm = kmsclient.CachingCmm(keyring, cache=LocalCache(10, clock=clock), max_age_s=60, max_messages=3, max_bytes=100)
    for _ in range(3):
        await kmsclient.encrypt(cmm, b"x" * 10, encryption_context={"a": "1"})
    assert _gdk(kms) == 1 and (cmm.metrics.encrypt_hits, cmm.metrics.encrypt_misses) == (2, 1)
    await kmsclient.encrypt(cmm, b"x" * 10, encryption_context={"a": "1"})  # a 4th message: a new data key
    assert _gdk(kms) == 2
    await kmsclient.encrypt(cmm, b"x" * 95, encryption_context={"a": "1"})  # over max_bytes with the 10 used
    assert _gdk(kms) == 3
    await kmsclient.encrypt(cmm, b"x", encryption_context={"a": "2"})  # another context: another entry
    assert _gdk(kms) == 4
    clock.now += 61
    await kmsclient.encrypt(cmm, b"x", encryption_context={"a": "2"})  # expired
    assert _gdk(kms) == 5
    await kmsclient.encrypt(cmm, b"x" * 101, encryption_context={"a": "2"})  # longer than max_bytes: never cached
    await kmsclient.encrypt(cmm, b"x" * 101, encryption_context={"a": "2"})
    assert _gdk(kms) == 7


async def test_decrypt_materials_are_cached_per_message_keys_and_context(kms: FakeKms) -> None:
    keyring = kmsclient.AwsKmsKeyring(kms.client(), kms.create_key(US))
    cmm = kmsclient.CachingCmm(keyring, max_age_s=60)
    blob = await kmsclient.encrypt(keyring, b"data", encryption_context={"a": "1"})
    for _ in range(3):
        assert (await kmsclient.decrypt(cmm, blob)).plaintext == b"data"
    assert kms.operations().count("Decrypt") == 1
    assert (cmm.metrics.decrypt_hits, cmm.metrics.decrypt_misses) == (2, 1)
    with pytest.raises(MaterialsError):  # a different reproduced context is a different entry, checked again
        await kmsclient.decrypt(cmm, blob, encryption_context={"a": "2"})


async def test_partitions_share_a_cache_without_sharing_entries(kms: FakeKms) -> None:
    cache = LocalCache(10)
    keyring = kmsclient.AwsKmsKeyring(kms.client(), kms.create_key(US))
    a = kmsclient.CachingCmm(keyring, cache=cache, max_age_s=60, partition="a")
    b = kmsclient.CachingCmm(keyring, cache=cache, max_age_s=60, partition="b")
    await kmsclient.encrypt(a, b"x")
    await kmsclient.encrypt(b, b"x")
    await kmsclient.encrypt(a, b"x")
    assert _gdk(kms) == 2 and len(cache) == 2


async def test_the_cache_holds_at_most_its_capacity(kms: FakeKms) -> None:
    keyring = kmsclient.AwsKmsKeyring(kms.client(), kms.create_key(US))
    cmm = kmsclient.CachingCmm(keyring, cache=LocalCache(2), max_age_s=60)
    for i in range(5):
        await kmsclient.encrypt(cmm, b"x", encryption_context={"n": str(i)})
    assert len(cmm.cache) == 2
    await kmsclient.encrypt(cmm, b"x", encryption_context={"n": "0"})  # evicted long ago
    assert _gdk(kms) == 6


def test_caching_limits_are_validated() -> None:
    kms = FakeKms((US,))
    keyring = kmsclient.AwsKmsKeyring(kms.client(), kms.create_key(US))
    for bad in ({"max_age_s": 0}, {"max_age_s": 1, "max_messages": 0}, {"max_age_s": 1, "max_messages": 2**32 + 1}):
        with pytest.raises(ConfigurationError):
            kmsclient.CachingCmm(keyring, **bad)  # type: ignore[arg-type]


def test_mrk_match_ignores_only_the_region() -> None:
    mrk = "arn:aws:kms:us-east-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"
    assert mrk_match(mrk, mrk.replace("us-east-1", "eu-west-1"))
    assert not mrk_match(mrk, mrk.replace("111122223333", "444455556666"))
    assert not mrk_match(mrk, mrk.replace("arn:aws:", "arn:aws-cn:"))
    srk = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert mrk_match(srk, srk) and not mrk_match(srk, srk.replace("us-east-1", "eu-west-1"))
    assert not mrk_match(mrk, "mrk-0123456789abcdef0123456789abcdef")


async def test_strict_keyrings_match_exactly_and_mrk_keyrings_any_replica(kms: FakeKms) -> None:
    client = kms.client(US)
    kms.latency_s[EU] = 0.02  # the data key comes from US
    mrk = kms.create_key(US, multi_region=True, replicas=(EU,))
    blob = await kmsclient.encrypt(kmsclient.AwsKmsMrkKeyring(client, mrk), b"m")
    other_region = mrk.replace(US, EU)
    with pytest.raises(MaterialsError):
        await kmsclient.decrypt(kmsclient.AwsKmsKeyring(client, other_region), blob)
    assert (await kmsclient.decrypt(kmsclient.AwsKmsMrkKeyring(client, other_region), blob)).plaintext == b"m"


async def test_discovery_filters_by_account_and_cannot_encrypt(kms: FakeKms) -> None:
    client = kms.client(US)
    blob = await kmsclient.encrypt(kmsclient.AwsKmsKeyring(client, kms.create_key(US)), b"d")
    mine = kmsclient.AwsKmsDiscoveryKeyring(
        client, discovery_filter=kmsclient.DiscoveryFilter(frozenset({"111122223333"}))
    )
    theirs = kmsclient.AwsKmsDiscoveryKeyring(
        client, discovery_filter=kmsclient.DiscoveryFilter(frozenset({"444455556666"}))
    )
    assert (await kmsclient.decrypt(mine, blob)).plaintext == b"d"
    with pytest.raises(MaterialsError):
        await kmsclient.decrypt(theirs, blob)
    with pytest.raises(MaterialsError):
        await kmsclient.encrypt(mine, b"d")
    with pytest.raises(ConfigurationError):
        kmsclient.DiscoveryFilter(frozenset({"123"}))


async def test_a_kms_answer_for_another_key_is_refused(kms: FakeKms) -> None:
    """A keyring checks that KMS answered with the key it asked for (a lying or confused service)."""
    client = kms.client(US)
    arn = kms.create_key(US)
    blob = await kmsclient.encrypt(kmsclient.AwsKmsKeyring(client, arn), b"d")
    original = kms._op_Decrypt

    def lying(region: str, p: dict[str, object]) -> dict[str, object]:
        out = original(region, p)
        out["KeyId"] = kms.create_key(US)
        return out

    kms._op_Decrypt = lying  # type: ignore[method-assign]
    with pytest.raises(MaterialsError, match="another key"):
        await kmsclient.decrypt(kmsclient.AwsKmsKeyring(client, arn), blob)
