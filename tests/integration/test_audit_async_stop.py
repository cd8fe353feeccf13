"""A node in ``audit_durability = async`` stopped while its PostgreSQL is unreachable: the events it
answered and could not store are counted, logged with their number, and the node exits with a
failure status, never 0 (issue 15 item 7's loss window, docs/AUDIT.md "Durability modes")."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import asyncpg
import boto3
import orjson
from botocore.config import Config

from regiond.crypto.keyring import load_file_keyring
from regiond.devtools.launcher import NodeProcess
from regiond.devtools.postgres import free_port
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.runtime.serve import EXIT_AUDIT_EVENTS_LOST
from regiond.service.iam import IamService
from regiond.statedir import init_state_dir
from regiond.store.pool import create_pool
from tests.support.cluster import ACCOUNT_ID, NodeFactory
from tests.support.regions import wait_until

REGION = "us-east-1"


async def _admin_key(url: str, state_dir: Path) -> tuple[str, str]:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        iam = IamService(pool, load_file_keyring(state_dir / "root.key"))
        await iam.ensure_account(ACCOUNT_ID)
        arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, "admin")
        await iam.put_identity_policy(arn, "inline", json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}))
        key = await iam.create_access_key(arn)
    finally:
        await pool.close()
    return key.access_key_id, key.secret_access_key


async def test_a_node_stopped_with_async_events_it_could_not_store_says_so_and_exits_non_zero(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    url = await nodes.database()
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region=REGION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")}
    env["REGIOND_AUDIT_DURABILITY"] = "async"
    log = tmp_path / "regiond.log"
    node = NodeProcess(REGION, url, state_dir, free_port(), workers=1, log_path=log, env=env).start()
    assert node.proc is not None
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:
        await wait_until(lambda: asyncio.to_thread(node.ready), what="regiond serve to be ready")
        key_id, secret = await _admin_key(url, state_dir)
        kms = boto3.client("kms", endpoint_url=node.endpoint, region_name=REGION, aws_access_key_id=key_id,
                           aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))  # fmt: skip
        key = (await asyncio.to_thread(kms.create_key))["KeyMetadata"]["KeyId"]
        await asyncio.to_thread(kms.encrypt, KeyId=key, Plaintext=b"warm")  # key and credentials cached
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        for _ in range(5):  # answered from the caches; their events are queued, never stored
            await asyncio.to_thread(kms.encrypt, KeyId=key, Plaintext=b"x")
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(asyncio.to_thread(node.proc.wait), timeout=60)
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    events = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]
    lost = [e for e in events if e.get("event") == "audit.events_lost_at_close"]
    assert code == EXIT_AUDIT_EVENTS_LOST, log.read_text()[-3000:]
    assert len(lost) == 1 and lost[0]["events"] >= 5 and lost[0]["level"] == "error", lost
    assert any(e.get("event") == "node.audit_events_lost" and e["events"] == lost[0]["events"] for e in events)
