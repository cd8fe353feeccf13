"""Replication inside one regiond process: the receiver's mTLS listener and the senders.

``regiond.app`` builds a ``ReplicationNode`` when ``settings.peers_file`` is set, starts it after
the pool and listener, and stops it before closing them. The node

- serves ``make_receiver_app`` on ``settings.replication_listen`` with
  ``pki.ssl_server_context`` (client certificates required, cluster CA only);
- runs one ``Sender`` task per peer; each takes its destination's advisory lock, so with
  several workers or nodes per region exactly one streams to each peer;
- wakes a sender when the outbox NOTIFY (``regionkms_outbox``, payload: destination) arrives.

Secrets come from the region's state directory (``regiond init``): the Ed25519 identity, the
HPKE private key and the TLS key, all wrapped by the root key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from regiond import statedir
from regiond.clock import Clock
from regiond.config import Settings, parse_listen
from regiond.crypto import pki
from regiond.crypto.hpke import RegionEncryptionPrivateKey
from regiond.crypto.keyring import RootKeyring
from regiond.crypto.sign import RegionIdentityKey
from regiond.runtime.listener import HttpLimits, Listener, listen
from regiond.statedir import load_encryption_key, load_identity
from regiond.store.outbox import Outbox
from regiond.store.pool import Pool
from replication.authorize import AuthorizeError, open_answer, query_envelope
from replication.channel import DEFAULT_TIMEOUT_S, ForwardClient, HttpsTransport, Transport, TransportError
from replication.peers import PeersFileError, Topology, load_region_tls, load_topology
from replication.receiver import AuthorizeHandler, ForwardHandler, Receiver, make_receiver_app
from replication.sender import Backoff, FrameBuilder, Sender, SenderSettings

log = structlog.get_logger("replication.runtime")

__all__ = ["OUTBOX_CHANNEL", "ReplicationNode", "load_cluster", "outbox_for"]

OUTBOX_CHANNEL = "regionkms_outbox"
STOP_GRACE_S = 3.0
ASK_TIMEOUT_S = 10.0
"""How long an operation waits for another region's authorization answer before refusing."""


def load_cluster(settings: Settings) -> Topology | None:
    """The topology from ``settings.peers_file`` (``None``: this node does not replicate)."""
    if settings.peers_file is None:
        return None
    return load_topology(settings.peers_file, settings.region)


def outbox_for(settings: Settings, topology: Topology | None) -> Outbox:
    """The outbox services append to: no peers (and IAM writable here) when not replicating."""
    if topology is None:
        return Outbox(region=settings.region, peers=(), iam_home_region=settings.home_region)
    home = settings.home_region or topology.iam_home_region
    if home != topology.iam_home_region:
        raise PeersFileError(
            f"--home-region {home} disagrees with the peers file's iam_home_region {topology.iam_home_region}"
        )
    return Outbox(region=settings.region, peers=topology.peer_names, iam_home_region=home)


@dataclass
class _Secrets:
    """The region's private keys from its state directory (``regiond init`` layout)."""

    identity: RegionIdentityKey
    encryption: RegionEncryptionPrivateKey

    @classmethod
    def load(cls, state_dir: Path, keyring: RootKeyring) -> _Secrets:
        return cls(load_identity(state_dir, keyring), load_encryption_key(state_dir, keyring))


