"""The node's anchor file: every digest this node signed, appended outside the database.

``<state-dir>/audit-anchors.jsonl`` (mode 0600), one anchor per line
(``regiond.domain.audit_anchor`` documents the line). The digest signer appends a line after the
digest is durable in PostgreSQL, with ``O_APPEND`` (every worker process of the node appends to
the same file, one ``write`` per line, so lines never interleave) and ``fsync``: an anchor that
survives a crash names a digest the database had durably. The file only grows: nothing here
rewrites or truncates it; a line torn by a crash stays, and the next one starts on a line of its own.
Trail v2 digests (``regiond.audit.digests``) have ``audit-anchors-v2.jsonl``, appended by the digest
task, which reads its last line when it becomes the leader and refuses to sign over a database that
no longer holds that digest.

A line is at most ``MAX_LINE_BYTES`` (what the longest digest ``parse_anchor`` accepts makes):
``append`` refuses a longer one, and readers skip a longer run of bytes as a damaged line without
holding it in memory. ``last`` reads the file backwards a block at a time, so it finds the newest
line whatever its length (a v2 digest's line grows with the number of writers it names).

Read back by ``regiond audit verify`` (the node's own file from ``--state-dir``, or any copy given
with ``--anchor``). The v1 digest signer (removed with the v1 writer, issue 15) also read its last
line when it started and refused to sign over a database that no longer held it; the anchors it
wrote stay checkable against the closed legacy chain.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from regiond.domain.audit_anchor import MAX_MESSAGE_BYTES_V2, SIGNATURE_BYTES, Anchor, AnchorError, parse_line

__all__ = [
    "ANCHOR_FILE_NAME", "MAX_LINE_BYTES", "V2_ANCHOR_FILE_NAME", "AnchorFile", "AnchorRead", "read_anchor_file",
]  # fmt: skip

ANCHOR_FILE_NAME = "audit-anchors.jsonl"
V2_ANCHOR_FILE_NAME = "audit-anchors-v2.jsonl"  # audit trail v2 digests (regiond.audit.digests): their own sequence
# The longest line an anchor makes: message and signature in base64, and the readable members.
MAX_LINE_BYTES = 4 * (MAX_MESSAGE_BYTES_V2 + SIGNATURE_BYTES) // 3 + 1024
READ_BLOCK_BYTES = 64 * 1024  # what ``last`` reads at a time, from the end


def _lines(f: BinaryIO) -> Iterator[bytes | None]:
    """The lines of ``f`` in file order, each at most ``MAX_LINE_BYTES`` (``None`` for a longer one)."""
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(READ_BLOCK_BYTES)) and not rest.endswith(b"\n"):
                pass  # the rest of the overlong line, dropped
            yield None
        else:
            yield line


def _lines_backwards(f: BinaryIO, size: int) -> Iterator[bytes | None]:
    """The lines of ``f`` (``size`` bytes) from the last to the first, read ``READ_BLOCK_BYTES`` at a
    time; ``None`` for a line longer than ``MAX_LINE_BYTES``, which is not kept in memory."""
    pos = size
    start = b""  # the bytes between ``pos`` and the next newline: the end of a line whose start is not read yet
    overlong = False  # that line is longer than MAX_LINE_BYTES: its bytes are dropped until its start
    while pos > 0:
        step = min(READ_BLOCK_BYTES, pos)
        pos -= step
        f.seek(pos)
        pieces = (f.read(step) + start).split(b"\n")
        start = pieces.pop(0)
        if pieces and overlong:
            pieces.pop()  # the overlong line's first bytes: it ends here
            overlong = False
            yield None
        yield from reversed(pieces)
        if overlong or len(start) > MAX_LINE_BYTES:
            start, overlong = b"", True
    yield None if overlong else start


@dataclass(slots=True)
class AnchorRead:
    """What an anchor file holds: its anchors in file order, and the lines that are not anchors."""

    anchors: list[Anchor] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def read_anchor_file(path: Path) -> AnchorRead:
    read = AnchorRead()
    with path.open("rb") as f:
        for number, line in enumerate(_lines(f), start=1):
            if line is None:
                read.bad_lines.append((number, f"longer than {MAX_LINE_BYTES} bytes"))
                continue
            if not line.strip():
                continue
            try:
                read.anchors.append(parse_line(line))
            except AnchorError as exc:
                read.bad_lines.append((number, str(exc)))
    return read


class AnchorFile:
    """Append-only access to one anchor file (created 0600 on first append)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, anchor: Anchor) -> None:
        """Append one line and ``fsync`` it (and the directory, when the file is new); ``ValueError`` for a
        line longer than ``MAX_LINE_BYTES`` (no anchor ``parse_anchor`` accepts makes one)."""
        data = anchor.line()
        if len(data) > MAX_LINE_BYTES:
            raise ValueError(f"an anchor line is {MAX_LINE_BYTES} bytes at most")
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a line torn by a crash: this one starts a line of its own
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path.name}")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def last(self) -> Anchor | None:
        """The newest readable anchor in the file, whatever its length (``None``: no file, or no anchor)."""
        try:
            with self.path.open("rb") as f:
                for line in _lines_backwards(f, f.seek(0, os.SEEK_END)):
                    if line is None or not line.strip():
                        continue
                    try:
                        return parse_line(line)
                    except AnchorError:
                        continue  # a torn or damaged line: look further back
        except FileNotFoundError:
            return None
        return None
