"""The HTTP seam: ``Transport`` sends one request and returns the status and body.

Production uses ``AiohttpTransport``. Tests pass their own object with the same two methods
(for example one that answers from a table, or that fails the first call), so routing, retries
and the encryption layers are tested without a server (the httpx ``MockTransport`` idea).

A failure raises ``TransportError`` with ``sent=False`` only when the request surely never left
(the connection could not be made): that is what allows a retry of a call that is not idempotent.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import aiohttp

from kmsclient.errors import ConfigurationError, TransportError

DEFAULT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0


class Transport(Protocol):
    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate and host name verification, against ``ca_bundle`` (PEM) or the system's trust store."""
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except ssl.SSLError:
        name = Path(ca_bundle or "").name
        raise ConfigurationError(f"cannot use the CA bundle {name}: not PEM certificates") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"cannot use the CA bundle {Path(ca_bundle or '').name}: {reason}") from None


class AiohttpTransport:
    def __init__(self, *, connect_timeout_s: float = CONNECT_TIMEOUT_S, ca_bundle: str | None = None) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._tls = tls_context(ca_bundle)
        self._session: aiohttp.ClientSession | None = None

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> tuple[int, bytes]:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300, ssl=self._tls)
            self._session = aiohttp.ClientSession(connector=connector)
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(self._connect_timeout_s, timeout_s))
        try:
            async with self._session.request(method, url, data=body, headers=dict(headers), timeout=timeout) as resp:
                return resp.status, await resp.read()
        except aiohttp.ClientConnectorCertificateError:
            raise TransportError(
                f"the TLS certificate of {url} is not trusted (set AWS_CA_BUNDLE to its CA)", sent=False
            ) from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise TransportError(f"cannot connect to {url} ({type(exc).__name__})", sent=False) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"no answer from {url} ({type(exc).__name__})", sent=True) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
