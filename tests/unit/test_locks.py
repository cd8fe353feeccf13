"""store.locks: advisory lock ids."""

from __future__ import annotations

from regiond.store.locks import sender_lock_key as lock_key


def test_sender_lock_key_is_a_stable_int4() -> None:
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2", "x" * 64):
        assert -(2**31) <= lock_key(region) < 2**31
        assert lock_key(region) == lock_key(region)
    assert lock_key("us-east-1") != lock_key("eu-west-1")
