"""The receiver refuses, and logs, what it must never apply: forged, replayed, unknown or stale frames.

The attacker here holds us-east-1's TLS certificate and identity key (a compromised or stale
us-east-1 node) and talks to eu-west-1's real mTLS receiver. Each crafted frame that should be
applied takes the next sequence number of us-east-1's own stream (its counter is advanced in
its database, as an outbox append would), so the real sender stays consistent afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import structlog

from regiond.crypto import pki
from regiond.crypto.keyring import load_file_keyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.protocol.routes import SERVICES
from regiond.statedir import load_identity
from replication import frames
from replication.authorize import AUTHORIZE_PATH, open_answer, query_envelope
from replication.channel import FRAMES_PATH, Ack, HttpsTransport, Refusal, TransportError
from replication.frames import Frame, FrameKind
from replication.messages import KeyMaterial, KeyUpdated, PrimaryMoved, SharedState
from replication.peers import Peer, ensure_cluster_ca, load_region_tls, load_topology, server_name
from tests.support.cluster import ACCOUNT_ID, NodeFactory
from tests.support.regions import REGIONS, Cluster, replicated_cluster, wait_until
from tests.support.sockets import RawConnection, request_head

pytestmark = pytest.mark.cluster

US, EU, _AP = REGIONS


class Attacker:
    """Sends hand-made frames to eu-west-1 as us-east-1 (or as another certificate holder)."""

    def __init__(self, cluster: Cluster, *, cert: tuple[bytes, bytes] | None = None) -> None:
        self.cluster = cluster
        sdir = cluster.state_dirs[US]
        keyring = load_file_keyring(sdir / "root.key")
        self.identity = load_identity(sdir, keyring)
        cert_pem, key_pem = cert or load_region_tls(sdir, keyring)
        topology = load_topology(cluster.peers_files[US], US)
        self.peer: Peer = topology.peer(EU)
        self.transport = HttpsTransport(pki.ssl_client_context(cert_pem, key_pem, topology.ca_cert_pem))

    async def next_seq(self) -> int:
        """Take us-east-1's next sequence number for eu-west-1, as an outbox append does."""
        return int(await self.cluster.fetchval(
            US, "UPDATE replication_dest_seq SET last_seq = last_seq + 1 WHERE dest = $1 RETURNING last_seq", EU
        ))  # fmt: skip

    def envelope(self, kind: FrameKind, seq: int, body: dict[str, Any], *, epoch: int = 0,
                 source: str = US, key: RegionIdentityKey | None = None) -> bytes:  # fmt: skip
        frame = Frame(1, kind, source, EU, seq, epoch, body, int(time.time() * 1000))
        return frames.sign_frame(frames.encode(frame), key or self.identity)

    async def send(self, *envelopes: bytes) -> Ack:
        return await self.transport.send(self.peer, list(envelopes))

    async def applied(self) -> int:
        return int(await self.cluster.fetchval(
            EU, "SELECT applied_seq FROM replication_inbound WHERE source = $1", US
        ))  # fmt: skip


