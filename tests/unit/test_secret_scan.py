"""The secret scanner itself (tests/support/secret_scan.py): what it finds, what it ignores."""

from __future__ import annotations

import base64
import io

import pytest

from tests.support.secret_scan import MIN_SECRET_BYTES, Recorder, forms

SECRET = bytes(range(200, 232))  # 32 bytes, not valid UTF-8
ACCESS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _recorder() -> Recorder:
    recorder = Recorder()
    recorder.start(io.BytesIO())
    return recorder


@pytest.mark.parametrize("form", sorted(forms(SECRET)))
def test_every_form_of_a_secret_is_found(form: str) -> None:
    recorder = _recorder()
    recorder.secret(SECRET, "data key")
    recorder.add("log", b'{"event": "oops", "value": "' + forms(SECRET)[form] + b'"}')
    (hit,) = recorder.scan()
    assert (hit.where, hit.form) == ("log", form)


def test_a_text_secret_is_found_in_a_log_line() -> None:
    recorder = _recorder()
    recorder.secret(ACCESS_SECRET, "secret access key")
    recorder.add("log", f"request.failed secret={ACCESS_SECRET} ok")
    assert [h.form for h in recorder.scan()] == ["raw"]


def test_secrets_in_responses_are_harvested_at_any_depth() -> None:
    recorder = _recorder()
    response = {"AccessKey": {"SecretAccessKey": ACCESS_SECRET}, "Plaintext": base64.b64encode(SECRET).decode()}
    recorder.harvest(response, "response")
    assert recorder.secrets() >= 2
    recorder.add("db", SECRET.hex().encode())
    recorder.add("log", ACCESS_SECRET)
    assert sorted(h.where for h in recorder.scan()) == ["db", "log"]


def test_short_secrets_are_not_searched() -> None:
    recorder = _recorder()
    recorder.secret(b"secret!"[:MIN_SECRET_BYTES - 1], "plaintext")
    recorder.add("log", b"secret!")
    assert recorder.secrets() == 0
    assert recorder.scan() == []


def test_filler_values_are_not_searched() -> None:
    recorder = _recorder()
    recorder.secret(b"\0" * 16, "blob a test sent")
    recorder.secret("ab" * 30, "password a test sent")
    recorder.add("log", b"\0" * 64 + b"ab" * 64)
    assert recorder.secrets() == 0
    assert recorder.scan() == []


def test_repeated_occurrences_are_one_hit_with_a_count() -> None:
    recorder = _recorder()
    recorder.secret(SECRET, "data key")
    recorder.add("db", SECRET.hex().encode() * 3)
    (hit,) = recorder.scan()
    assert hit.count == 3 and "(3 times)" in str(hit)


def test_unrelated_text_has_no_hits() -> None:
    recorder = _recorder()
    recorder.secret(SECRET, "data key")
    recorder.add("log", bytes(range(200)) * 4 + SECRET[:-1] + b"x" + SECRET.hex()[:-2].encode())
    assert recorder.scan() == []


def test_the_report_names_a_fingerprint_never_the_secret() -> None:
    recorder = _recorder()
    recorder.secret(SECRET, "data key")
    recorder.add("log", b"before " + base64.b64encode(SECRET) + b" after")
    (hit,) = recorder.scan()
    text = str(hit)
    assert all(form.decode("latin-1") not in text for form in forms(SECRET).values())
    assert "<secret>" in text and "data key" in text and "sha256" in text


def test_nothing_is_recorded_before_start() -> None:
    recorder = Recorder()
    recorder.secret(SECRET, "data key")
    recorder.add("log", SECRET)
    assert recorder.secrets() == 0 and recorder.scan() == []
