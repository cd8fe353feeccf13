"""The log redaction processor drops secret-named fields whatever the caller passes."""

from __future__ import annotations

from regiond.logging import redact


def test_secret_fields_are_redacted() -> None:
    event = {"event": "x", "plaintext": b"p", "Secret_Access_Key": "s", "data_key": "d", "key_id": "k"}
    out = redact(None, "info", dict(event))
    assert out["plaintext"] == out["Secret_Access_Key"] == out["data_key"] == "<redacted>"
    assert out["key_id"] == "k"
