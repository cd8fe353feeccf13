"""protocol.routes: the request log context (regiond.logging.start_request)."""

from __future__ import annotations

import asyncio

from regiond import logging as regiond_logging


def test_request_log_context_starts_with_only_the_request_id() -> None:
    previous = regiond_logging.start_request("previous")
    previous.principal = "arn:aws:iam::111122223333:user/a"
    regiond_logging.start_request("next")
    assert regiond_logging.request_context() == {"request_id": "next"}


def test_log_lines_carry_the_request_id_and_principal_a_line_sets_its_own() -> None:
    context = regiond_logging.start_request("r-1")
    line = regiond_logging.merge_request_context(None, "info", {"event": "x"})
    assert line == {"event": "x", "request_id": "r-1"}
    context.principal = "arn:aws:iam::111122223333:user/a"
    line = regiond_logging.merge_request_context(None, "info", {"event": "x", "request_id": "own"})
    assert line == {"event": "x", "request_id": "own", "principal": "arn:aws:iam::111122223333:user/a"}


async def test_each_task_logs_its_own_request() -> None:
    async def request(request_id: str, principal: str) -> dict[str, str]:
        context = regiond_logging.start_request(request_id)
        await asyncio.sleep(0)
        context.principal = principal
        await asyncio.sleep(0)
        return regiond_logging.request_context()

    first, second = await asyncio.gather(request("a", "arn:a"), request("b", "arn:b"))
    assert first == {"request_id": "a", "principal": "arn:a"}
    assert second == {"request_id": "b", "principal": "arn:b"}


def test_a_line_logged_under_the_production_configuration_carries_the_request_context() -> None:
    import io
    import json

    import structlog

    out = io.StringIO()
    saved = structlog.get_config()
    regiond_logging.configure("info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    try:
        context = regiond_logging.start_request("r-2")
        context.principal = "arn:aws:iam::111122223333:user/a"
        structlog.get_logger("t").info("request.rejected", error="X")
    finally:
        structlog.configure(**saved)
    line = json.loads(out.getvalue())
    assert (line["request_id"], line["principal"], line["event"]) == ("r-2", context.principal, "request.rejected")
