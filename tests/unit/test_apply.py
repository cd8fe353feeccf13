"""replication.apply: the epoch rule."""

from __future__ import annotations

from replication.apply import epoch_admits


def test_newer_epoch_is_admitted_from_anyone() -> None:
    assert epoch_admits(3, "eu-west-1", 2, "us-east-1")


def test_same_epoch_is_admitted_only_from_its_primary() -> None:
    assert epoch_admits(2, "us-east-1", 2, "us-east-1")
    assert not epoch_admits(2, "eu-west-1", 2, "us-east-1")


def test_stale_epoch_is_refused_even_from_the_old_primary() -> None:
    assert not epoch_admits(1, "us-east-1", 2, "eu-west-1")
    assert not epoch_admits(1, "us-east-1", 2, "us-east-1")
