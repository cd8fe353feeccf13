"""Everything regiond writes to disk is its owner's only: 0600 files, 0700 directories (issue 13, finding 11).

``regiond dev`` is checked end to end in tests/cluster/test_dev_cluster.py; here ``regiond init``
and the writers every command shares (regiond.private_files), under a permissive umask.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from regiond import private_files
from regiond.statedir import init_state_dir
from tests.support.modes import loose_modes


def _init(state_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "regiond", "init", "--state-dir", str(state_dir), "--region", "us-east-1"],
        check=True, capture_output=True, umask=0o022,
    )  # fmt: skip


def test_regiond_init_writes_only_owner_readable_files(tmp_path: Path) -> None:
    state_dir = tmp_path / "nested" / "state"
    _init(state_dir)
    names = {p.name for p in state_dir.iterdir()}
    assert names >= {"root.key", "region", "identity.ed25519", "identity.ed25519.pub", "encryption.hpke"}
    assert loose_modes(tmp_path / "nested") == []


def test_regiond_init_narrows_a_state_dir_an_older_release_left_readable(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region="us-east-1")
    state_dir.chmod(0o755)
    for path in state_dir.iterdir():
        if path.name != "root.key":
            path.chmod(0o644)
    _init(state_dir)
    assert loose_modes(state_dir) == []


def test_a_root_key_others_could_read_is_refused_not_narrowed(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, region="us-east-1")
    (state_dir / "root.key").chmod(0o644)
    with pytest.raises(subprocess.CalledProcessError) as info:
        _init(state_dir)
    assert b"must not be readable by group or others" in info.value.stderr


def test_private_writers_ignore_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        directory = private_files.make_dir(tmp_path / "a" / "b")
        private_files.write_file(directory / "replaced", b"one")
        private_files.write_file(directory / "replaced", b"two")
        private_files.write_file(directory / "once", b"x", exclusive=True)
        with pytest.raises(FileExistsError):
            private_files.write_file(directory / "once", b"y", exclusive=True)
        with private_files.open_append(directory / "log") as log:
            log.write(b"line\n")
        (directory / "wide").write_bytes(b"")
        (directory / "wide").chmod(0o666)
        with private_files.open_append(directory / "wide") as log:  # an existing log is narrowed
            log.write(b"line\n")
    finally:
        os.umask(old)
    assert (directory / "replaced").read_bytes() == b"two"
    assert sorted(p.name for p in directory.iterdir()) == ["log", "once", "replaced", "wide"]  # no temporary left
    assert loose_modes(tmp_path / "a") == []
