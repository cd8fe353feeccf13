"""docs/API.md stays true: its statuses match the operations the node actually serves."""

from __future__ import annotations

import re
from pathlib import Path

from regiond.protocol.ops import KMS_OPERATIONS
from tests.support.api_coverage import OPERATIONS

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"
ROW = re.compile(r"^\| (?P<op>[A-Za-z]+) \| (?P<status>implemented|partial|planned|not planned) \|")


def _statuses() -> dict[str, str]:
    rows = (ROW.match(line) for line in API_MD.read_text().splitlines())
    return {m["op"]: m["status"] for m in rows if m}


def test_api_md_lists_every_model_operation_once() -> None:
    assert sorted(_statuses()) == sorted(OPERATIONS)


def test_api_md_status_matches_registered_handlers() -> None:
    statuses = _statuses()
    served = {op for op, status in statuses.items() if status in ("implemented", "partial")}
    assert served == set(KMS_OPERATIONS), (
        "docs/API.md and regiond.protocol.ops disagree: "
        f"documented but not served {sorted(served - set(KMS_OPERATIONS))}, "
        f"served but not documented {sorted(set(KMS_OPERATIONS) - served)}"
    )


def test_api_md_is_what_the_generator_renders_from_its_own_statuses() -> None:
    from tests.support.api_coverage import read_markdown, render_markdown

    text = API_MD.read_text()
    assert render_markdown(*read_markdown(text)) == text