class ReplicationNode:
    def __init__(
        self, *, settings: Settings, topology: Topology, keyring: RootKeyring, pool: Pool, clock: Clock,
        outbox: Outbox, transport: Transport | None = None, sender_settings: SenderSettings | None = None,
        authorize: AuthorizeHandler | None = None, forward: ForwardHandler | None = None,
    ) -> None:  # fmt: skip
        if settings.state_dir is None:
            raise PeersFileError("replication needs --state-dir (identity, encryption and TLS keys)")
        self.settings = settings
        self.topology = topology
        self._keyring = keyring
        self._pool = pool
        self._clock = clock
        self.outbox = outbox
        secrets = _Secrets.load(settings.state_dir, keyring)
        self._own_transport = transport is None
        self._forwarding: ForwardClient | None = None
        if transport is None or statedir.region_tls_cert(settings.state_dir) is not None:
            cert, key = load_region_tls(settings.state_dir, keyring)
            client_context = pki.ssl_client_context(cert, key, topology.ca_cert_pem, check_hostname=True)
            self._forwarding = ForwardClient(client_context)  # an in-memory transport may have no TLS
        if transport is None:
            transport = HttpsTransport(client_context)
        self.transport = transport
        self.forward_regions = frozenset(topology.peer_names)
        self._identity = secrets.identity
        self.receiver = Receiver(
            pool=pool, topology=topology, keyring=keyring, encryption_key=secrets.encryption, outbox=outbox,
            clock=clock, identity=secrets.identity, authorize=authorize, forward=forward,
        )  # fmt: skip
        builder = FrameBuilder(region=settings.region, keyring=keyring, identity=secrets.identity, clock=clock)
        tuning = sender_settings or SenderSettings(
            heartbeat_s=settings.replication_heartbeat_s,
            backoff=Backoff(cap_s=settings.replication_backoff_cap_s),
        )
        self.senders = {
            peer.region: Sender(
                pool=pool, peer=peer, builder=builder, transport=transport, clock=clock, settings=tuning
            )
            for peer in topology.peers
        }
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Listener | None = None
        self.bound_port: int | None = None

    async def authorize_remote(
        self, region: str, *, principal_arn: str, action: str, key_id: str, values: Mapping[str, tuple[str, ...]]
    ) -> bool:
        """Ask ``region`` whether ``principal_arn`` may perform ``action`` on its copy of ``key_id``
        (``replication.authorize``). ``AuthorizeError`` when there is no authentic answer in time:
        the caller refuses the operation."""
        try:
            peer = self.topology.peer(region)
        except PeersFileError:
            raise AuthorizeError(f"{region} is not a peer of {self.settings.region}") from None
        envelope, nonce = query_envelope(
            self._identity, source=self.settings.region, dest=region, principal_arn=principal_arn, action=action,
            key_id=key_id, values=values, now_ms=int(self._clock.now().timestamp() * 1000),
        )  # fmt: skip
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                answer = await self.transport.ask(peer, envelope)
        except (TransportError, TimeoutError) as exc:
            raise AuthorizeError(f"{region} did not answer: {str(exc)[:200]}") from None
        return open_answer(
            answer, self.topology.identity_keys(), local_region=self.settings.region, asked=region, nonce=nonce
        )

    async def forward(self, region: str, envelope: bytes, *, timeout_s: float) -> bytes:
        """Relay a client request signed for ``region`` to it (``regiond.protocol.forwarding``);
        ``TimeoutError`` past ``timeout_s``, ``ConnectionError`` when it cannot be reached."""
        try:
            peer = self.topology.peer(region)
        except PeersFileError:
            raise ConnectionError(f"{region} is not a peer of {self.settings.region}") from None
        async with asyncio.timeout(timeout_s):
            if self._forwarding is None:
                raise ConnectionError("this node has no replication TLS certificate")
            try:
                return await self._forwarding.forward(peer, envelope)
            except TransportError as exc:
                raise ConnectionError(str(exc)) from None

    def on_outbox_notify(self, payload: str | None) -> None:
        """Listener callback: wake the sender of the destination (all of them after a reconnect)."""
        if payload is None:
            for sender in self.senders.values():
                sender.wake.set()
        elif payload in self.senders:
            self.senders[payload].wake.set()

    async def start(self) -> None:
        if self.settings.replication_listen:
            assert self.settings.state_dir is not None
            cert, key = load_region_tls(self.settings.state_dir, self._keyring)
            context = pki.ssl_server_context(cert, key, self.topology.ca_cert_pem)
            host, port = parse_listen(self.settings.replication_listen)
            body_timeout_s = min(self.settings.http_body_timeout_s, DEFAULT_TIMEOUT_S)
            self._listener = await listen(
                make_receiver_app(self.receiver, body_timeout_s), host, port, HttpLimits.from_settings(self.settings),
                tls_context=lambda: context, tls_label="replication", reuse_port=self.settings.workers > 1,
            )  # fmt: skip
            self.bound_port = self._listener.port
            log.info("replication.receiver_listening", host=host, port=self.bound_port)
        for region, sender in self.senders.items():
            self._tasks.append(asyncio.create_task(sender.run(self._stop), name=f"replication-sender-{region}"))

    async def stop(self) -> None:
        """Let senders finish the exchange in flight (bounded), then close the listener."""
        self._stop.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._own_transport:
            await self.transport.close()
        if self._forwarding is not None:
            await self._forwarding.close()
