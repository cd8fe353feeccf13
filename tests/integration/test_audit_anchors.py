"""Issue 13, findings 4 and 5, on the legacy v1 chain: a rolled-back trail and edited query columns are
found by ``audit verify``. The trails are written as nodes of the previous release wrote them (events,
a signed digest every 5, each appended to the node's anchor file) and upgraded in place (issue 15)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from regiond.__main__ import parser
from regiond.audit.anchors import ANCHOR_FILE_NAME, read_anchor_file
from regiond.crypto.keyring import load_file_keyring
from regiond.statedir import init_state_dir, load_identity
from tests.support import legacy_audit
from tests.support.cluster import PgServer


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


@dataclass(frozen=True)
class Trail:
    region: str
    database_url: str
    state_dir: Path


async def _signed_trail(pg: PgServer, tmp_path: Path, calls: int = 24, name: str = "state") -> Trail:
    """A legacy trail of ``calls`` events with a digest every 5, anchored in the state dir's anchor file."""
    state_dir = tmp_path / name
    init_state_dir(state_dir, region="us-east-1")
    signer = load_identity(state_dir, load_file_keyring(state_dir / "root.key"))
    url = await legacy_audit.v1_trail(pg, f"v1_anchor_{uuid.uuid4().hex[:8]}", "us-east-1", signer, events=calls,
                                      digest_every=5, anchors=state_dir / ANCHOR_FILE_NAME)  # fmt: skip
    return Trail("us-east-1", url, state_dir)


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
    pg_server: PgServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = await _signed_trail(pg_server, tmp_path)
    anchor_file = node.state_dir / ANCHOR_FILE_NAME
    anchored = read_anchor_file(anchor_file).anchors
    positions = [a.position for a in anchored]  # every digest, in order
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



async def test_a_damaged_or_foreign_anchor_is_reported(
    pg_server: PgServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = await _signed_trail(pg_server, tmp_path, calls=6)
    other = await _signed_trail(pg_server, tmp_path, calls=6, name="other")  # same region name, another key
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
    pg_server: PgServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = await _signed_trail(pg_server, tmp_path, calls=6)
    db = ["--database-url", node.database_url, "--state-dir", str(node.state_dir)]
    assert (await _findings(capsys, *db))[0] == []
    con = await asyncpg.connect(node.database_url)
    try:
        target = await con.fetchrow("SELECT seq, event_id FROM audit_events WHERE seq = 3")
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
    finally:
        await con.close()
    assert (await _findings(capsys, *db))[0] == []
