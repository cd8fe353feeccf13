"""protocol.routes: the request log context."""

from __future__ import annotations

import re
from pathlib import Path

import structlog

from regiond.protocol import routes


def test_request_log_context_starts_with_only_the_request_id() -> None:
    structlog.contextvars.bind_contextvars(request_id="previous", principal="arn:aws:iam::111122223333:user/a")
    try:
        routes._bind_log_context("next")
        assert structlog.contextvars.get_contextvars() == {"request_id": "next"}
    finally:
        structlog.contextvars.clear_contextvars()


def test_only_the_request_path_binds_log_context() -> None:
    """``_bind_log_context`` resets the keys ``handle`` binds instead of clearing the context:
    that is only the same while no other code binds context-local log values."""
    root = Path(__file__).resolve().parents[2]
    binders = {
        path.relative_to(root).as_posix()
        for package in ("regiond", "replication", "kmsclient")
        for path in (root / package).rglob("*.py")
        if "bind_contextvars(" in path.read_text()
    }
    assert binders == {"regiond/protocol/routes.py"}
    source = (root / "regiond/protocol/routes.py").read_text()
    bound = set(re.findall(r"bind_contextvars\((\w+)=", source))
    assert bound == set(routes._LOG_CONTEXT_KEYS)
