"""Operator commands meet a database that refuses them with one line and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.mark.parametrize("argv", [["replication", "status"], ["audit", "verify"]])
def test_a_database_that_does_not_exist_is_one_line(database_url: str, argv: list[str]) -> None:
    parts = urlsplit(database_url)
    missing = urlunsplit(parts._replace(path="/no_such_database"))  # the server answers: a PostgresError
    done = subprocess.run(
        [sys.executable, "-m", "regiond", *argv, "--database-url", missing, "--region", "us-east-1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode in (1, 2), done
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "no_such_database" in done.stderr, done.stderr
