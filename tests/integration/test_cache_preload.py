"""Warm caches (issue 8, "many keys"): a cold key is one query, and a worker preloads its key
and grant caches in the background at start and after every cache drop, never storing a row
that changed while its page was loading."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import botocore.exceptions
import pytest

from regiond.app import LISTENER, POOL, PRELOADER
from regiond.domain.key import KeyState
from regiond.errors import KMSInternalException
from regiond.protocol.routes import SERVICES
from regiond.service.grants import GrantCache
from regiond.service.keycache import CHANNEL as KEYS_CHANNEL
from regiond.service.keycache import KeyCache
from regiond.service.preload import Preloader
from regiond.store import grants as grant_store
from regiond.store import keys as key_store
from regiond.store.pool import Pool, connection, create_pool
from tests.support.aws import aws_call, error_code
from tests.support.cluster import ACCOUNT_ID, Node, NodeFactory
from tests.support.pools import counting_acquires
from tests.support.regions import wait_until

QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600", "rotation_interval_s": "3600"}
NO_PRELOAD: dict[str, Any] = {"cache_preload_max_keys": 0, "extra": QUIET}
GRANTEE = f"arn:aws:iam::{ACCOUNT_ID}:user/admin"


async def until(predicate: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return predicate()

    await wait_until(check, what=what)


@asynccontextmanager
async def own_caches(node: Node) -> AsyncIterator[tuple[Pool, KeyCache, GrantCache]]:
    """Caches of our own on ``node``'s database, reached by no listener: only what the test
    invalidates is invalidated, so a race can be driven step by step."""
    pool = await create_pool(node.database_url, min_size=1, max_size=2)
    try:
        grants = GrantCache(pool, ttl_s=3600)
        yield pool, KeyCache(pool, node.keyring, ttl_s=3600, grants=grants), grants
    finally:
        await pool.close()


async def make_keys(kms: Any, count: int) -> list[str]:
    return [str((await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]) for _ in range(count)]


async def test_one_query_load_returns_what_the_separate_queries_return(nodes: NodeFactory) -> None:
    node = await nodes.start(audit=False, **NO_PRELOAD)
    kms = node.client(await nodes.identity(node))
    rotated = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    for _ in range(2):
        await aws_call(kms.rotate_key_on_demand, KeyId=rotated)
    pending_import = (await aws_call(kms.create_key, Origin="EXTERNAL"))["KeyMetadata"]["KeyId"]
    multi_region = (await aws_call(kms.create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
    granted = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.create_grant, KeyId=granted, GranteePrincipal=GRANTEE, Operations=["Encrypt"])
    await aws_call(
        kms.create_grant, KeyId=granted, GranteePrincipal=GRANTEE, Operations=["Decrypt", "Encrypt"],
        Constraints={"EncryptionContextSubset": {"tenant": "a"}},
    )  # fmt: skip
    key_ids = sorted([rotated, pending_import, multi_region, granted])

    async with connection(node.app[POOL]) as con:
        for key_id in key_ids:
            loaded = await key_store.load_key(con, key_id, with_grants=True)
            assert loaded is not None
            assert loaded.record == await key_store.get_key(con, key_id)
            assert loaded.versions == await key_store.versions(con, key_id)
            assert loaded.grants == tuple(r.view() for r in await grant_store.for_key(con, key_id))
            without = await key_store.load_key(con, key_id)
            assert without is not None and without.grants is None and without.versions == loaded.versions
        by_id = {k: await key_store.load_key(con, k, with_grants=True) for k in key_ids}
        assert [v.version for v in by_id[rotated].versions] == [1, 2, 3]  # type: ignore[union-attr]
        assert by_id[pending_import].versions == []  # type: ignore[union-attr]
        assert len(by_id[granted].grants or ()) == 2  # type: ignore[union-attr]
        assert await key_store.load_key(con, "00000000-0000-4000-8000-000000000000") is None
        # pages: key-id order, each row as the single-key load gives it
        pages, after = [], ""
        while page := await key_store.load_keys(con, after=after, limit=3, with_grants=True):
            pages.append(page)
            after = page[-1].record.key.key_id
        assert [len(p) for p in pages] == [3, 1]
        assert [loaded for page in pages for loaded in page] == [by_id[k] for k in key_ids]


async def test_a_cold_key_costs_one_connection_and_primes_its_grants(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await nodes.start(audit=False, **NO_PRELOAD)
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.create_grant, KeyId=key_id, GranteePrincipal=GRANTEE, Operations=["Encrypt"])
    await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"p")  # warms the credentials
    services = node.app[SERVICES]
    services.keys.cache.invalidate(key_id)
    services.grants.cache.invalidate(key_id)
    grant_loads = services.grants.cache.loads
    with counting_acquires(node.app[POOL], monkeypatch) as acquired:
        await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"p")
    assert acquired[0] == 1
    assert services.grants.cache.loads == grant_loads  # the grants came with the key


async def test_a_started_worker_preloads_every_key_so_requests_load_none(nodes: NodeFactory) -> None:
    writer = await nodes.start(audit=False, **NO_PRELOAD)
    ident = await nodes.identity(writer)
    key_ids = await make_keys(writer.client(ident), 12)
    await aws_call(
        writer.client(ident).create_grant, KeyId=key_ids[0], GranteePrincipal=GRANTEE, Operations=["Encrypt"]
    )
    await aws_call(writer.client(ident).disable_key, KeyId=key_ids[1])  # cached too: requests check the state

    reader = await nodes.start(
        audit=False, database_url=writer.database_url, state_dir=writer.state_dir, extra=QUIET
    )  # default settings: preload on
    preloader = reader.app[PRELOADER]
    await until(lambda: preloader.last is not None, "the first preload pass")
    assert preloader.last is not None and preloader.last.complete and preloader.last.stored == len(key_ids)
    kms = reader.client(ident)
    services = reader.app[SERVICES]
    key_loads, grant_loads = services.keys.cache.loads, services.grants.cache.loads

    async def encrypt_everywhere() -> None:
        for key_id in key_ids:
            try:
                await aws_call(kms.encrypt, KeyId=key_id, Plaintext=b"p")
            except botocore.exceptions.ClientError as exc:
                assert key_id == key_ids[1] and error_code(exc) == "DisabledException"

    await encrypt_everywhere()
    assert (services.keys.cache.loads, services.grants.cache.loads) == (key_loads, grant_loads)

    # a lost listener connection empties the caches ("drop everything"): the preload runs again
    passes = preloader.passes
    reader.app[LISTENER]._dispatch(KEYS_CHANNEL, None)
    reader.app[LISTENER]._dispatch(grant_store.CHANNEL, None)
    await until(lambda: preloader.passes > passes, "a preload pass after the drop")
    assert preloader.last is not None and preloader.last.stored == len(key_ids)
    await encrypt_everywhere()
    assert (services.keys.cache.loads, services.grants.cache.loads) == (key_loads, grant_loads)


async def test_a_key_changed_while_its_page_loads_is_never_stored_stale(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await nodes.start(audit=False, **NO_PRELOAD)
    kms = node.client(await nodes.identity(node))
    disabled, rotated, granted, *others = sorted(await make_keys(kms, 6))
    async with own_caches(node) as (pool, keys, grants):
        original = key_store.load_keys

        async def load_then_change(con: Any, **kwargs: Any) -> list[key_store.LoadedKey]:
            """The page is read; then three keys change and their notifications arrive, all
            before the page's rows are stored."""
            page = await original(con, **kwargs)
            await aws_call(kms.disable_key, KeyId=disabled)
            keys.invalidate(disabled)
            await aws_call(kms.rotate_key_on_demand, KeyId=rotated)
            keys.invalidate(rotated)
            await aws_call(kms.create_grant, KeyId=granted, GranteePrincipal=GRANTEE, Operations=["Encrypt"])
            grants.invalidate(granted)
            return page

        monkeypatch.setattr(key_store, "load_keys", load_then_change)
        result = await Preloader(pool, keys, grants, max_keys=100).preload()
        monkeypatch.undo()

        entry = await keys.get(disabled)
        assert entry is not None and entry.key.key_state is KeyState.DISABLED
        entry = await keys.get(rotated)
        assert entry is not None and entry.current_version == 2 and sorted(entry.backing) == [1, 2]
        assert [g.grantee_principal for g in await grants.grants(granted)] == [GRANTEE]
        # every other key of the page was stored: one change costs one key, not the page
        assert result.complete and (result.read, result.stored) == (6, 4)
        loads = keys.loads
        for key_id in [granted, *others]:
            await keys.get(key_id)
        assert keys.loads == loads


