"""The log redaction processor drops secret-named fields whatever the caller passes."""

from __future__ import annotations

from regiond.logging import redact


def test_secret_fields_are_redacted() -> None:
    event = {"event": "x", "plaintext": b"p", "Secret_Access_Key": "s", "data_key": "d", "key_id": "k"}
    out = redact(None, "info", dict(event))
    assert out["plaintext"] == out["Secret_Access_Key"] == out["data_key"] == "<redacted>"
    assert out["key_id"] == "k"


def test_every_secret_kind_of_common_md_has_a_redacted_name() -> None:
    """Key material, plaintext, data keys, MACs, shared secrets, secret access keys, private keys."""
    names = ["key_material", "plaintext", "data_key", "mac", "shared_secret", "secret_access_key", "private_key"]
    out = redact(None, "info", dict.fromkeys(names, b"value"))
    assert set(out.values()) == {"<redacted>"}
