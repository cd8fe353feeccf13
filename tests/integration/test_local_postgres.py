"""The local PostgreSQL launcher survives another process taking its port first."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from regiond.devtools import postgres as devdb


def test_start_retries_on_a_port_taken_after_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = int(squatter.getsockname()[1])
    ports = iter([taken])
    real_free_port = devdb.free_port
    monkeypatch.setattr(devdb, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port(host))
    server = devdb.LocalPostgres(tmp_path / "pg", durable=False)
    try:
        server.start()
        assert server.port != taken
        assert (tmp_path / "pg" / "pg_port").read_text() == str(server.port)
    finally:
        server.stop()
        squatter.close()
