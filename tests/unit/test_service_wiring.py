"""The services are built complete at start, each with its collaborators passed in (issue 14).

Two shapes this guards against, both found in review: a container field that is None until someone
assigns it later (every handler then guards against a missing service), and a service that reaches
for the authorizer, the key cache or the usage tracker through ``KeyService`` (a service locator:
what a service depends on no longer shows in its constructor).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from regiond.service.container import Services

ROOT = Path(__file__).resolve().parents[2]
REACH_THROUGH = re.compile(r"\b_?keys\.(cache|authz|usage)\b")


def test_every_service_field_is_required_and_never_optional() -> None:
    for f in dataclasses.fields(Services):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name
        assert "None" not in str(f.type), f"{f.name}: {f.type}"


def test_no_service_reaches_through_key_service() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "regiond" / "service").glob("*.py"))
        if path.name != "keys.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if REACH_THROUGH.search(line)
    ]
    assert not found, "pass these collaborators in the constructor instead:\n" + "\n".join(found)


def test_the_pattern_catches_a_reach() -> None:
    assert REACH_THROUGH.search("await self._keys.authz.authorize(")
    assert REACH_THROUGH.search("self._cache = keys.cache")
    assert not REACH_THROUGH.search("self._authz.authorize(")
