"""Issue 13, finding 4 (and issue 15 item 3 for audit trail v2): the other regions hold a region's signed
audit digests, so a rollback of its database is found even when its node's own anchor file was rolled
back with it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from regiond.__main__ import parser
from regiond.app import POOL
from regiond.audit import chain, digests
from regiond.audit.anchors import V2_ANCHOR_FILE_NAME, read_anchor_file
from regiond.crypto.keyring import load_file_keyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.statedir import load_identity
from regiond.store import audit as audit_store
from replication import frames
from replication.anchors import anchors_message
from replication.channel import Refusal
from replication.frames import Frame, FrameKind
from replication.memory import InMemoryNetwork
from replication.messages import AuditAnchors, SignedDigest
from tests.support.cluster import NodeFactory
from tests.support.regions import REGIONS, replicated_cluster, wait_until

pytestmark = pytest.mark.cluster

US, EU, _AP = REGIONS


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = parser().parse_args(["audit", *argv])
    capsys.readouterr()
    code = await asyncio.to_thread(args.func, args)
    return int(code), capsys.readouterr().out


async def _findings(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    code, out = await _cli(capsys, "verify", *argv, "--format", "json")
    report = json.loads([line for line in out.splitlines() if line.startswith('{"region"')][-1])  # not log lines
    assert (code == 0) == report["ok"], out
    findings: list[dict[str, Any]] = report["findings"]
    return findings


async def test_a_peer_region_detects_a_rollback_the_local_anchor_file_was_rolled_back_with(
    nodes: NodeFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with replicated_cluster(nodes, (US, EU), audit=(US,), audit_digest_interval_s=0.2) as cluster:
        admin = await cluster.admin()
        kms = cluster.nodes[US].client(admin)

        async def eu_holds_the_newest_digest() -> bool:
            await asyncio.to_thread(kms.list_keys)  # a head moves: the next round signs a digest
            newest = await cluster.fetchval(US, "SELECT max(seq) FROM audit_digests_v2")
            held = await cluster.fetchval(EU, "SELECT max(position) FROM audit_peer_anchors WHERE source = $1", US)
            count = await cluster.fetchval(EU, "SELECT count(*) FROM audit_peer_anchors WHERE source = $1", US)
            return newest is not None and count >= 3 and held == newest

        await wait_until(eu_holds_the_newest_digest, what="eu-west-1 to hold us-east-1's newest v2 digests")
        await cluster.stop(US)
        held = [int(r["position"]) for r in await cluster.fetch(
            EU, "SELECT position FROM audit_peer_anchors WHERE source = $1 ORDER BY position", US)]  # fmt: skip
        cluster_file = tmp_path / "cluster.json"
        cluster_file.write_text(json.dumps({"regions": {
            r: {"database_url": cluster.databases[r], "state_dir": str(cluster.state_dirs[r])} for r in (US, EU)
        }}))  # fmt: skip
        by_cluster = ["--cluster", str(cluster_file), "--region", US]
        assert await _findings(capsys, *by_cluster) == []

        # Roll back the database to an older digest, as a restore of it (and of the node's anchor
        # file with it) from an older backup would: what is left is all genuine, just shorter.
        keep = held[-2]
        con = await asyncpg.connect(cluster.databases[US])
        try:
            kept = digests.decode(await con.fetchval("SELECT message FROM audit_digests_v2 WHERE seq = $1", keep))
            await con.execute("DELETE FROM audit_digests_v2 WHERE seq > $1", keep)
            heads = kept.heads
            await con.execute(
                "DELETE FROM audit_segments s WHERE NOT EXISTS (SELECT 1 FROM unnest($1::uuid[], $2::bigint[])"
                " AS h(writer_id, seq) WHERE h.writer_id = s.writer_id AND s.seq <= h.seq)",
                [h.writer_id for h in heads], [h.seq for h in heads],
            )  # fmt: skip
            await con.execute("UPDATE audit_writers SET closed_at = NULL WHERE closed_at > $1", kept.digest_time)
        finally:
            await con.close()
        anchor_file = cluster.state_dirs[US] / V2_ANCHOR_FILE_NAME
        anchor_file.write_bytes(b"".join(a.line() for a in read_anchor_file(anchor_file).anchors if a.position <= keep))

        local_only = ["--database-url", cluster.databases[US], "--state-dir", str(cluster.state_dirs[US])]
        assert await _findings(capsys, *local_only) == []  # the node's own evidence went with the backup
        found = await _findings(capsys, *by_cluster)
        assert found and {f["kind"] for f in found} == {"rolled-back"}, found
        assert f"v2 digest {held[-1]}," in found[-1]["detail"]
        assert "anchored in region eu-west-1's copy" in found[-1]["detail"]
        assert "the newest segments and digests were removed" in found[-1]["detail"]

        # The same anchors, exported from eu-west-1's database and handed to verify as a file.
        code, out = await _cli(capsys, "anchors", "--database-url", cluster.databases[EU], "--source", US)
        assert code == 0
        exported = tmp_path / "eu-holds-us.jsonl"
        exported.write_text("".join(line + "\n" for line in out.splitlines() if line.startswith('{"digestHash"')))
        from_file = await _findings(capsys, *local_only, "--anchor", str(exported))
        assert [f["detail"].split(",")[0] for f in from_file] == [f["detail"].split(",")[0] for f in found]
        assert all(f["kind"] == "rolled-back" and str(exported) in f["detail"] for f in from_file)


async def test_a_peer_keeps_the_first_digest_of_a_position_and_refuses_anchors_not_signed_by_the_source(
    nodes: NodeFactory,
) -> None:
    async with replicated_cluster(nodes, (US, EU), in_memory=True) as cluster:
        network = cluster.network
        assert isinstance(network, InMemoryNetwork)
        receiver = network.receivers[EU]
        identity = load_identity(cluster.state_dirs[US], load_file_keyring(cluster.state_dirs[US] / "root.key"))

        def digest(last_hash: bytes, key: RegionIdentityKey = identity, region: str = US) -> chain.Digest:
            return chain.Digest(region, 1, 7, last_hash, None, dt.datetime.now(dt.UTC)).signed(key)

        def envelope(*ds: chain.Digest) -> bytes:
            body = anchors_message([(d.message(), d.signature) for d in ds]).to_body()
            frame = Frame(1, FrameKind.AUDIT_ANCHORS, US, EU, 0, 0, body, int(time.time() * 1000))
            return frames.sign_frame(frames.encode(frame), identity)

        async def held() -> list[tuple[bytes, bytes]]:
            async with cluster.nodes[EU].app[POOL].acquire() as con:
                return await audit_store.peer_anchors(con, US)

        first = digest(b"\1" * 32)
        assert (await receiver.receive(US, [envelope(first)])).ok
        assert await held() == [(first.message(), first.signature)]
        # The source signs another digest for the same position (a rolled-back region signing its
        # history again): accepted as a frame, never stored over the first.
        assert (await receiver.receive(US, [envelope(digest(b"\2" * 32))])).ok
        assert await held() == [(first.message(), first.signature)]
        # Anchors the source's identity key did not sign, or of another region, refuse the frame.
        forged = digest(b"\3" * 32, key=RegionIdentityKey.generate())
        ack = await receiver.receive(US, [envelope(forged)])
        assert ack.error == Refusal.MALFORMED and "not signed by us-east-1's identity key" in ack.detail
        ack = await receiver.receive(US, [envelope(digest(b"\4" * 32, region=EU))])
        assert ack.error == Refusal.MALFORMED and "an anchor of region eu-west-1 sent by us-east-1" in ack.detail
        assert await held() == [(first.message(), first.signature)]

        # Audit trail v2 digests (numbered on from the v1 positions) are kept beside them, checked alike.
        def v2(seq: int, key: RegionIdentityKey = identity) -> tuple[bytes, bytes]:
            head = digests.Head(uuid.uuid4(), 3, b"\5" * 32)
            message = digests.Digest(US, seq, dt.datetime.now(dt.UTC), b"\6" * 32, (head,)).message()
            return message, key.sign(message)

        def v2_envelope(*signed: tuple[bytes, bytes]) -> bytes:
            frame = Frame(1, FrameKind.AUDIT_ANCHORS, US, EU, 0, 0, anchors_message(signed).to_body(),
                          int(time.time() * 1000))  # fmt: skip
            return frames.sign_frame(frames.encode(frame), identity)

        eighth, ninth = v2(8), v2(9)
        assert (await receiver.receive(US, [v2_envelope(eighth, ninth)])).ok
        assert await held() == [(first.message(), first.signature), eighth, ninth]
        ack = await receiver.receive(US, [v2_envelope(v2(10, key=RegionIdentityKey.generate()))])
        assert ack.error == Refusal.MALFORMED and "not signed by us-east-1's identity key" in ack.detail
        # A frame anchors_message would not make: positions going back.
        body = AuditAnchors((SignedDigest(*v2(12)), SignedDigest(*v2(11)))).to_body()
        frame = Frame(1, FrameKind.AUDIT_ANCHORS, US, EU, 0, 0, body, int(time.time() * 1000))
        ack = await receiver.receive(US, [frames.sign_frame(frames.encode(frame), identity)])
        assert ack.error == Refusal.MALFORMED and "positions do not increase" in ack.detail
        assert len(await held()) == 3