async def test_forged_replayed_unknown_and_stale_frames_are_refused_and_logged(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        kms = {r: cluster.nodes[r].client(admin) for r in cluster.regions}
        key_id = (await asyncio.to_thread(kms[US].create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await asyncio.to_thread(kms[US].replicate_key, KeyId=key_id, ReplicaRegion=EU)
        await wait_until(cluster.drained, what="the replica")
        await asyncio.to_thread(kms[US].update_primary_region, KeyId=key_id, PrimaryRegion=EU)  # epoch 1 -> 2
        await wait_until(cluster.drained, what="the primary move")
        attacker = Attacker(cluster)
        policy_name = "planted"
        document = json.dumps({"Version": "2012-10-17",
                               "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})  # fmt: skip

        async def planted() -> bool:
            return bool(await cluster.fetchval(
                EU, "SELECT count(*) FROM identity_policies WHERE principal_arn = $1 AND policy_name = $2",
                admin.arn, policy_name,
            ))  # fmt: skip

        with structlog.testing.capture_logs() as logs:
            # in-sequence, authentic frames apply: put a policy, then delete it
            put = attacker.envelope(FrameKind.IAM_CHANGE, await attacker.next_seq(), {
                "op": "policy", "principal_arn": admin.arn, "policy_name": policy_name, "document": document})
            assert (await attacker.send(put)).ok and await planted()
            delete = attacker.envelope(FrameKind.IAM_CHANGE, await attacker.next_seq(), {
                "op": "policy_deleted", "principal_arn": admin.arn, "policy_name": policy_name})
            ack = await attacker.send(delete)
            assert ack.ok and not await planted()
            applied = ack.applied

            # 1. a replayed frame: skipped, never applied twice (the policy stays deleted)
            ack = await attacker.send(put)
            assert ack.ok and ack.applied == applied and not await planted()

            # 2. a stale epoch: us-east-1 is no longer the primary (epoch 2 belongs to eu-west-1)
            before = await cluster.fetchval(EU, "SELECT mr_primary_region FROM keys WHERE key_id = $1", key_id)
            stale = attacker.envelope(FrameKind.KEY_UPDATED, await attacker.next_seq(), {
                "key_id": key_id, "primary_region": US, "replica_regions": [EU]}, epoch=1)
            ack = await attacker.send(stale)
            assert ack.ok and ack.applied == applied + 1  # consumed, so the stream moves on ...
            assert await cluster.fetchval(EU, "SELECT mr_primary_region FROM keys WHERE key_id = $1", key_id) == before
            assert before == EU  # ... but not applied

            # 3. a bad signature: refused before anything is parsed, nothing consumed
            seq = await attacker.next_seq()
            forged = bytearray(attacker.envelope(FrameKind.IAM_CHANGE, seq, {
                "op": "policy", "principal_arn": admin.arn, "policy_name": policy_name, "document": document}))
            forged[2 + len(US) + 5] ^= 0x01  # a bit of the signature
            ack = await attacker.send(bytes(forged))
            assert ack.error == Refusal.BAD_SIGNATURE and ack.applied == applied + 1
            assert not await planted()

            # 4. a frame from a region the cluster does not know, on us-east-1's connection
            stranger = RegionIdentityKey.generate()
            ack = await attacker.send(attacker.envelope(FrameKind.IAM_CHANGE, seq, {"op": "account"},
                                                        source="eu-central-1", key=stranger))  # fmt: skip
            assert ack.error == Refusal.UNKNOWN_REGION

            # 5. a genuine eu-central-1 certificate from the cluster CA is still not a member
            ca_cert, ca_key = ensure_cluster_ca(nodes.tmp / "cluster-ca")
            outsider = Attacker(cluster, cert=pki.issue_region_cert(
                ca_cert, ca_key, "eu-central-1", ("127.0.0.1", server_name("eu-central-1"))))  # fmt: skip
            ack = await outsider.send(outsider.envelope(FrameKind.HEARTBEAT, 0, {}, source="eu-central-1",
                                                        key=stranger))  # fmt: skip
            assert ack.error == Refusal.UNKNOWN_REGION
            await outsider.transport.close()

            # 6. eu-west-1's own frame reflected back at it (its own key is not a peer's key)
            eu_identity = load_identity(cluster.state_dirs[EU], load_file_keyring(cluster.state_dirs[EU] / "root.key"))
            ack = await attacker.send(attacker.envelope(FrameKind.HEARTBEAT, 0, {}, source=EU, key=eu_identity))
            assert ack.error == Refusal.UNKNOWN_REGION

        events = [(e["event"], e.get("reason")) for e in logs]
        assert ("replication.frame_replayed", None) in events
        assert ("replication.frame_refused", "stale_epoch") in events
        assert ("replication.frame_refused", Refusal.BAD_SIGNATURE) in events
        assert ("replication.frame_refused", Refusal.UNKNOWN_REGION) in events
        refusals = await cluster.fetchval(EU, "SELECT refused_count FROM replication_inbound WHERE source = $1", US)
        assert refusals >= 3

        # the real stream carries on: the seq reserved for the forged frame was never applied, so
        # give it a harmless frame (as us-east-1's outbox entry would have been), then change IAM at home
        filler = attacker.envelope(FrameKind.IAM_CHANGE, seq, {"op": "account", "account_id": ACCOUNT_ID,
                                                               "root_principal_id": ACCOUNT_ID})  # fmt: skip
        assert (await attacker.send(filler)).ok
        await attacker.transport.close()
        iam = cluster.nodes[US].app[SERVICES].iam
        await iam.put_identity_policy(admin.arn, "after", document)

        async def arrived() -> bool:
            return bool(await cluster.fetchval(
                EU, "SELECT count(*) FROM identity_policies WHERE principal_arn = $1 AND policy_name = 'after'",
                admin.arn,
            ))  # fmt: skip

        await wait_until(arrived, what="a real change after the attack")
        await wait_until(cluster.drained, what="every outbox to drain")


async def test_a_frame_that_cannot_be_applied_stops_the_batch_after_the_frames_before_it(nodes: NodeFactory) -> None:
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        attacker = Attacker(cluster)
        document = json.dumps({"Version": "2012-10-17",
                               "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})  # fmt: skip

        def policy(seq: int, name: str) -> bytes:
            return attacker.envelope(FrameKind.IAM_CHANGE, seq, {
                "op": "policy", "principal_arn": admin.arn, "policy_name": name, "document": document})

        async def names() -> set[str]:
            rows = await cluster.fetch(EU, "SELECT policy_name FROM identity_policies WHERE principal_arn = $1",
                                       admin.arn)  # fmt: skip
            return {r["policy_name"] for r in rows}

        first, second, third = [await attacker.next_seq() for _ in range(3)]
        unreadable = attacker.envelope(FrameKind.IAM_CHANGE, second, {
            "op": "access_key", "access_key_id": "AKIAUNREADABLE000000", "principal_arn": admin.arn,
            "status": "Active", "sealed_secret": b"\x01" + b"\x00" * 1200})  # sealed to nobody
        with structlog.testing.capture_logs() as logs:
            ack = await attacker.send(policy(first, "one"), unreadable, policy(third, "three"))
        assert ack.error == Refusal.APPLY_FAILED and ack.applied == first
        assert "did not open" in ack.detail
        assert {"one"} <= await names() and "three" not in await names()
        assert any(e["event"] == "replication.apply_failed" for e in logs)
        # the sender retries from where the peer stands: a readable frame then goes through
        ack = await attacker.send(policy(second, "two"), policy(third, "three"))
        assert ack.ok and ack.applied == third and {"one", "two", "three"} <= await names()
        await attacker.transport.close()


async def test_authorization_queries_are_answered_only_for_the_connected_peer_and_known_actions(
    nodes: NodeFactory,
) -> None:
    """eu-west-1 decides a query with its own key policy; a forged, misattributed or unanswerable
    query gets no "allowed" (``replication.authorize``, ``regiond.service.peer_authz``)."""
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        kms = cluster.nodes[US].client(admin)
        key_id = (await asyncio.to_thread(kms.create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await asyncio.to_thread(kms.replicate_key, KeyId=key_id, ReplicaRegion=EU)
        await wait_until(cluster.drained, what="the replica")
        attacker = Attacker(cluster)
        keys = {EU: attacker.peer.identity_public_key}

        async def ask(action: str, *, key: RegionIdentityKey | None = None, principal: str = admin.arn) -> bool:
            envelope, nonce = query_envelope(
                key or attacker.identity, source=US, dest=EU, principal_arn=principal, action=action, key_id=key_id,
                values={}, now_ms=int(time.time() * 1000),
            )  # fmt: skip
            answer = await attacker.transport.ask(attacker.peer, envelope)
            return open_answer(answer, keys, local_region=US, asked=EU, nonce=nonce)

        assert await ask("kms:UpdatePrimaryRegion") is True  # admin: the replica's default policy + IAM kms:*
        assert await ask("kms:Decrypt") is False  # not a question another region may ask
        assert await ask("kms:UpdatePrimaryRegion", principal=f"arn:aws:iam::{ACCOUNT_ID}:user/nobody") is False
        with pytest.raises(TransportError, match="403"):
            await ask("kms:UpdatePrimaryRegion", key=RegionIdentityKey.generate())  # not us-east-1's identity
        stale, _ = query_envelope(
            attacker.identity, source=US, dest=EU, principal_arn=admin.arn, action="kms:UpdatePrimaryRegion",
            key_id=key_id, values={}, now_ms=int(time.time() * 1000) - 120_000,
        )  # fmt: skip
        with pytest.raises(TransportError, match="403"):
            await attacker.transport.ask(attacker.peer, stale)
        await attacker.transport.close()


async def test_a_region_that_never_held_a_key_cannot_take_it_over(nodes: NodeFactory) -> None:
    """A multi-Region key held by eu-west-1 alone (its primary, no replica): us-east-1 is no member
    of its key set, so nothing it sends may change it, whatever epoch it claims. Before, a frame
    with a higher epoch was admitted from any region: us-east-1 could make itself the primary of
    the key, or raise its epoch so that the real primary's own frames were refused as stale."""
    async with replicated_cluster(nodes, regions=(US, EU)) as cluster:
        admin = await cluster.admin()
        eu = cluster.nodes[EU].client(admin)
        key_id = (await asyncio.to_thread(eu.create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        attacker = Attacker(cluster)

        async def state() -> tuple[Any, ...]:
            (row,) = await cluster.fetch(EU, "SELECT mr_primary_region, mr_replica_regions::text AS replicas, "
                                         "current_version FROM keys WHERE key_id = $1", key_id)  # fmt: skip
            epoch = await cluster.fetchval(EU, "SELECT epoch FROM mrk_epochs WHERE key_id = $1", key_id)
            return row["mr_primary_region"], row["replicas"], row["current_version"], epoch

        before = await state()
        assert before[0] == EU
        shared = SharedState((), None)
        forged = [
            (FrameKind.KEY_UPDATED, KeyUpdated(key_id, US, (EU,), 1, shared).to_body()),
            (FrameKind.KEY_MATERIAL, KeyMaterial(key_id, 1, 1, shared).to_body()),
            (FrameKind.PRIMARY_MOVED, PrimaryMoved(key_id, US, (EU,), US).to_body()),
        ]
        with structlog.testing.capture_logs() as logs:
            for kind, body in forged:
                ack = await attacker.send(attacker.envelope(kind, await attacker.next_seq(), body, epoch=1_000))
                assert ack.ok, (kind, ack)  # authentic and in order: consumed ...
                assert await state() == before, kind  # ... and refused
        reasons = [e.get("reason") for e in logs if e["event"] == "replication.frame_refused"]
        assert reasons.count("not_a_member") == 3, reasons
        # the key still belongs to eu-west-1 alone: it replicates to us-east-1 as usual
        await asyncio.to_thread(eu.replicate_key, KeyId=key_id, ReplicaRegion=US)
        await wait_until(cluster.drained, what="the replica in us-east-1")
        await attacker.transport.close()


async def test_a_peer_that_stalls_its_request_body_is_answered_408_and_cut_off(nodes: NodeFactory) -> None:
    """A peer with a valid certificate (or a leaked one) must not hold the receiver's handlers with a
    body that never comes: the client endpoint's body timeout bounds both receiver paths too."""
    async with replicated_cluster(nodes, regions=(US, EU), http_body_timeout_s=0.5) as cluster:
        sdir = cluster.state_dirs[US]
        cert_pem, key_pem = load_region_tls(sdir, load_file_keyring(sdir / "root.key"))
        topology = load_topology(cluster.peers_files[US], US)
        tls = pki.ssl_client_context(cert_pem, key_pem, topology.ca_cert_pem)
        peer = topology.peer(EU)
        for path in (FRAMES_PATH, AUTHORIZE_PATH):
            async with await RawConnection.open(peer.endpoint, tls) as conn:
                head = {"Content-Type": "application/x-msgpack", "Content-Length": "1000"}
                await conn.send(request_head("POST", path, head) + b"\x91")
                answer = await conn.answer()
                assert answer is not None and answer.status == 408, (path, answer)
                assert await conn.closed_by_server()
        # The receiver still serves the honest sender afterwards.
        admin = await cluster.admin()
        kms = cluster.nodes[US].client(admin)
        key_id = (await asyncio.to_thread(kms.create_key, MultiRegion=True))["KeyMetadata"]["KeyId"]
        await asyncio.to_thread(kms.replicate_key, KeyId=key_id, ReplicaRegion=EU)
        await wait_until(cluster.drained, what="the replica")
