"""replication.channel: the batch and ack codec."""

from __future__ import annotations

import msgpack
import pytest

from replication import channel
from replication.channel import Ack, ChannelError


def test_batch_round_trips() -> None:
    envelopes = [b"\x01abc", b"", bytes(range(256))]
    assert channel.decode_batch(channel.encode_batch(envelopes)) == envelopes


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never-used msgpack byte
        msgpack.packb([2, []]),  # unknown version
        msgpack.packb([True, []]),  # bool is not a version
        msgpack.packb([1, ["text, not bin"]]),
        msgpack.packb([1, [b"x"] * (channel.MAX_BATCH_FRAMES + 1)]),
        msgpack.packb({"v": 1}),
    ],
)
def test_malformed_batches_are_refused(data: bytes) -> None:
    with pytest.raises(ChannelError):
        channel.decode_batch(data)


def test_ack_round_trips_and_refuses_garbage() -> None:
    ack = Ack("eu-west-1", 42, channel.Refusal.GAP, "expected seq 43, got 45")
    assert channel.decode_ack(channel.encode_ack(ack)) == ack
    for bad in ({"v": 1, "region": "x", "applied": -1}, {"v": 1, "region": "x", "applied": True},
                {"v": 2, "region": "x", "applied": 1}):  # fmt: skip
        with pytest.raises(ChannelError):
            channel.decode_ack(msgpack.packb(bad))
