"""LISTEN/NOTIFY: how every worker and node of a region learns that cached state changed.

One dedicated connection per process listens on the channels; callbacks receive the
payload. If the connection drops, every callback is told to drop everything
(payload ``None``), because notifications sent while we were away are lost.

Every ``PING_INTERVAL_S`` the listener runs ``SELECT 1`` on that connection and gives it
``PING_TIMEOUT_S`` to answer: notifications travel on the same connection, so an answered ping
shows it is alive and delivering, and an unanswered one (a half-open TCP connection, a hung
server) counts as a drop. A notification can therefore go missing unnoticed for at most about
``PING_INTERVAL_S + PING_TIMEOUT_S`` seconds, after which every cache is emptied; the caches'
TTL is only the backstop for a change that was never notified at all.

After a failover the reconnect goes through the database URL again (``store.pool.connect``), so
with a multi-host URL and ``target_session_attrs=read-write`` it listens on the new primary, where
the NOTIFYs of every write are now sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from regiond.store.pool import connect

log = structlog.get_logger(__name__)

Callback = Callable[[str | None], None]
RECONNECT_DELAY_S = 1.0
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 5.0


class Listener:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._callbacks: dict[str, list[Callback]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # True from LISTEN until the connection is lost: while false a change may go unnoticed, so
        # the node is not ready (regiond.service.readiness).
        self.connected = False

    def subscribe(self, channel: str, callback: Callback) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    def _dispatch(self, channel: str, payload: str | None) -> None:
        for cb in self._callbacks.get(channel, []):
            try:
                cb(payload)
            except Exception:
                log.exception("notify.callback_failed", channel=channel)

    def _on_notify(self, _con: object, _pid: int, channel: str, payload: object) -> None:
        self._dispatch(channel, payload if isinstance(payload, str) else None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def _run(self) -> None:
        while True:
            con = None
            try:
                con = await connect(self._url)  # keepalives, connect timeout; multi-host URLs: the primary
                for channel in self._callbacks:
                    await con.add_listener(channel, self._on_notify)
                for channel in self._callbacks:  # anything sent before we listened is unknown
                    self._dispatch(channel, None)
                self._ready.set()
                self.connected = True
                while not con.is_closed():
                    await asyncio.sleep(PING_INTERVAL_S)
                    await con.execute("SELECT 1", timeout=PING_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notify.connection_lost", error=type(exc).__name__)
            finally:
                self.connected = False
                if con is not None and not con.is_closed():
                    try:
                        await con.close(timeout=2)
                    except Exception:  # a peer that does not answer cannot take part in a clean close
                        con.terminate()
            for channel in self._callbacks:
                self._dispatch(channel, None)
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
