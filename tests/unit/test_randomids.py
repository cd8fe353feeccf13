"""regiond.randomids: fast version-4 UUIDs."""

from __future__ import annotations

import uuid

from regiond import randomids


def test_random_ids_are_distinct_version_4_uuids() -> None:
    seen: set[str] = set()
    for _ in range(1000):
        text = randomids.uuid4_str()
        value, pair_text = randomids.uuid4_pair()
        for u, s in ((uuid.UUID(text), text), (value, pair_text), (randomids.uuid4(), None)):
            assert u.version == 4 and u.variant == uuid.RFC_4122
            if s is not None:
                assert str(u) == s
        seen.update((text, pair_text))
    assert len(seen) == 2000
