"""The secret scan fails a run that leaks (issue 13, hardening).

A pytest run in a subprocess with only the plugin loaded: a test that logs a registered data
key, base64-encoded, must fail that run even though the test itself passes; the same secret
passed to the logger under a redacted field name must not. A database column holding a secret
is found by the dump taken before a test database is dropped.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.support.secret_scan import Recorder

ROOT = Path(__file__).resolve().parents[2]
SECRET = bytes(range(40, 72))

LEAKS = f"""
import base64
import structlog
from tests.support.secret_scan import register

def test_logs_a_data_key():
    key = {SECRET!r}
    register(key, "data key")
    structlog.get_logger("regiond.test").info("oops", value=base64.b64encode(key).decode())
"""

REDACTED = f"""
import structlog
from tests.support.secret_scan import register

def test_logs_a_data_key_under_a_redacted_name():
    key = {SECRET!r}
    register(key, "data key")
    structlog.get_logger("regiond.test").info("fine", data_key=key.hex(), plaintext=key)
"""


def _run(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_inner.py"
    test.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.secret_scan", "-p", "no:cacheprovider", "-q",
         "--basetemp", str(tmp_path / "basetemp"), str(test)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_leaked_secret_fails_a_run_whose_tests_pass(tmp_path: Path) -> None:
    result = _run(tmp_path, LEAKS)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "secret scan: 1 leaks" in result.stdout
    assert "log: data key of test_inner.py::test_logs_a_data_key" in result.stdout
    assert base64.b64encode(SECRET).decode() not in result.stdout  # the report names, never shows


def test_a_redacted_secret_passes(tmp_path: Path) -> None:
    result = _run(tmp_path, REDACTED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "secret scan: no secret found" in result.stdout


async def test_a_secret_in_a_database_column_is_found(database_url: str) -> None:
    recorder = Recorder()
    recorder.start(io.BytesIO())
    recorder.secret(SECRET, "data key")
    con = await asyncpg.connect(database_url)
    try:
        await con.execute("CREATE TABLE leaky (note text, blob bytea, doc jsonb)")
        await con.execute(
            "INSERT INTO leaky VALUES ($1, NULL, NULL), (NULL, $2, NULL), (NULL, NULL, $3::jsonb)",
            "k=" + SECRET.hex(), b"\x00prefix" + SECRET, json.dumps({"v": base64.b64encode(SECRET).decode()}),
        )
    finally:
        await con.close()
    await recorder.collect_database(database_url)
    hits = recorder.scan()
    assert {h.where.rsplit(" ", 1)[-1] for h in hits} == {"leaky"}
    assert {"hex", "raw", "base64"} <= {h.form for h in hits}
