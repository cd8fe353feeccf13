"""The change listener notices a connection that stays open but no longer delivers anything."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import pytest

from regiond.store import notify
from tests.support.cluster import NodeFactory
from tests.support.proxy import TcpProxy


async def test_a_silent_listener_connection_empties_the_caches_within_the_ping_timeout(
    nodes: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "PING_INTERVAL_S", 0.2)
    monkeypatch.setattr(notify, "PING_TIMEOUT_S", 0.5)
    url = urlsplit(await nodes.database())
    assert url.hostname is not None and url.port is not None
    proxy = await TcpProxy(url.hostname, url.port).start()
    netloc = url.netloc.rsplit("@", 1)
    via_proxy = urlunsplit(url._replace(netloc=f"{netloc[0]}@127.0.0.1:{proxy.port}"))
    dropped = asyncio.Event()
    payloads: list[str | None] = []

    def on_change(payload: str | None) -> None:
        payloads.append(payload)
        if payload is None and len(payloads) > 1:  # the first None is the "listening now" flush
            dropped.set()

    listener = notify.Listener(via_proxy)
    listener.subscribe("regionkms_test", on_change)
    try:
        await listener.start()
        assert payloads == [None]
        proxy.freeze()  # no FIN, no RST: only the unanswered ping can tell
        await asyncio.wait_for(dropped.wait(), timeout=10)
    finally:
        await listener.stop()
        await proxy.close()
