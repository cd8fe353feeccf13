"""What in a directory tree others could read: the check behind "0600 files, 0700 directories"."""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

from regiond.devtools.postgres import SERVICE_USER


def _postgres_gids() -> set[int]:
    """Groups that may pass through a state directory: the local PostgreSQL's user's, when run as root.

    PostgreSQL refuses to run as root, so under root ``regiond dev`` runs it as an unprivileged
    user (regiond.devtools.postgres) whose group is let through the directories above its data directory.
    """
    if os.geteuid() != 0:
        return set()
    gids = set()
    for name in (SERVICE_USER, "nobody"):
        with contextlib.suppress(KeyError):
            gids.add(pwd.getpwnam(name).pw_gid)
    return gids


def loose_modes(root: Path) -> list[str]:
    """Every entry under ``root`` (and ``root``) that is not owner-only, as ``"path mode"`` lines.

    Owner-only: files have no group or other bits, directories none either, except search
    permission (0710) for the local PostgreSQL's group where ``_postgres_gids`` allows one.
    Symbolic links are reported: nothing in a state directory should be one.
    """
    let_through = _postgres_gids()
    out = []
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        name = path.relative_to(root.parent).as_posix()
        if stat.S_ISLNK(st.st_mode):
            out.append(f"{name} symlink")
        elif stat.S_ISDIR(st.st_mode):
            if mode & 0o077 and not (mode & 0o077 == stat.S_IXGRP and st.st_gid in let_through):
                out.append(f"{name} {mode:04o}")
        elif mode & 0o077:
            out.append(f"{name} {mode:04o}")
    return out
