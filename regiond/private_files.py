"""Files and directories only the node's own user may read: how regiond writes to disk.

A state directory holds the root key, private keys wrapped under it, the cluster CA's key,
the local PostgreSQL's password, ``cluster.json`` with the admin's secret access key, and the
nodes' logs. Each of them is written here with mode 0600 (directories 0700), whatever the
caller's umask, and modes left wider by an earlier release are narrowed when a file or
directory is written again. ``regiond``'s entry point also sets the umask to 077
(``restrict_umask``), so that what a library or a child process (PostgreSQL, a node writing
its log) creates is private too.

Public material (certificates, public keys, the peers file) gets the same modes: one rule for
everything in a state directory is one rule to check, and an operator who wants to publish a
file copies it out.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def restrict_umask() -> None:
    """Make everything this process and its children create private by default."""
    os.umask(PRIVATE_UMASK)


def make_dir(path: Path) -> Path:
    """``path`` and any missing parents as directories of mode 0700; an existing ``path`` is narrowed to 0700."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent writer
            directory.mkdir(mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def write_file(path: Path, data: bytes, *, exclusive: bool = False, durable: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600.

    ``exclusive``: refuse (``FileExistsError``) if ``path`` exists, as for a key that must never
    be overwritten. Otherwise the file is replaced atomically (a temporary file beside it, then a
    rename), so a reader sees the old content or the new, never part of either. ``durable``: the
    data and the rename reach the disk before this returns (a root key that a power cut loses
    after its values were re-sealed under it would lose them all).
    """
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)  # a leftover temporary file keeps its mode on O_TRUNC
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def narrow(path: Path) -> None:
    """Narrow an existing file to mode 0600 (nothing if it does not exist)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, FILE_MODE)


def open_append(path: Path) -> BinaryIO:
    """``path`` opened for appending (a log), created or narrowed to mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "ab")
