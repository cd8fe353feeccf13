"""A TCP proxy between regions that a test can cut and restore (asyncpg's test proxy idea).

Bytes pass through untouched (TLS stays end to end between the regions). ``cut()`` closes every
open connection and makes new ones fail at once, as a network partition would; ``heal()``
lets connections through again. ``delay_s`` holds every chunk that long before forwarding it (a
distant region: each round trip gains twice the delay). ``bytes_forwarded`` counts what went through, for tests that
want to see traffic stop and resume.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.cut_off = False
        self.frozen = False
        self.delay_s = 0.0
        self.bytes_forwarded = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"https://{self.listen_host}:{self.port}"

    async def start(self, port: int = 0) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.listen_host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def retarget(self, host: str, port: int) -> None:
        """Send new connections elsewhere (a restarted node on a new port)."""
        self.target = (host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()
            self._tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not self.cut_off:
                data = await reader.read(65536)
                if not data or self.cut_off:
                    return
                if self.frozen:  # swallowed: the peers see an open connection that never answers
                    continue
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                    if self.cut_off:
                        return
                self.bytes_forwarded += len(data)
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        """Drop every connection and refuse new ones until ``heal``."""
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def freeze(self) -> None:
        """Keep every connection open but forward nothing (a half-open TCP connection, a hung peer)."""
        self.frozen = True

    def heal(self) -> None:
        self.cut_off = False
        self.frozen = False

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
