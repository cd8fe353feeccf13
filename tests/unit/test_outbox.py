"""store.outbox: the guards checked before any database work."""

from __future__ import annotations

from typing import Any

import pytest

from regiond.store import outbox
from regiond.store.outbox import Outbox, OutboxKind

MRK = "mrk-0123456789abcdef0123456789abcdef"
SRK = "0b3f1e2a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


class _NoDatabase:
    """Fails the test if the outbox touches the database before its checks."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"outbox used the connection ({name}) before refusing")


async def test_single_region_key_is_refused_by_the_outbox() -> None:
    for kind in (k for k in OutboxKind if k.is_key):
        with pytest.raises(ValueError, match="multi-region"):
            await outbox.append(_NoDatabase(), dests=["eu-west-1"], kind=kind, body={}, key_id=SRK)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multi-region"):
        await outbox.append(_NoDatabase(), dests=["eu-west-1"], kind=OutboxKind.KEY_CREATED, body={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multi-region"):  # uppercase: not a canonical id
        await outbox.append(_NoDatabase(), dests=["x"], kind=OutboxKind.KEY_MATERIAL, body={}, key_id=MRK.upper())  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [{"secret": b"raw bytes"}, {"ratio": 0.5}, {1: "non-string key"}, {"x": object()}])
async def test_outbox_bodies_carry_no_bytes_or_floats(body: dict[Any, Any]) -> None:
    with pytest.raises(ValueError):
        await outbox.append(_NoDatabase(), dests=["x"], kind=OutboxKind.KEY_UPDATED, body=body, key_id=MRK)  # type: ignore[arg-type]


async def test_iam_is_writable_only_in_the_home_region() -> None:
    home = Outbox(region="us-east-1", peers=["us-east-1", "eu-west-1"], iam_home_region="us-east-1")
    away = Outbox(region="eu-west-1", peers=["us-east-1", "eu-west-1"], iam_home_region="us-east-1")
    assert home.is_iam_home and home.peers == ("eu-west-1",)
    assert not away.is_iam_home
    with pytest.raises(RuntimeError, match="written in us-east-1"):
        await away.append_iam(_NoDatabase(), {"op": "account"})  # type: ignore[arg-type]
