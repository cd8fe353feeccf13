"""docs/ARCHITECTURE.md's Layout table names exactly what the tree holds (issue 14).

The table is where a newcomer learns which folder is which layer; a folder added, moved or removed
without it makes the document lie. This test compares the table's first column with the folders and
root modules of ``regiond/`` and the top-level folders of the repository, both ways.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
NOT_SOURCE = ("__pycache__",)


def _layout_paths() -> set[str]:
    text = DOC.read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            paths.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return paths


def _tree_paths() -> set[str]:
    found = {
        f"regiond/{p.name}/" if p.is_dir() else f"regiond/{p.name}"
        for p in (ROOT / "regiond").iterdir()
        if p.name not in NOT_SOURCE and (p.is_dir() or (p.suffix == ".py" and p.name != "__init__.py"))
    }
    found.update(
        f"{p.name}/"
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".egg-info") and p.name != "regiond"
    )
    return found


def test_the_layout_table_names_the_tree() -> None:
    listed, tree = _layout_paths(), _tree_paths()
    assert not tree - listed, f"in the tree, missing from docs/ARCHITECTURE.md Layout: {sorted(tree - listed)}"
    assert not listed - tree, f"in docs/ARCHITECTURE.md Layout, not in the tree: {sorted(listed - tree)}"


def test_every_layer_the_import_rules_name_is_a_folder() -> None:
    rules = (ROOT / "tests" / "unit" / "test_import_rules.py").read_text()
    for layer in set(re.findall(r'"regiond\.([a-z_]+)"', rules)):
        assert (ROOT / "regiond" / layer).is_dir() or (ROOT / "regiond" / f"{layer}.py").is_file(), layer
