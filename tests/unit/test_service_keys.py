"""service.keys: the KeyId memo gives what the parse gives."""

from __future__ import annotations

import pytest

from regiond.domain import ids
from regiond.errors import KmsError
from regiond.service import keys as keys_service


@pytest.mark.parametrize(
    "value",
    [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "alias/app",
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:111122223333:alias/app",
    ],
)
def test_key_reference_memo_matches_the_parse(value: str) -> None:
    first = keys_service._key_reference(value)
    assert first == ids.parse_key_reference(value)
    assert keys_service._key_reference(value) is first


@pytest.mark.parametrize("value", ["not-a-key", "arn:aws:kms:us-east-1:bad:key/x", "arn:aws:s3:::bucket"])
def test_key_reference_memo_refuses_bad_values_every_time(value: str) -> None:
    for _ in range(2):
        with pytest.raises(KmsError) as raised:
            keys_service._key_reference(value)
        with pytest.raises(type(raised.value)):
            ids.parse_key_reference(value)
    assert value not in keys_service._KEY_REFS
