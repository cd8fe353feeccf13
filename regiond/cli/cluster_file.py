"""Reading ``cluster.json`` (written by ``regiond dev``) for the operator commands.

Every command that takes ``--cluster DIR/cluster.json --region R`` resolves the region's
database, endpoint and state directory here, with the same errors, so the file's format is
read in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """A bad command-line argument: commands print it and exit with status 2."""


@dataclass(frozen=True)
class RegionEntry:
    region: str
    database_url: str
    endpoint: str | None
    state_dir: Path


def load(path: str | Path) -> dict[str, Any]:
    try:
        cluster: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the cluster file {Path(path).name}: {type(exc).__name__}") from exc
    return cluster


def _entry(path: str | Path, region: str, info: dict[str, Any]) -> RegionEntry:
    state_dir = Path(info.get("state_dir") or Path(path).parent / region)
    return RegionEntry(region, str(info["database_url"]), info.get("endpoint"), state_dir)


def region_entry(path: str | Path, region: str | None) -> RegionEntry:
    """The entry of ``region`` in the cluster file at ``path``."""
    if not region:
        raise UsageError("--cluster needs --region")
    info = load(path).get("regions", {}).get(region)
    if info is None:
        raise UsageError(f"region {region} is not in {Path(path).name}")
    return _entry(path, region, info)


def region_entries(path: str | Path) -> list[RegionEntry]:
    """Every region's entry in the cluster file at ``path``, by region name."""
    regions: dict[str, Any] = load(path).get("regions", {})
    return [_entry(path, name, regions[name]) for name in sorted(regions)]
