"""Slow, greedy and vanishing clients against a real node: header, body and idle time bounds, connections
per worker (issue 13, finding 9), a client hanging up mid-body (finding 11). Each test configures small
bounds and asserts the outcome, waiting for it with a generous deadline (tests/support/sockets.py); none
measures how fast it came."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import aiohttp
import pytest
import structlog

from regiond.audit.calls import CallRecord
from regiond.protocol.routes import AUDIT
from tests.support.cluster import Node, NodeFactory
from tests.support.regions import wait_until
from tests.support.sockets import HEALTHZ, RawConnection, request_head

KMS_HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"}


async def test_a_stalled_body_is_answered_request_timeout_and_the_connection_closed(nodes: NodeFactory) -> None:
    node = await nodes.start(http_body_timeout_s=0.5)
    async with await RawConnection.open(node.endpoint) as conn:
        await conn.send(request_head("POST", "/", {**KMS_HEADERS, "Content-Length": "100"}) + b"{}")
        answer = await conn.answer()
        assert answer is not None, "the node closed the connection without an answer"
        assert answer.status == 408
        assert answer.json()["__type"] == "RequestTimeoutException"
        assert answer.headers["x-amzn-requestid"]
        assert await conn.closed_by_server()


async def test_a_body_dribbled_a_byte_at_a_time_does_not_extend_the_bound(nodes: NodeFactory) -> None:
    """The body bound is on the whole body, not between reads: a byte every 100 ms would keep a per-read timer happy."""
    node = await nodes.start(http_body_timeout_s=0.5)
    async with await RawConnection.open(node.endpoint) as conn:
        await conn.send(request_head("POST", "/", {**KMS_HEADERS, "Content-Length": "100000"}))
        async with conn.dribbling(b" "):
            answer = await conn.answer()
        assert answer is not None and answer.status == 408


async def test_slow_headers_are_cut_off(nodes: NodeFactory) -> None:
    """One header value a byte at a time: it never reaches aiohttp's size or count limits before the bound."""
    node = await nodes.start(http_header_timeout_s=0.5, http_idle_timeout_s=600)
    async with await RawConnection.open(node.endpoint) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        async with conn.dribbling(b"a"):
            assert await conn.closed_by_server()


async def test_slow_headers_on_a_kept_alive_connection_are_cut_off(nodes: NodeFactory) -> None:
    node = await nodes.start(http_header_timeout_s=0.5, http_idle_timeout_s=600)
    async with await RawConnection.open(node.endpoint) as conn:
        await conn.send(HEALTHZ)
        first = await conn.answer()
        assert first is not None and first.status == 200
        await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert await conn.closed_by_server()


async def test_a_connection_that_never_sends_a_request_is_closed(nodes: NodeFactory) -> None:
    node = await nodes.start(http_header_timeout_s=0.5, http_idle_timeout_s=600)
    async with await RawConnection.open(node.endpoint) as conn:
        assert await conn.closed_by_server()


async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(nodes: NodeFactory) -> None:
    node = await nodes.start(http_idle_timeout_s=0.5)
    async with await RawConnection.open(node.endpoint) as conn:
        await conn.send(HEALTHZ)
        answer = await conn.answer()
        assert answer is not None and answer.status == 200
        assert await conn.closed_by_server()


async def test_the_header_bound_does_not_cut_an_idle_kept_alive_connection(nodes: NodeFactory) -> None:
    """Idle between requests is the idle timeout's business, however short the header bound."""
    node = await nodes.start(http_header_timeout_s=0.2, http_idle_timeout_s=600)
    async with await RawConnection.open(node.endpoint) as conn:
        for _ in range(2):
            await conn.send(HEALTHZ)
            answer = await conn.answer()
            assert answer is not None and answer.status == 200
            await asyncio.sleep(1.0)  # five header bounds: at least that long, whatever the load


async def _admitted(node: Node) -> RawConnection:
    conn = await RawConnection.open(node.endpoint)
    await conn.send(HEALTHZ)
    answer = await conn.answer()
    assert answer is not None and answer.status == 200, answer
    return conn


async def _metric(node: Node, name: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(node.endpoint + "/metrics") as resp,
    ):
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_connections_beyond_the_limit_are_refused_and_the_node_keeps_serving(nodes: NodeFactory) -> None:
    node = await nodes.start(http_max_connections=3, http_idle_timeout_s=600, http_header_timeout_s=600)
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(await _admitted(node)) for _ in range(3)]
        async with await RawConnection.open(node.endpoint) as extra:
            refused = await extra.answer()
            assert refused is not None and refused.status == 400, refused
            assert refused.json()["__type"] == "ThrottlingException"
            assert refused.headers["x-amzn-requestid"]
            assert await extra.closed_by_server()
        for conn in held:  # the admitted connections are untouched
            await conn.send(HEALTHZ)
            again = await conn.answer()
            assert again is not None and again.status == 200
        await held[0].close()

        async def one_more_is_served() -> bool:
            async with await RawConnection.open(node.endpoint) as conn:
                await conn.send(HEALTHZ)
                answer = await conn.answer()
                return answer is not None and answer.status == 200

        await wait_until(one_more_is_served, what="a freed connection slot to admit a new connection")
    assert await _metric(node, "regionkms_http_connections_refused_total") >= 1


async def test_a_client_hanging_up_mid_body_is_one_info_line_and_nothing_audited(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a server error: no traceback, no error line, no audit event (nothing was authenticated)."""
    node = await nodes.start()
    audited: list[object] = []
    sink = node.app[AUDIT]
    real_submit = sink.submit

    async def submit(record: CallRecord) -> None:
        audited.append(record)
        await real_submit(record)

    monkeypatch.setattr(sink, "submit", submit)
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with structlog.testing.capture_logs() as logs:
        async with await RawConnection.open(node.endpoint) as conn:
            await conn.send(request_head("POST", "/", {**KMS_HEADERS, "Content-Length": "100"}) + b"{}")
        await wait_until(
            lambda: _logged(logs, "request.client_disconnected"), what="the node to see the client hang up"
        )
        async with await RawConnection.open(node.endpoint) as conn:  # and it keeps serving
            await conn.send(HEALTHZ)
            answer = await conn.answer()
            assert answer is not None and answer.status == 200
    (line,) = [e for e in logs if e["event"] == "request.client_disconnected"]
    assert line["log_level"] == "info"
    assert [e for e in logs if e["log_level"] in ("error", "critical") or "exc_info" in e] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert audited == []


async def _logged(logs: Sequence[Mapping[str, object]], event: str) -> bool:
    return any(e["event"] == event for e in logs)
