"""Requests that are not HTTP: aiohttp refuses them, regiond keeps the log quiet about it.

aiohttp's parser refuses a message before any handler runs (a NUL in a header, a repeated
Content-Length, Host, Content-Type or User-Agent, a malformed Content-Length or chunk) and
answers a bare 400 itself, so such an answer has no ``x-amzn-RequestId``: no request existed.
It also logs each one as an ERROR with the parser's traceback, which turns any client's
malformed bytes into tracebacks in an operator's log. The filter here keeps one INFO line
naming the peer and the parser's error class, without the traceback or the offending bytes
(they may hold a credential).
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER = "aiohttp.server"


class _RefusedHttp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "http.refused peer=%s error=%s status=%s", (peer, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_FILTER = _RefusedHttp()


def quiet_refused_http() -> None:
    """Install the filter on aiohttp's server logger (idempotent: a filter is added once)."""
    logging.getLogger(SERVER_LOGGER).addFilter(_FILTER)
