"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test,
and real regiond nodes over loopback HTTP that boto3 talks to."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import NodeFactory, PgServer, start_pg_server

# The secret scan (tests/support/secret_scan.py) watches every test of every run.
pytest_plugins: list[str] = ["tests.support.secret_scan"]

# boto3/awscli must never reach a real AWS account or read the developer's profile.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    base = Path(tempfile.mkdtemp(prefix="regionkms-pg-"))
    server = start_pg_server(base)
    try:
        yield server
    finally:
        server.stop()
        from tests.support.secret_scan import RECORDER  # imported by pytest_plugins first: not at the top

        RECORDER.add_file(server.server.data_dir / "server.log")


@pytest.fixture
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh database, already migrated (cloned from a migrated template)."""
    url = await pg_server.fresh_database()
    yield url
    await pg_server.drop_database(url)


@pytest.fixture
async def nodes(pg_server: PgServer, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    factory = NodeFactory(pg_server, tmp_path)
    try:
        yield factory
    finally:
        await factory.close()
