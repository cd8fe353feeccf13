"""``regiond dev`` as a subprocess, the way a newcomer runs it (``make run``): start, wait, Ctrl-C.

One start and one stop for every test of the dev cluster (tests/cluster/test_dev_cluster.py and
the README's examples, tests/cluster/test_readme_client.py), so both wait for the same banner and
show the same diagnostics when the cluster does not come up.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

READY_LINE = "aws kms list-keys --endpoint-url"
"""The banner's last line: every region is ready once it is printed."""


def start_dev(
    state_dir: Path, regions: str, *extra: str, cwd: Path | None = None, umask: int = -1, timeout_s: float = 90,
    banner: list[str] | None = None,
) -> subprocess.Popen[str]:  # fmt: skip
    """``regiond dev --regions REGIONS --state-dir STATE_DIR EXTRA...`` once its banner is printed.

    ``banner`` collects what it printed until then; ``umask`` (-1: inherited) is the process's.
    Fails the test with the output and the first region's node log if the banner never comes.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "regiond", "dev", "--regions", regions, "--state-dir", str(state_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, umask=umask,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    seen = banner if banner is not None else []
    for line in proc.stdout:
        seen.append(line)
        if READY_LINE in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    proc.communicate()
    log = state_dir / regions.split(",")[0] / "regiond.log"
    node_log = log.read_text()[-3000:] if log.exists() else ""
    pytest.fail("regiond dev did not come up:\n" + "".join(seen)[-3000:] + "\nnode log:\n" + node_log)


def stop_dev(proc: subprocess.Popen[str], timeout_s: float = 30, *, must_stop: bool = True) -> None:
    """Ctrl-C, as a user stops it; SIGKILL after ``timeout_s`` (and a failure if ``must_stop``)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        if must_stop:
            pytest.fail("regiond dev did not stop on Ctrl-C")
