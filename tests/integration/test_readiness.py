"""/healthz and /readyz of a real node: readiness fails while the node cannot serve, and recovers.

The database is reached through a TCP proxy the test cuts (unreachable), made read-only (a
demoted primary), and the audit table made unwritable (audit not durable); liveness stays up
throughout. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from botocore.exceptions import ClientError

from regiond.app import LISTENER, POOL, PRELOADER, READINESS
from regiond.service import readiness
from regiond.service.preload import Preloader
from regiond.service.readiness import Readiness
from regiond.store import notify
from tests.support.cluster import Node, NodeFactory
from tests.support.proxy import TcpProxy
from tests.support.regions import wait_until

REJECT_TRIGGER = """
CREATE FUNCTION audit_reject() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit is read-only'; END; $$
LANGUAGE plpgsql;
CREATE TRIGGER audit_reject BEFORE INSERT ON audit_segments FOR EACH ROW EXECUTE FUNCTION audit_reject();
"""


async def _get(node: Node, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(node.endpoint + path) as resp:
        return resp.status, await resp.json()


async def _ready(node: Node) -> bool:
    status, body = await _get(node, "/readyz")
    return status == 200 and body["status"] == "ready"


def _unready_because(node: Node, check: str, *, first: bool = True) -> Any:
    """A probe: the node is unready and ``check`` fails (the first failure when ``first``)."""

    async def probe() -> bool:
        status, body = await _get(node, "/readyz")
        failing = status == 503 and body["checks"].get(check, "ok") != "ok"
        return failing and (not first or body["reason"].startswith(check))

    return probe


async def _via_proxy(nodes: NodeFactory) -> tuple[str, str, TcpProxy]:
    url = urlsplit(await nodes.database())
    assert url.hostname is not None and url.port is not None
    proxy = await TcpProxy(url.hostname, url.port).start()
    user, _host = url.netloc.rsplit("@", 1)
    return urlunsplit(url), urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{proxy.port}")), proxy


async def test_a_ready_node_says_what_it_checked(nodes: NodeFactory) -> None:
    node = await nodes.start()
    await wait_until(lambda: _ready(node), what="the node to be ready")
    status, body = await _get(node, "/readyz")
    assert status == 200
    assert body["checks"] == dict.fromkeys(
        ("database", "migrations", "writable", "audit", "notifications", "caches"), "ok"
    )
    assert body["schema_version"] >= 1
    assert await _get(node, "/healthz") == (200, {"status": "ok"})


async def test_readiness_fails_while_the_database_is_unreachable_and_liveness_does_not(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "PING_INTERVAL_S", 0.2)
    monkeypatch.setattr(notify, "PING_TIMEOUT_S", 0.5)
    _direct, via_proxy, proxy = await _via_proxy(nodes)
    try:
        node = await nodes.start(database_url=via_proxy)
        await wait_until(lambda: _ready(node), what="the node to be ready")
        proxy.cut()
        await wait_until(_unready_because(node, "database"), what="readiness to fail on the database")
        listener_down = _unready_because(node, "notifications", first=False)
        await wait_until(listener_down, what="readiness to see the listener down")
        assert (await _get(node, "/healthz"))[0] == 200
        proxy.heal()
        await wait_until(lambda: _ready(node), what="the node to be ready again")
    finally:
        await proxy.close()


async def test_readiness_fails_on_a_read_only_database(nodes: NodeFactory) -> None:
    node = await nodes.start()
    await wait_until(lambda: _ready(node), what="the node to be ready")
    name = urlsplit(node.database_url).path.lstrip("/")
    admin = await asyncpg.connect(node.database_url)
    kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    try:
        # What the pool sees after a failover that left it on a demoted primary: read-only sessions.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await admin.execute(kill, name)  # the node's sessions start again, read-only now
        await wait_until(_unready_because(node, "writable"), what="readiness to refuse a read-only database")
        status, body = await _get(node, "/readyz")
        assert status == 503
        assert body["checks"]["writable"] == "the database's sessions are read-only"
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.execute(kill, name)
        await wait_until(lambda: _ready(node), what="the node to be ready again")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.close()


async def test_readiness_fails_while_audit_events_cannot_be_made_durable(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "AUDIT_FAILURE_HOLD_S", 2.0)
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await asyncio.to_thread(kms.create_key))["KeyMetadata"]["KeyId"]
    await wait_until(lambda: _ready(node), what="the node to be ready")
    admin = await asyncpg.connect(node.database_url)
    try:
        await admin.execute(REJECT_TRIGGER)
        with pytest.raises(ClientError) as info:
            await asyncio.to_thread(kms.encrypt, KeyId=key_id, Plaintext=b"not without its audit event")
        assert info.value.response["Error"]["Code"] == "KMSInternalException"
        status, body = await _get(node, "/readyz")
        assert status == 503 and body["checks"]["audit"] == "audit writes are failing"
        await admin.execute("DROP TRIGGER audit_reject ON audit_segments; DROP FUNCTION audit_reject()")
        # Unready nodes get no traffic: the failure stops counting after the hold, then a call succeeds.
        await wait_until(lambda: _ready(node), what="the node to be ready after the hold")
        await asyncio.to_thread(kms.encrypt, KeyId=key_id, Plaintext=b"audited again")
        assert await _ready(node)
    finally:
        await admin.close()


async def test_readiness_waits_for_the_first_preload_pass(nodes: NodeFactory) -> None:
    node = await nodes.start()
    await wait_until(lambda: _ready(node), what="the node to be ready")
    preloader = node.app[PRELOADER]
    fresh = Preloader(node.app[POOL], preloader._keys, preloader._grants, max_keys=100)
    check = Readiness(node.app[POOL], node.app[LISTENER], fresh, None)
    ready, body = await check.check()
    assert not ready and body["reason"] == "caches: the first preload pass is still running"
    await fresh.preload()
    assert (await check.check())[0]
    assert node.app[READINESS].preloader is preloader and preloader.loaded
