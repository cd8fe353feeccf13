"""Audit anchors without a database: the format, its refusals, and the append-only file."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from regiond.audit import anchors, chain, digests
from regiond.audit.anchors import AnchorFile, read_anchor_file
from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import DIGEST_LABEL_V1, DIGEST_LABEL_V2, AnchorError, parse_anchor, parse_line
from replication.anchors import MAX_ANCHOR_BYTES_PER_FRAME, MAX_ANCHORS_PER_FRAME, anchors_message, check_anchors
from replication.messages import AuditAnchors, SignedDigest

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
    later = _digest(20).anchor()
    f.append(later)  # the next line is not glued to the torn one
    assert f.last() == later and read_anchor_file(f.path).anchors == [*anchors, later]


def _v2(seq: int, writers: int = 1) -> tuple[bytes, bytes]:
    heads = tuple(digests.Head(uuid.UUID(int=i + 1), 1, b"\5" * 32) for i in range(writers))
    message = digests.Digest("us-east-1", seq, T0, b"\6" * 32, heads).message()
    return message, KEY.sign(message)


def test_a_v2_digest_is_an_anchor_at_its_seq_and_must_carry_its_writers() -> None:
    message, signature = _v2(7)
    assert parse_anchor(message, signature).position == 7
    body = message[len(DIGEST_LABEL_V2) :].replace(b'"writers":', b'"writerz":')
    with pytest.raises(AnchorError, match="no writers or previous digest hash"):
        parse_anchor(DIGEST_LABEL_V2 + body, signature)


def test_an_anchors_frame_holds_the_newest_digest_and_as_many_older_ones_as_its_byte_bound_allows() -> None:
    big = [_v2(seq, writers=2000) for seq in range(1, 8)]  # each about a quarter of the bound
    size = len(big[0][0])
    assert 3 * size < MAX_ANCHOR_BYTES_PER_FRAME < 5 * size
    sent = anchors_message(big).anchors
    assert [s.message for s in sent] == [m for m, _ in big[-len(sent) :]] and sent[-1].message == big[-1][0]
    assert (
        sum(len(s.message) for s in sent) <= MAX_ANCHOR_BYTES_PER_FRAME < sum(len(m) for m, _ in big[-len(sent) - 1 :])
    )
    assert len(check_anchors(anchors_message(big), "us-east-1", KEY.public_bytes())) == len(sent)
    small = [_v2(seq) for seq in range(1, 101)]
    assert [s.message for s in anchors_message(small).anchors] == [m for m, _ in small[-MAX_ANCHORS_PER_FRAME:]]
    huge = _v2(9, writers=10_000)  # one digest past the bound alone: still sent, still accepted
    assert len(huge[0]) > MAX_ANCHOR_BYTES_PER_FRAME
    assert [a.position for a in check_anchors(anchors_message([*big, huge]), "us-east-1", KEY.public_bytes())] == [9]
    too_many = AuditAnchors(tuple(SignedDigest(*d) for d in big))  # not what anchors_message makes
    with pytest.raises(AnchorError, match="bytes at most together"):
        check_anchors(too_many, "us-east-1", KEY.public_bytes())


def test_the_last_anchor_is_found_whatever_the_length_of_its_line(tmp_path: Path) -> None:
    f = AnchorFile(tmp_path / "anchors-v2.jsonl")
    small, big = parse_anchor(*_v2(1)), parse_anchor(*_v2(2, writers=3000))  # a line of several read blocks
    assert len(big.line()) > 5 * anchors.READ_BLOCK_BYTES
    f.append(small)
    f.append(big)
    assert f.last() == big
    assert read_anchor_file(f.path).anchors == [small, big]
    with f.path.open("ab") as raw:  # a crash in the middle of writing a long line
        raw.write(big.line()[: 3 * anchors.READ_BLOCK_BYTES + 17])
    assert f.last() == big
    with f.path.open("ab") as raw:  # and a line that is a read block long, to the byte
        raw.write(b"\n" + b"x" * (anchors.READ_BLOCK_BYTES - 1) + b"\n")
    assert f.last() == big
    f.append(small)
    assert f.last() == small


def test_a_line_longer_than_any_anchor_is_refused_when_written_and_skipped_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anchors, "READ_BLOCK_BYTES", 100)
    monkeypatch.setattr(anchors, "MAX_LINE_BYTES", 1500)
    f = AnchorFile(tmp_path / "anchors.jsonl")
    ok = _digest(5).anchor()
    assert len(ok.line()) < 1500
    f.append(ok)
    with pytest.raises(ValueError, match="1500 bytes at most"):
        f.append(parse_anchor(*_v2(6, writers=20)))
    with f.path.open("ab") as raw:  # damage: a run of bytes longer than any anchor line, and one after it
        raw.write(b"y" * 5000 + b"\n")
    assert f.last() == ok
    with f.path.open("ab") as raw:
        raw.write(b"z" * 5000)  # without a newline, at the end
    assert f.last() == ok
    read = read_anchor_file(f.path)
    assert read.anchors == [ok]
    assert [(n, why) for n, why in read.bad_lines] == [(2, "longer than 1500 bytes"), (3, "longer than 1500 bytes")]
    f.append(ok)  # after the damage, on a line of its own: the file does not end with a newline
    assert read_anchor_file(f.path).anchors == [ok, ok] and f.last() == ok
