"""In-memory twin of the replication channel, with partition hooks (raft's ``inmem_transport.go``).

``InMemoryNetwork`` connects regions in one process: each region registers its ``Receiver`` and
gets an ``InMemoryTransport`` whose ``send`` calls the destination's receiver directly, with
the source region standing in for the mTLS-authenticated peer. It is a real implementation,
not a mock: frames are signed, sealed, verified and applied exactly as over HTTPS.

Partition hooks for fault tests:

- ``cut(a, b)`` / ``heal(a, b)`` / ``heal_all()``: sends from a to b (and b to a unless
  ``both=False``) raise ``TransportError`` as an unreachable peer would;
- ``lose_acks(a, b)``: frames are delivered and applied but the answer is lost (the sender
  sees ``TransportError`` and resends: the receiver must skip what it already applied);
- ``sent``: every (source, dest, envelope) delivered, for tests that inspect the wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from replication.channel import Ack, TransportError, decode_batch, encode_batch
from replication.peers import Peer
from replication.receiver import Receiver

__all__ = ["InMemoryNetwork", "InMemoryTransport", "Sent"]


@dataclass(frozen=True)
class Sent:
    source: str
    dest: str
    envelope: bytes


@dataclass
class InMemoryNetwork:
    receivers: dict[str, Receiver] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    _cut: set[tuple[str, str]] = field(default_factory=set)
    _lossy: set[tuple[str, str]] = field(default_factory=set)

    def register(self, receiver: Receiver) -> None:
        self.receivers[receiver.region] = receiver

    def transport(self, source: str) -> InMemoryTransport:
        return InMemoryTransport(self, source)

    def cut(self, a: str, b: str, *, both: bool = True) -> None:
        self._cut.add((a, b))
        if both:
            self._cut.add((b, a))

    def heal(self, a: str, b: str, *, both: bool = True) -> None:
        self._cut.discard((a, b))
        self._lossy.discard((a, b))
        if both:
            self._cut.discard((b, a))
            self._lossy.discard((b, a))

    def heal_all(self) -> None:
        self._cut.clear()
        self._lossy.clear()

    def lose_acks(self, a: str, b: str) -> None:
        self._lossy.add((a, b))


class InMemoryTransport:
    def __init__(self, network: InMemoryNetwork, source: str) -> None:
        self._network = network
        self._source = source

    async def send(self, peer: Peer, envelopes: Sequence[bytes]) -> Ack:
        link = (self._source, peer.region)
        if link in self._network._cut:
            raise TransportError(f"partitioned: {self._source} -> {peer.region}")
        receiver = self._network.receivers.get(peer.region)
        if receiver is None:
            raise TransportError(f"no receiver for {peer.region}")
        delivered = decode_batch(encode_batch(envelopes))  # the same bytes the wire would carry
        self._network.sent.extend(Sent(self._source, peer.region, e) for e in delivered)
        ack = await receiver.receive(self._source, delivered)
        if link in self._network._lossy:
            raise TransportError(f"ack lost: {peer.region} -> {self._source}")
        return ack

    async def ask(self, peer: Peer, envelope: bytes) -> bytes:
        if (self._source, peer.region) in self._network._cut or (peer.region, self._source) in self._network._cut:
            raise TransportError(f"partitioned: {self._source} <-> {peer.region}")
        receiver = self._network.receivers.get(peer.region)
        if receiver is None:
            raise TransportError(f"no receiver for {peer.region}")
        answer = await receiver.answer(self._source, bytes(envelope))
        if answer is None:
            raise TransportError(f"query refused by {peer.region}")
        return answer

    async def close(self) -> None:
        return None
