"""The one local-cluster launcher (regiond.devtools.launcher): the command a node is started with."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from regiond.devtools.dev import _saved_port
from regiond.devtools.launcher import NodeProcess
from regiond.store.databases import database_url, ensure_database


def _flags(cmd: list[str]) -> dict[str, str | None]:
    """``--flag value`` pairs (``None`` for a bare flag) after ``regiond serve``."""
    assert cmd[:4] == [sys.executable, "-m", "regiond", "serve"]
    out: dict[str, str | None] = {}
    rest = cmd[4:]
    while rest:
        flag, rest = rest[0], rest[1:]
        if rest and not rest[0].startswith("--"):
            out[flag], rest = rest[0], rest[1:]
        else:
            out[flag] = None
    return out


def test_a_plain_node_is_plain_http_on_purpose_on_loopback() -> None:
    node = NodeProcess("eu-west-1", "postgresql://x/db", Path("/s"), 8123)
    flags = _flags(node.command())
    assert flags == {"--region": "eu-west-1", "--database-url": "postgresql://x/db", "--listen": "127.0.0.1:8123",
                     "--workers": "1", "--state-dir": "/s", "--plain-http": None}  # fmt: skip
    assert node.endpoint == "http://127.0.0.1:8123"
    assert node.log == Path("/s/regiond.log")


def test_a_replicated_tls_node_without_audit() -> None:
    node = NodeProcess(
        "us-east-1", "u", Path("/s"), 1, workers=3, peers_file=Path("/p.json"), replication_port=2, audit=False,
        tls=(Path("/c.pem"), Path("/k.pem")), log_level="warning",
    )  # fmt: skip
    flags = _flags(node.command())
    assert "--plain-http" not in flags
    assert flags["--tls-cert"] == "/c.pem" and flags["--tls-key"] == "/k.pem"
    assert flags["--peers-file"] == "/p.json" and flags["--replication-listen"] == "127.0.0.1:2"
    assert flags["--workers"] == "3" and flags["--log-level"] == "warning" and "--no-audit" in flags
    assert node.endpoint == "https://127.0.0.1:1" and node.replication_endpoint == "https://127.0.0.1:2"


def test_stopping_a_node_never_started_is_nothing() -> None:
    node = NodeProcess("us-east-1", "u", Path("/s"), 1)
    assert node.stop() is None
    node.kill()
    node.terminate()
    assert not node.is_running()


@pytest.mark.parametrize("name", ['x"; DROP DATABASE postgres; --', "Upper", "", "a" * 64, "1st", "with-dash"])
async def test_only_plain_lower_case_database_names_are_made(name: str) -> None:
    with pytest.raises(ValueError, match="not a database name"):
        await ensure_database("postgresql://postgres@127.0.0.1:1/postgres", name)


def test_a_database_url_is_its_server_url_with_the_name() -> None:
    assert database_url("postgresql://u:p@127.0.0.1:5/postgres", "regionkms") == "postgresql://u:p@127.0.0.1:5/regionkms"


def test_regiond_dev_keeps_a_saved_port_only_while_it_is_free() -> None:
    """A restart reuses the last run's ports, unless another process took one meanwhile (the node
    failed to bind and the restart with it)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        saved = {"regions": {"us-east-1": {"endpoint": f"http://127.0.0.1:{port}"}}}
        assert _saved_port(saved, "us-east-1", "endpoint") is None
    assert _saved_port(saved, "us-east-1", "endpoint") == port
    assert _saved_port(saved, "eu-west-1", "endpoint") is None
