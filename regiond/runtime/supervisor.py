"""The parent of ``regiond serve --workers N``: starts the workers, respawns the ones that die, stops them all.

A worker that dies (SIGKILL from the OOM killer, a crash in a C extension) used to be logged and
left dead, the node serving on fewer workers until its next restart. Now each of the N worker
slots is kept filled:

- a worker that exits while the node is not stopping is respawned after a backoff: 0.5 s,
  doubled for each death in a row up to 30 s; a worker that served for a minute resets its slot's
  backoff. Each death is a warning (``node.worker_exited``, with the exit code or signal and the
  delay), each respawn an info line (``node.worker_respawned``) and one more in the counter
  ``regionkms_worker_restarts_total``, which the supervisor publishes into the node's metrics
  view (regiond.runtime.node_metrics) like a worker;
- a worker that dies before it ever listened in a slot that never had one listening is a start-up
  failure (a bad URL, a port taken): respawning would only repeat it, so the node stops, exit 1,
  for its service manager to report;
- SIGTERM or SIGINT stops the node: no respawn after it, SIGTERM to every worker (each drains and
  flushes its audit writer), SIGKILL to any still running ``STOP_GRACE_S`` later;
- SIGHUP (a service manager's reload) is passed on to every worker that listens; a worker still
  starting gets it once it listens (until then SIGHUP would end it, and its start may have read
  the files before they changed).

Signals only set a flag and write a byte to a pipe the loop waits on beside the workers' sentinels,
so the work happens in the loop, never in a handler interrupting it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import structlog

from regiond.runtime import metrics, node_metrics

log = structlog.get_logger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 30.0
RELOAD_POLL_S = 0.1
SUPERVISOR_WORKER = "supervisor"  # its name in the node's metrics snapshots

# run_worker(..., worker=<slot>, ready=<Event>): the process target the supervisor starts.
WorkerTarget = Callable[..., None]


def backoff_s(deaths_in_a_row: int) -> float:
    """The delay before respawning a worker after its slot's ``deaths_in_a_row``-th death (1, 2, ...)."""
    doublings = min(max(0, deaths_in_a_row - 1), 32)  # 2**32 half-seconds is past any cap
    return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * float(2**doublings))


@dataclass
class _Slot:
    index: int
    process: SpawnProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    ever_ready: bool = False
    deaths_in_a_row: int = 0
    respawn_at: float | None = None
    reload_pending: bool = False

    @property
    def name(self) -> str:
        return f"regiond-worker-{self.index}"


def _describe_exit(exitcode: int | None) -> dict[str, Any]:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return {"signal": signal.Signals(-exitcode).name}
    return {"exitcode": exitcode}


class Supervisor:
    def __init__(
        self, ctx: SpawnContext, target: WorkerTarget, args: tuple[Any, ...], workers: int, metrics_dir: Path | None
    ) -> None:
        self._ctx = ctx
        self._target = target
        self._args = args  # run_worker's leading arguments; slot and ready event are added
        self._slots = [_Slot(i) for i in range(workers)]
        self._metrics_dir = metrics_dir
        self._metrics = (
            node_metrics.NodeMetrics(metrics_dir, SUPERVISOR_WORKER, metrics.GAUGE_MODES)
            if metrics_dir is not None
            else None
        )
        self._stopping = False
        self._stop_deadline: float | None = None
        self._exit_code = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self._stopping = True
        self._wake()

    def _on_reload(self, _signum: int, _frame: object) -> None:
        for slot in self._slots:
            slot.reload_pending = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def run(self) -> int:
        """Run the node until it is stopped; its exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
        try:
            self._publish()
            for slot in self._slots:
                self._spawn(slot)
            while any(slot.process is not None for slot in self._slots):
                self._step()
            return self._exit_code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _step(self) -> None:
        now = time.monotonic()
        due = [s.respawn_at for s in self._slots if s.respawn_at is not None and not self._stopping]
        timeout = max(0.0, min(due) - now) if due else None
        if self._stop_deadline is not None:
            remaining = max(0.0, self._stop_deadline - now)
            timeout = remaining if timeout is None else min(timeout, remaining)
        if any(s.reload_pending for s in self._slots) and not self._stopping:
            timeout = RELOAD_POLL_S if timeout is None else min(timeout, RELOAD_POLL_S)  # a worker still starting
        running = {s.process.sentinel: s for s in self._slots if s.process is not None}
        ready = wait([*running, self._wake_r], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        for sentinel, slot in running.items():
            if sentinel in ready:
                self._reap(slot)
        if self._stopping:
            self._stop_workers()
            return
        self._pass_reloads()
        now = time.monotonic()
        for slot in self._slots:
            if slot.respawn_at is not None and slot.respawn_at <= now:
                slot.respawn_at = None
                self._spawn(slot)
                metrics.WORKER_RESTARTS.inc()
                self._publish()
                assert slot.process is not None
                log.info("node.worker_respawned", worker=slot.name, pid=slot.process.pid)

    def _pass_reloads(self) -> None:
        """SIGHUP to each worker with a reload pending that listens (and so handles SIGHUP)."""
        for slot in self._slots:
            if not slot.reload_pending:
                continue
            if slot.process is None:  # dead: its respawn reads the files afresh
                slot.reload_pending = False
            elif slot.ready is not None and slot.ready.is_set() and slot.process.pid is not None:
                slot.reload_pending = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGHUP)

    def _spawn(self, slot: _Slot) -> None:
        slot.ready = self._ctx.Event()
        slot.process = self._ctx.Process(
            target=self._target, args=(*self._args, str(slot.index), slot.ready), name=slot.name, daemon=False
        )
        slot.started_at = time.monotonic()
        slot.process.start()

    def _reap(self, slot: _Slot) -> None:
        process, slot.process = slot.process, None
        assert process is not None and slot.ready is not None
        process.join()
        if self._metrics_dir is not None and process.pid is not None:
            node_metrics.mark_dead(self._metrics_dir, process.pid)
        was_ready = slot.ready.is_set()
        if self._stopping:
            self._exit_code = max(self._exit_code, process.exitcode or 0)
            return
        if not was_ready and not slot.ever_ready:
            log.error("node.worker_failed_to_start", worker=slot.name, **_describe_exit(process.exitcode))
            self._exit_code = 1
            self._stopping = True
            return
        slot.ever_ready = True
        if was_ready and time.monotonic() - slot.started_at >= STABLE_AFTER_S:
            slot.deaths_in_a_row = 0
        slot.deaths_in_a_row += 1
        delay_s = backoff_s(slot.deaths_in_a_row)
        slot.respawn_at = time.monotonic() + delay_s
        log.warning(
            "node.worker_exited", worker=slot.name, pid=process.pid, respawn_in_s=delay_s,
            **_describe_exit(process.exitcode),
        )  # fmt: skip

    def _stop_workers(self) -> None:
        """SIGTERM every worker once; SIGKILL those still running after the grace period."""
        for slot in self._slots:
            slot.respawn_at = None
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
            for slot in self._slots:
                if slot.process is not None and slot.process.is_alive():
                    slot.process.terminate()
        elif time.monotonic() >= self._stop_deadline:
            self._stop_deadline = time.monotonic() + STOP_GRACE_S  # then wait for the kills to be reaped
            for slot in self._slots:
                if slot.process is not None and slot.process.is_alive():
                    log.warning("node.worker_killed", worker=slot.name, pid=slot.process.pid, after_s=STOP_GRACE_S)
                    slot.process.kill()
                    self._exit_code = max(self._exit_code, 1)

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.publish(metrics.SUPERVISOR_REGISTRY)
