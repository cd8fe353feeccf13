"""HTTP/1.1 over a raw socket: for clients no HTTP library would be (stalling, dribbling, hanging up)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

# Deadlines are bounds on how long a test waits for an outcome, never what it asserts.
OUTCOME_DEADLINE_S = 30.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        doc = orjson.loads(self.body)
        assert isinstance(doc, dict)
        return doc


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, endpoint: str, tls: ssl.SSLContext | None = None) -> RawConnection:
        """A connection to ``endpoint``: plain TCP, or TLS with ``tls`` (an ``https://`` endpoint)."""
        url = urlsplit(endpoint)
        assert url.hostname is not None and url.port is not None
        reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=tls)
        return cls(reader, writer)

    def peer_certificate(self) -> bytes:
        """The DER certificate the server presented (TLS connections)."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert ssl_object is not None, "not a TLS connection"
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, deadline_s: float = OUTCOME_DEADLINE_S) -> Answer | None:
        """The next response, or None if the server closed the connection (EOF or reset) first."""
        async with asyncio.timeout(deadline_s):
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
            return Answer(int(status_line.split(" ", 2)[1]), headers, body)

    async def closed_by_server(self, deadline_s: float = OUTCOME_DEADLINE_S) -> bool:
        """True once the server has closed the connection (EOF or reset); False if it stays open until the deadline."""
        try:
            async with asyncio.timeout(deadline_s):
                while True:
                    try:
                        if not await self.reader.read(65536):
                            return True
                    except ConnectionError:
                        return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    @contextlib.asynccontextmanager
    async def dribbling(self, piece: bytes, interval_s: float = 0.1) -> AsyncIterator[None]:
        """Send ``piece`` every ``interval_s`` in the background while the block runs (until the server hangs up)."""

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await self.send(piece)
                    await asyncio.sleep(interval_s)

        task = asyncio.create_task(dribble())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


HEALTHZ = request_head("GET", "/healthz")
