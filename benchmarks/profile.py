"""Sampling profile of one regiond worker under load, summarised as Markdown.

py-spy (``pip install py-spy``; not a project dependency) samples the worker while the load
generator replays Encrypt 1 KiB at concurrency 32. The profiled run is extra: its figures
are not part of the results, since sampling costs the worker some CPU. The summary lists
the functions with the most samples on top of the stack ("self") and in the stack at all
("total"), which is where the hot path spends its time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

SAMPLE_RATE_HZ = 250
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "regiond/", "kmsclient/", "benchmarks/"):
        if marker in path:
            path = (marker if marker != "site-packages/" else "") + path.split(marker, 1)[1]
            break
    else:
        path = Path(path).name
    return f"{m.group('func')} ({path})"


def summarize(raw: str, top: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, self counts, total counts) from py-spy's collapsed-stack ("raw") output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        n = int(m.group("count"))
        frames = [_short(f) for f in m.group("stack").split(";") if f]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    return samples, own.most_common(top), total.most_common(top)


def record(pid: int, duration_s: float) -> tuple[subprocess.Popen[bytes], Path] | None:
    """Start py-spy on ``pid`` in the background; None when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="bench-pyspy-")) / "profile.txt"
    cmd = [
        exe,
        "record",
        "-p",
        str(pid),
        "-d",
        str(max(1, round(duration_s))),
        "-r",
        str(SAMPLE_RATE_HZ),
        "-f",
        "raw",
        "-o",
        str(out),
        "--nonblocking",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out


def markdown(title: str, raw: str, context: str) -> str:
    samples, own, total = summarize(raw)
    lines = [f"# {title}", "", context, "", f"{samples} samples at {SAMPLE_RATE_HZ} Hz (idle time excluded).", ""]
    lines += ["## Self (top of stack)", "", "| % | function |", "|---:|---|"]
    lines += [f"| {100 * n / max(1, samples):.1f} | `{name}` |" for name, n in own]
    lines += ["", "## Total (anywhere in the stack)", "", "| % | function |", "|---:|---|"]
    lines += [f"| {100 * n / max(1, samples):.1f} | `{name}` |" for name, n in total]
    return "\n".join(lines) + "\n"