async def test_a_drop_everything_during_a_page_stores_nothing_and_asks_for_a_new_pass(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await nodes.start(audit=False, **NO_PRELOAD)
    await make_keys(node.client(await nodes.identity(node)), 3)
    async with own_caches(node) as (pool, keys, grants):
        original = key_store.load_keys

        async def load_then_drop(con: Any, **kwargs: Any) -> list[key_store.LoadedKey]:
            page = await original(con, **kwargs)
            keys.invalidate(None)
            return page

        monkeypatch.setattr(key_store, "load_keys", load_then_drop)
        preloader = Preloader(pool, keys, grants, max_keys=100)
        result = await preloader.preload()
        monkeypatch.undo()
        assert not result.complete and result.stored == 0 and len(keys) == 0
        assert preloader.pending
        result = await preloader.preload()  # what ``run`` does next
        assert result.complete and result.stored == 3


async def test_the_preload_stops_at_its_cap(nodes: NodeFactory) -> None:
    node = await nodes.start(audit=False, **NO_PRELOAD)
    key_ids = sorted(await make_keys(node.client(await nodes.identity(node)), 5))
    async with own_caches(node) as (pool, keys, grants):
        result = await Preloader(pool, keys, grants, max_keys=3, page_keys=2).preload()
        assert (result.read, result.stored, result.pages) == (3, 3, 2)
        assert len(keys) == 3
        loads = keys.loads
        for key_id in key_ids[:3]:  # key-id order
            await keys.get(key_id)
        assert keys.loads == loads


async def test_keys_that_cannot_be_read_are_skipped_and_the_rest_loaded(nodes: NodeFactory) -> None:
    node = await nodes.start(audit=False, **NO_PRELOAD)
    key_ids = await make_keys(node.client(await nodes.identity(node)), 5)
    bad_material, bad_policy = key_ids[0], key_ids[1]
    async with connection(node.app[POOL]) as con:
        await con.execute("UPDATE key_versions SET material_wrapped = $2 WHERE key_id = $1", bad_material, b"\x01" * 60)
        await con.execute("UPDATE keys SET policy = 'not a policy' WHERE key_id = $1", bad_policy)
    async with own_caches(node) as (pool, keys, grants):
        result = await Preloader(pool, keys, grants, max_keys=100, page_keys=2).preload()
        assert result.complete and (result.read, result.stored, result.skipped) == (5, 3, 2)
        loads = keys.loads
        for key_id in key_ids[2:]:
            await keys.get(key_id)
        assert keys.loads == loads
        for key_id in (bad_material, bad_policy):  # the request path fails as it always did
            with pytest.raises(KMSInternalException):
                await keys.get(key_id)
