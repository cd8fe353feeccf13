"""structlog setup: JSON lines with the request id, and a redaction processor.

The redaction processor removes fields whose names say they hold secrets, even when
someone passes them by mistake, and is the last line of defence behind code review.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
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
