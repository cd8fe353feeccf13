"""Issue 13, findings 4 and 5: a rolled-back trail and edited query columns are found by ``audit verify``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import botocore.exceptions
import pytest

from regiond.__main__ import parser
from regiond.audit import CommitOptions, GroupCommitter
from regiond.audit.anchors import ANCHOR_FILE_NAME, read_anchor_file
from regiond.audit.calls import CallRecord
from regiond.clock import ManualClock
from regiond.crypto.keyring import load_file_keyring
from regiond.statedir import init_state_dir, load_identity
from regiond.store.pool import create_pool
from tests.support.cluster import Node, NodeFactory


async def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = parser().parse_args(["audit", *argv])
    capsys.readouterr()
    code = await asyncio.to_thread(args.func, args)
    return int(code), capsys.readouterr().out


async def _findings(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[list[dict[str, Any]], list[str]]:
    code, out = await _cli(capsys, "verify", *argv, "--format", "json")
    report = json.loads(out)
    assert (code == 0) == report["ok"], out
    return report["findings"], report["notes"]


async def _signed_trail(nodes: NodeFactory, calls: int = 24, state_dir: Path | None = None) -> Node:
    """A node that wrote ``calls`` events with a digest every 5 and stopped (a last digest)."""
    node = await nodes.start(audit_checkpoint_events=5, state_dir=state_dir)
    kms = node.client(await nodes.identity(node))
    for _ in range(calls):
        await _call(kms.list_keys)
    await nodes.stop(node)
    return node


async def _roll_back(con: asyncpg.Connection, keep_seq: int) -> None:
    """The attack of finding 4: delete the newest events and signed digests, rewind the head to the
    last kept event and set its digest_hash to NULL. Everything left is genuine."""
    last = await con.fetchrow("SELECT seq, hash FROM audit_events WHERE seq = $1", keep_seq)
    assert last is not None
    await con.execute("DELETE FROM audit_events WHERE seq > $1", keep_seq)
    await con.execute("DELETE FROM audit_digests WHERE last_seq > $1", keep_seq)
    await con.execute("UPDATE audit_chain_head SET seq = $1, hash = $2, digest_seq = $1, digest_hash = NULL",
                      keep_seq, last["hash"])  # fmt: skip


async def test_rollback_of_the_newest_events_and_digests_is_found_by_the_anchor_file(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = await _signed_trail(nodes)
    anchor_file = node.state_dir / ANCHOR_FILE_NAME
    assert anchor_file.stat().st_mode & 0o777 == 0o600
    anchored = read_anchor_file(anchor_file).anchors
    positions = [a.position for a in anchored]  # every digest, in order (each signed beside the writer)
    assert len(positions) >= 3 and positions == sorted(set(positions)) and positions[-1] == 24, positions
    keep, first_removed = positions[1], positions[2]
    pub = (node.state_dir / "identity.ed25519.pub").read_bytes().hex()
    with_state = ["--database-url", node.database_url, "--state-dir", str(node.state_dir)]
    assert await _findings(capsys, *with_state) == ([], [f"the database holds every digest anchored in the "
                                                         f"anchor file {anchor_file} (newest: seq 24)"])  # fmt: skip
    copy = tmp_path / "anchors-copy.jsonl"
    copy.write_bytes(anchor_file.read_bytes())

    con = await asyncpg.connect(node.database_url)
    try:
        await _roll_back(con, keep_seq=keep)
    finally:
        await con.close()

    # Without an anchor, what is left is a whole, validly signed trail: verify can only say so.
    found, notes = await _findings(capsys, "--database-url", node.database_url, "--public-key", pub)
    assert found == []
    assert any("no anchor held outside the database" in n for n in notes)
    # The node's anchor file (read from --state-dir) and a copy of it given with --anchor both see it.
    for argv in (with_state, ["--database-url", node.database_url, "--public-key", pub, "--anchor", str(copy)]):
        found, _ = await _findings(capsys, *argv)
        assert [(f["kind"], f["seq"]) for f in found] == [("rolled-back", first_removed)], found
        assert "the newest events and digests were removed (anchored up to seq 24)" in found[0]["detail"]

    # A node started on the rolled-back database signs nothing on top of it (that would make the
    # shortened trail look whole again); its calls are still audited and chained.
    again = await nodes.start(database_url=node.database_url, state_dir=node.state_dir, audit_checkpoint_events=5)
    kms = again.client(await nodes.identity(again))
    for _ in range(3 * 5):
        await _call(kms.list_keys)
    await nodes.stop(again)
    con = await asyncpg.connect(node.database_url)
    try:
        assert await con.fetchval("SELECT max(last_seq) FROM audit_digests") == keep
        assert await con.fetchval("SELECT max(seq) FROM audit_events") > keep
    finally:
        await con.close()
    assert [a.position for a in read_anchor_file(anchor_file).anchors] == positions
    found, _ = await _findings(capsys, *with_state)
    assert ("rolled-back", first_removed) in [(f["kind"], f["seq"]) for f in found]


async def test_a_damaged_or_foreign_anchor_is_reported(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = await _signed_trail(nodes, calls=6)
    other = await _signed_trail(nodes, calls=6, state_dir=tmp_path / "other")  # same region name, another key
    lines = (node.state_dir / ANCHOR_FILE_NAME).read_bytes().splitlines(keepends=True)
    foreign = (other.state_dir / ANCHOR_FILE_NAME).read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    moved = re.sub(rb'"position":(\d+)', lambda m: b'"position":%d' % (int(m.group(1)) + 1), lines[0])
    bad.write_bytes(lines[0] + b"{not json\n" + foreign[0] + moved)
    found, _ = await _findings(capsys, "--database-url", node.database_url, "--state-dir", str(node.state_dir),
                               "--region", node.region, "--anchor", str(bad))  # fmt: skip
    invalid = [f["detail"] for f in found if f["kind"] == "anchor-invalid"]
    assert len(invalid) == 3 and len(found) == 3, found
    assert any("line 2: not JSON" in d for d in invalid)
    assert any("signature does not verify" in d for d in invalid)  # same region name, another key
    assert any("line 4: the readable members disagree with the signed digest" in d for d in invalid)


# --- finding 5: the query columns are checked against the hashed record ------------------------------

QUERY_COLUMNS = {
    "principal_arn": "'arn:aws:iam::111122223333:user/someone-else'",
    "event_name": "'Decrypt'",
    "error_code": "'AccessDeniedException'",
    "key_arns": "ARRAY['arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000']",
    "event_time": "event_time - interval '3 days'",
    "event_source": "'iam.amazonaws.com'",
    "read_only": "NOT read_only",
}


async def test_each_query_column_changed_is_named_with_its_event(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    node = await nodes.start(audit_checkpoint_events=5)
    kms = node.client(await nodes.identity(node))
    key_id = (await _call(kms.create_key))["KeyMetadata"]["KeyId"]
    await _call(kms.encrypt, KeyId=key_id, Plaintext=b"x")
    with pytest.raises(botocore.exceptions.ClientError):
        await _call(kms.describe_key, KeyId="alias/none")
    await nodes.stop(node)
    db = ["--database-url", node.database_url, "--state-dir", str(node.state_dir)]
    assert (await _findings(capsys, *db))[0] == []
    con = await asyncpg.connect(node.database_url)
    try:
        target = await con.fetchrow("SELECT seq, event_id FROM audit_events WHERE event_name = 'Encrypt'")
        assert target is not None
        for column, value in QUERY_COLUMNS.items():
            original = await con.fetchval(f"SELECT {column} FROM audit_events WHERE seq = $1", target["seq"])
            await con.execute(f"UPDATE audit_events SET {column} = {value} WHERE seq = $1", target["seq"])
            found, _ = await _findings(capsys, *db)
            assert [(f["kind"], f["seq"], f["event_id"]) for f in found] == [
                ("column-changed", target["seq"], str(target["event_id"]))
            ], (column, found)
            assert f"its {column} column disagrees with its hashed record" in found[0]["detail"]
            await con.execute(f"UPDATE audit_events SET {column} = $2 WHERE seq = $1", target["seq"], original)
        # A NULL where the record has a value (and the other way round) is a change too.
        failed = await con.fetchrow("SELECT seq, error_code FROM audit_events WHERE error_code IS NOT NULL")
        assert failed is not None
        await con.execute("UPDATE audit_events SET error_code = NULL WHERE seq = $1", failed["seq"])
        found, _ = await _findings(capsys, *db)
        assert [(f["kind"], f["seq"]) for f in found] == [("column-changed", failed["seq"])]
        await con.execute("UPDATE audit_events SET error_code = $2 WHERE seq = $1", failed["seq"], failed["error_code"])
    finally:
        await con.close()
    assert (await _findings(capsys, *db))[0] == []


async def test_retention_refuses_to_take_recent_events_whose_time_column_was_back_dated(
    nodes: NodeFactory, tmp_path: Path
) -> None:
    url = await nodes.database()
    init_state_dir(tmp_path / "s", region="us-east-1")
    signer = load_identity(tmp_path / "s", load_file_keyring(tmp_path / "s" / "root.key"))
    clock = ManualClock()
    pool = await create_pool(url, min_size=1, max_size=2)
    sink = GroupCommitter(pool, "us-east-1", signer, options=CommitOptions(retention_days=30), clock=clock)
    try:
        await sink.start()
        for n in range(5):
            await sink.submit(CallRecord(operation="ListKeys", event_source="kms.amazonaws.com", request_id=f"r{n}",
                                         event_time=clock.now(), region="us-east-1", source_ip="127.0.0.1",
                                         user_agent="test"))  # fmt: skip
        assert await sink.checkpoint(force=True)
        con = await asyncpg.connect(url)
        try:
            await con.execute("UPDATE audit_events SET event_time = event_time - interval '60 days' WHERE seq = 5")
            assert await sink.apply_retention() == 0
            assert await con.fetchval("SELECT count(*) FROM audit_events") == 5
        finally:
            await con.close()
    finally:
        await sink.close()
        await pool.close()
