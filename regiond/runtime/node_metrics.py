"""One node-wide view of the workers' Prometheus metrics: per-worker snapshots, merged on scrape.

``regiond serve --workers N`` runs N processes on one port, each with its own registry
(regiond.runtime.metrics), so a scrape used to see one random worker's counters. Here each worker
publishes a snapshot of its registry to a file in a directory private to the node, and the
worker that answers ``/metrics`` merges its own live registry with its siblings' snapshots.

Why snapshots and not prometheus_client's multiprocess mode (mmap-backed values): the hot
path updates two or three metrics per request, and multiprocess mode puts a lock and an mmap
write under every update, more than doubling their cost (docs/OPERATIONS.md, "Metrics", and
benchmarks/README.md, "Design figures"). Snapshots keep the updates in process, as cheap as
before, and move the cost to a publish per worker per second.

Snapshot file, format 1 (JSON), ``<dir>/<pid>.json``, replaced atomically (write + rename)::

    {"format": 1, "worker": "0", "pid": 1234, "published_at": <unix s>,
     "families": [{"name", "type", "help", "unit",
                   "samples": [[sample name, {labels}, value, changed_at unix s or null]]}]}

A worker that has exited gets a marker file ``<pid>.dead`` (written by the supervisor, which
sees it exit); its snapshot stays. Readers ignore unknown formats and unreadable files.

Merging (what a scrape of any worker returns):

- counters, histograms, summaries: summed over every snapshot, live and dead, so a worker
  that dies does not take its counts with it and the node's counters never go backwards.
  The ``_created`` samples are dropped (no single creation time for a sum), as
  prometheus_client's multiprocess collector does;
- gauges: live workers only, combined per ``modes`` (prometheus_client's multiprocess names):
  ``livemax``, ``livesum``, ``livemostrecent`` (the value most recently changed, to the
  publish interval) or, by default, ``liveall`` (one series per worker, label ``worker``).

Staleness: a sibling's figures are as old as its last publish, at most the publish interval
(1 s by default). The answering worker publishes its own snapshot before merging, so every
value a scrape has shown is on disk, and a later scrape of another worker shows at least as
much even if this worker has died meanwhile. What a worker counted after its last publish is
lost if it is killed; what it had published is kept.

Nothing secret is in a snapshot: metric names, operation names, outcomes, peers and numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

SNAPSHOT_FORMAT = 1
DIR_PREFIX = "regiond-metrics-"
PUBLISH_INTERVAL_S = 1.0
WORKER_LABEL = "worker"
SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
GAUGE_MODES = frozenset({"liveall", "livemax", "livesum", "livemostrecent"})

_LabelsKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Family:
    name: str
    type: str
    help: str
    unit: str
    # (sample name, labels, value, changed_at): changed_at only for gauges, else None
    samples: list[tuple[str, dict[str, str], float, float | None]]


@dataclass(frozen=True)
class _Snapshot:
    worker: str
    pid: int
    live: bool
    families: list[_Family]


class NodeMetrics:
    """This worker's side of the node view: publishes its registry, merges its siblings'."""

    def __init__(self, directory: Path, worker: str, modes: Mapping[str, str], *, pid: int | None = None) -> None:
        unknown = {m for m in modes.values() if m not in GAUGE_MODES}
        if unknown:
            raise ValueError(f"unknown gauge modes {sorted(unknown)}; known: {sorted(GAUGE_MODES)}")
        self.directory = directory
        self.worker = worker
        self.pid = os.getpid() if pid is None else pid  # tests run several "workers" in one process
        self._modes = dict(modes)
        self._changed: dict[tuple[str, _LabelsKey], tuple[float, float]] = {}  # gauge sample -> (value, since)
        self._failing = False

    @property
    def path(self) -> Path:
        return self.directory / f"{self.pid}.json"

    def publish(self, registry: Collector) -> _Snapshot:
        """Collect ``registry``, write it as this worker's snapshot, and return it."""
        now = time.time()
        families = []
        for metric in registry.collect():
            samples: list[tuple[str, dict[str, str], float, float | None]] = []
            for s in metric.samples:
                changed_at = None
                if metric.type not in SUMMED_TYPES:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    seen = self._changed.get(key)
                    if seen is None or seen[0] != s.value:
                        seen = self._changed[key] = (s.value, now)
                    changed_at = seen[1]
                samples.append((s.name, dict(s.labels), s.value, changed_at))
            families.append(_Family(metric.name, metric.type, metric.documentation, metric.unit, samples))
        snapshot = _Snapshot(self.worker, self.pid, True, families)
        body = orjson.dumps(
            {
                "format": SNAPSHOT_FORMAT, "worker": self.worker, "pid": self.pid, "published_at": now,
                "families": [
                    {"name": f.name, "type": f.type, "help": f.help, "unit": f.unit, "samples": f.samples}
                    for f in families
                ],
            }
        )  # fmt: skip
        try:
            _write_atomically(self.path, body)
        except OSError as exc:
            if not self._failing:
                log.warning("metrics.publish_failed", error=type(exc).__name__, directory=str(self.directory))
            self._failing = True
        else:
            if self._failing:
                log.info("metrics.publish_recovered")
            self._failing = False
        return snapshot

    def siblings(self) -> list[_Snapshot]:
        """The other workers' snapshots (dead ones included), skipping files that cannot be read."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        dead = {name.removesuffix(".dead") for name in names if name.endswith(".dead")}
        out = []
        for name in sorted(names):
            stem = name.removesuffix(".json")
            if stem == name or not stem.isdigit() or int(stem) == self.pid:
                continue
            snapshot = _read_snapshot(self.directory / name, live=stem not in dead)
            if snapshot is not None:
                out.append(snapshot)
        return out

    def render(self, registry: Collector) -> bytes:
        own = self.publish(registry)
        return generate_latest(_Merged(merge([own, *self.siblings()], self._modes)))


class _Merged:
    """A collector over already merged families (what ``generate_latest`` takes)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def merge(snapshots: Iterable[_Snapshot], modes: Mapping[str, str]) -> list[Metric]:
    """The node's families from the workers' snapshots (see the module docstring for the rules)."""
    heads: dict[str, _Family] = {}
    values: dict[str, dict[tuple[str, _LabelsKey], list[Any]]] = {}  # name -> key -> [name, labels, value, at]
    for snap in snapshots:
        for fam in snap.families:
            heads.setdefault(fam.name, fam)
            acc = values.setdefault(fam.name, {})
            summed = fam.type in SUMMED_TYPES
            mode = "sum" if summed else modes.get(fam.name, "liveall")
            if not summed and not snap.live:
                continue  # a dead worker's gauges are dropped
            for name, labels, value, changed_at in fam.samples:
                if summed and name.endswith("_created"):
                    continue
                if mode == "liveall":
                    labels = {**labels, WORKER_LABEL: snap.worker}
                key = (name, tuple(sorted(labels.items())))
                slot = acc.get(key)
                if slot is None:
                    acc[key] = [name, labels, value, changed_at]
                elif mode in ("sum", "livesum"):
                    slot[2] += value
                elif mode == "livemax":
                    slot[2] = max(slot[2], value)
                elif mode == "livemostrecent" and (changed_at or 0.0) > (slot[3] or 0.0):
                    slot[2], slot[3] = value, changed_at
    out = []
    for name, head in heads.items():
        metric = Metric(head.name, head.help, head.type, head.unit)
        for sample_name, labels, value, _at in values[name].values():
            metric.add_sample(sample_name, labels, value)
        out.append(metric)
    return out


