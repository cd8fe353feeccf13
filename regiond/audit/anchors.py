"""The node's anchor file: every digest this node signed, appended outside the database.

``<state-dir>/audit-anchors.jsonl`` (mode 0600), one anchor per line
(``regiond.domain.audit_anchor`` documents the line). The digest signer appends a line after the
digest is durable in PostgreSQL, with ``O_APPEND`` (every worker process of the node appends to
the same file, one ``write`` per line, so lines never interleave) and ``fsync``: an anchor that
survives a crash names a digest the database had durably. The file only grows: nothing here
rewrites or truncates it.

Read back by ``regiond audit verify`` (the node's own file from ``--state-dir``, or any copy given
with ``--anchor``). The v1 digest signer (removed with the v1 writer, issue 15) also read its last
line when it started and refused to sign over a database that no longer held it; the anchors it
wrote stay checkable against the closed legacy chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from regiond.domain.audit_anchor import Anchor, AnchorError, parse_line

__all__ = ["ANCHOR_FILE_NAME", "V2_ANCHOR_FILE_NAME", "AnchorFile", "AnchorRead", "read_anchor_file"]

ANCHOR_FILE_NAME = "audit-anchors.jsonl"
V2_ANCHOR_FILE_NAME = "audit-anchors-v2.jsonl"  # audit trail v2 digests (regiond.audit.digests): their own sequence
TAIL_READ_BYTES = 64 * 1024  # the last line is found in this much of the file's end


@dataclass(slots=True)
class AnchorRead:
    """What an anchor file holds: its anchors in file order, and the lines that are not anchors."""

    anchors: list[Anchor] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def read_anchor_file(path: Path) -> AnchorRead:
    read = AnchorRead()
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
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
        """Append one line and ``fsync`` it (and the directory, when the file is new)."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = anchor.line()
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
        """The newest readable anchor in the file (``None``: no file, or no anchor in its tail)."""
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - TAIL_READ_BYTES))
                tail = f.read()
        except FileNotFoundError:
            return None
        for line in reversed(tail.splitlines()):
            try:
                return parse_line(line)
            except AnchorError:
                continue  # a torn first line of the tail, or a damaged line: look further back
        return None
