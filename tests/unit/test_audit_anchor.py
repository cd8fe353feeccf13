"""Audit anchors without a database: the format, its refusals, and the append-only file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from regiond.audit import chain
from regiond.audit.anchors import AnchorFile, read_anchor_file
from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import DIGEST_LABEL_V1, AnchorError, parse_anchor, parse_line

KEY = RegionIdentityKey.generate()
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _digest(last_seq: int, prev: bytes | None = None) -> chain.Digest:
    return chain.Digest("us-east-1", 1, last_seq, b"\7" * 32, prev, T0).signed(KEY)


def test_an_anchor_is_the_signed_digest_itself() -> None:
    d = _digest(42)
    a = d.anchor()
    assert (a.region, a.position, a.message, a.signature) == ("us-east-1", 42, d.message(), d.signature)
    assert a.digest_hash == chain.digest_hash(d)  # what the next digest links to
    assert sign.verify(KEY.public_bytes(), a.message, a.signature)
    assert parse_line(a.line()) == a


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"regionkms.audit.event.v1\x00{}", "not a signed audit digest of a known format"),
        (DIGEST_LABEL_V1 + b"{not json", "not JSON"),
        (DIGEST_LABEL_V1 + b"[1]", "not a JSON object"),
        (DIGEST_LABEL_V1 + b'{"region":"us-east-1","lastSeq":0,"digestTime":"t"}', "no valid position"),
        (DIGEST_LABEL_V1 + b'{"region":"us-east-1","lastSeq":true,"digestTime":"t"}', "no valid position"),
        (DIGEST_LABEL_V1 + b'{"region":"us-east-1","lastSeq":"5","digestTime":"t"}', "no valid position"),
        (DIGEST_LABEL_V1 + b'{"region":"us-east-1","lastSeq":9223372036854775808,"digestTime":"t"}',
         "no valid position"),
        (DIGEST_LABEL_V1 + b'{"region":"","lastSeq":5,"digestTime":"t"}', "names no region"),
        (DIGEST_LABEL_V1 + b'{"region":"us-east-1","lastSeq":5}', "has no time"),
        (DIGEST_LABEL_V1 + b"\xff\xfe", "not JSON"),
        (DIGEST_LABEL_V1 + b" " * 5000, "too long"),
    ],
)  # fmt: skip
def test_what_is_not_a_signed_digest_is_refused_by_name(message: bytes, why: str) -> None:
    with pytest.raises(AnchorError, match=why):
        parse_anchor(message, b"\0" * 64)


def test_a_signature_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(AnchorError, match="64 bytes"):
        parse_anchor(_digest(1).message(), b"\0" * 63)


def test_a_line_whose_readable_members_disagree_with_its_message_is_refused() -> None:
    line = _digest(5).anchor().line()
    for old, new in ((b'"position":5', b'"position":6'), (b'"region":"us-east-1"', b'"region":"eu-west-1"')):
        with pytest.raises(AnchorError, match="disagree"):
            parse_line(line.replace(old, new))
    for bad in (b"", b"[]", b'{"v":2}', line.replace(b'"message":"', b'"message":"!')):
        with pytest.raises(AnchorError):
            parse_line(bad)


def test_the_file_is_private_append_only_and_its_last_anchor_survives_a_torn_line(tmp_path: Path) -> None:
    f = AnchorFile(tmp_path / "anchors.jsonl")
    assert f.last() is None
    anchors = [_digest(n).anchor() for n in (5, 10, 15)]
    for a in anchors:
        f.append(a)
    assert f.path.stat().st_mode & 0o777 == 0o600
    assert read_anchor_file(f.path).anchors == anchors
    assert f.last() == anchors[-1]
    with f.path.open("ab") as raw:  # a crash in the middle of a write
        raw.write(anchors[0].line()[:40])
    assert f.last() == anchors[-1]
    read = read_anchor_file(f.path)
    assert read.anchors == anchors and [n for n, _ in read.bad_lines] == [4]
