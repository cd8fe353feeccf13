"""Measured timings stay in benchmarks/README.md ("Design figures"), never in the source (issue 14).

A docstring or comment keeps why a choice was made; the figure that decided it goes stale with the
next change of the code, the machine or a library, so it lives in one table that says when and how
it was measured and how to measure it again. This test reads every Python file of the three
packages as text and refuses a figure in microseconds, nanoseconds or requests per second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("regiond", "replication", "kmsclient")
FIGURE = re.compile(r"\d[\d,.]*\s?(?:us|µs|ns|req/s|requests/s|ops/s)(?![-\w/])")


def _figures() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if FIGURE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_measured_figure_in_the_source() -> None:
    found = _figures()
    assert not found, "move these figures to benchmarks/README.md, Design figures:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("text", "figure"),
    [
        ("cost the writer ~35 us more", True),
        ("~0.5 µs less per signature", True),
        ("from ~3,000 to ~4,100 req/s", True),
        ("2.4 ns", True),
        ("us-east-1, ap-southeast-2, us-gov-west-1", False),
        ("batches of 256 frames", False),
        ("a 60 s skew window", False),
    ],
)
def test_the_pattern_tells_a_figure(text: str, figure: bool) -> None:
    assert bool(FIGURE.search(text)) is figure
