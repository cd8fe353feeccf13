"""structlog setup: JSON lines with the request id, and a redaction processor.

The redaction processor removes fields whose names say they hold secrets, even when
someone passes them by mistake, and is the last line of defence behind code review.

The request's log context (``request_id``, then ``principal`` once authenticated) is one
``RequestLogContext`` held in one context variable (``start_request``), merged into a line only
when one is written (``merge_request_context``). Binding them with structlog's
``bind_contextvars`` per request cost one context variable per key, set and reset on every call,
and no line is logged for most calls: the work is now done by the lines that are written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

REDACTED_FIELDS = frozenset(
    {
        "plaintext",
        "key_material",
        "secret_access_key",
        "secret",
        "data_key",
        "password",
        "ciphertext_blob",
        "authorization",
        "root_key",
        "private_key",
        "shared_secret",
        "mac",
        "signing_key",
        "key_store_password",
    }
)


class RequestLogContext:
    """The log context of one request: its id, and its principal's ARN once authenticated.

    One object per request, set once; ``principal`` is filled in place, so a task the request
    starts (which copies the context) logs the same values."""

    __slots__ = ("principal", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.principal: str | None = None


_REQUEST: ContextVar[RequestLogContext | None] = ContextVar("regiond_request_log", default=None)


def start_request(request_id: str) -> RequestLogContext:
    """Begin a request's log context (nothing of the previous request's is kept) and return it."""
    context = RequestLogContext(request_id)
    _REQUEST.set(context)
    return context


def request_context() -> dict[str, str]:
    """The current request's log values (what ``merge_request_context`` adds), for tests and tools."""
    context = _REQUEST.get()
    if context is None:
        return {}
    values = {"request_id": context.request_id}
    if context.principal is not None:
        values["principal"] = context.principal
    return values


def merge_request_context(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add the current request's ``request_id`` and ``principal`` to a line (a value the line sets wins)."""
    context = _REQUEST.get()
    if context is not None:
        event.setdefault("request_id", context.request_id)
        if context.principal is not None:
            event.setdefault("principal", context.principal)
    return event


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event):
        if name.lower() in REDACTED_FIELDS:
            event[name] = "<redacted>"
    return event


def configure(level: str = "info", *, json: bool = True) -> None:
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