def _write_atomically(path: Path, body: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    os.replace(tmp, path)


def _read_snapshot(path: Path, *, live: bool) -> _Snapshot | None:
    try:
        doc = orjson.loads(path.read_bytes())
        if doc.get("format") != SNAPSHOT_FORMAT:
            return None
        families = [
            _Family(f["name"], f["type"], f["help"], f["unit"], [(s[0], s[1], float(s[2]), s[3]) for s in f["samples"]])
            for f in doc["families"]
        ]
        return _Snapshot(str(doc["worker"]), int(doc["pid"]), live, families)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("metrics.snapshot_unreadable", file=path.name, error=type(exc).__name__)
        return None


# --- the node directory (made and removed by the supervisor, regiond.runtime.serve) ---


def create_directory(bases: Iterable[Path]) -> Path | None:
    """A fresh directory (mode 0700) for this node's snapshots, in the first base that takes one.

    The name carries the supervisor's pid; leftovers of supervisors that are gone (killed before
    they could clean up) are removed first. None if no base is writable: the node then serves
    per-worker metrics, as a single worker does.
    """
    for base in bases:
        with contextlib.suppress(OSError):
            _remove_leftovers(base)
            return Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=base))
    return None


def _remove_leftovers(base: Path) -> None:
    for entry in base.glob(f"{DIR_PREFIX}*"):
        pid = entry.name.removeprefix(DIR_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != os.getuid():
            continue
        if int(pid) == os.getpid() or not _alive(int(pid)):  # our own pid: a previous life (containers reuse pids)
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead(directory: Path, pid: int) -> None:
    """Record that worker ``pid`` has exited: its gauges leave the view, its counters stay."""
    with contextlib.suppress(OSError):
        (directory / f"{pid}.dead").touch(mode=0o600)
        (directory / f"{pid}.tmp").unlink(missing_ok=True)


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


# --- this process's membership (set once per worker by regiond.runtime.serve) ---

_node: NodeMetrics | None = None


def join(directory: Path, worker: str, modes: Mapping[str, str]) -> NodeMetrics:
    """Make this process a worker of the node whose snapshots are in ``directory``."""
    global _node
    _node = NodeMetrics(directory, worker, modes)
    return _node


def current() -> NodeMetrics | None:
    return _node


async def publish_every(node: NodeMetrics, registry: Collector, stop: asyncio.Event, interval_s: float) -> None:
    """Publish this worker's snapshot now, then every ``interval_s`` until ``stop`` (and once then)."""
    while True:
        node.publish(registry)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
