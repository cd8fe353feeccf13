"""Running the HTTP node: one process per worker, all bound to one port with SO_REUSEPORT.

The parent process only supervises (regiond.runtime.supervisor): it starts N workers, respawns one
that dies, and stops them all on SIGTERM/SIGINT. Each worker runs the full application (its
own pool, caches and listener, regiond.runtime.listener); background tasks elect one runner per
region through PostgreSQL advisory locks.

SIGHUP reloads the client endpoint's TLS certificate (regiond.runtime.client_tls) in every worker: the
supervisor passes it on; open connections are not touched.

Metrics: the parent makes a directory private to the node (regiond.runtime.node_metrics) where each
worker publishes a snapshot of its registry every second, so any worker's ``/metrics`` shows
the whole node; the parent marks a worker that exits as dead there (its gauges leave the view,
its counters stay), publishes its own counters there (worker restarts) and removes the
directory when the node stops.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import resource
import signal
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path

import structlog
from aiohttp import web

from regiond import logging as regiond_logging
from regiond.audit.writer import events_lost_in_process
from regiond.config import Settings
from regiond.runtime import heap, metrics, node_metrics
from regiond.runtime.client_tls import ServerCertificate
from regiond.runtime.listener import HttpLimits, listen
from regiond.runtime.supervisor import Supervisor

log = structlog.get_logger(__name__)

AppFactory = Callable[[Settings], web.Application]
SHUTDOWN_TIMEOUT_S = 10.0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    except ImportError:
        return asyncio.new_event_loop


def _reload(certificate: ServerCertificate | None) -> None:
    """SIGHUP: read the client endpoint's certificate and key again (nothing else is reloaded yet)."""
    if certificate is None:
        log.info("node.reload", tls="plain HTTP: no certificate to reload")
        return
    certificate.reload()


async def _serve(settings: Settings, factory: AppFactory, reuse_port: bool, ready: Event | None) -> None:
    loop = asyncio.get_running_loop()
    holder: list[ServerCertificate | None] = [None]
    # Before the certificate is read, so that a SIGHUP from here on is either seen or too early to matter.
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(holder[0]))
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        holder[0] = ServerCertificate(settings.tls_cert_file, settings.tls_key_file)
    certificate = holder[0]
    app = factory(settings)
    listener = await listen(
        app, settings.listen_host, settings.listen_port, HttpLimits.from_settings(settings),
        reuse_port=reuse_port, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        tls_context=certificate.context if certificate is not None else None,
    )  # fmt: skip
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "node.listening", host=settings.listen_host, port=listener.port,
        scheme="https" if certificate is not None else "http",
    )  # fmt: skip
    if ready is not None:
        ready.set()
    node = node_metrics.current()
    publishing = None
    if node is not None:
        interval_s = float(settings.extra.get("metrics_publish_interval_s", node_metrics.PUBLISH_INTERVAL_S))
        publishing = asyncio.create_task(
            node_metrics.publish_every(node, metrics.REGISTRY, stop, interval_s), name="metrics-publisher"
        )
    await stop.wait()
    log.info("node.draining")
    await listener.close()
    if node is not None and publishing is not None:
        await publishing
        node.publish(metrics.REGISTRY)  # what the drain counted


# Descriptors a worker needs beside its client connections: its pool, listener, logs, imports.
SPARE_FILE_DESCRIPTORS = 256


def _allow_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files to ``needed`` if the hard limit allows; warn if not.

    Past the limit, accept() fails (EMFILE) and the node stops taking connections well before
    ``--http-max-connections``: the usual soft limit is 1024, the default connection limit too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning("node.open_files_limit", limit=target, needed=needed, hint="raise LimitNOFILE / ulimit -n")


def run_worker(
    settings: Settings,
    factory: AppFactory,
    reuse_port: bool,
    metrics_dir: Path | None = None,
    worker: str = "0",
    ready: Event | None = None,
) -> None:
    """One worker process: the application on the node's port until SIGTERM; ``ready`` is set once it listens."""
    regiond_logging.configure(settings.log_level, json=settings.log_json)
    heap.enable()  # a serving process: its caches may be frozen out of GC walks (regiond.runtime.heap)
    _allow_open_files(settings.http_max_connections + SPARE_FILE_DESCRIPTORS)
    if metrics_dir is not None:
        node_metrics.join(metrics_dir, worker, metrics.GAUGE_MODES)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings, factory, reuse_port, ready))
    lost = events_lost_in_process()
    if lost:  # async audit events answered and never made durable: the stop was not clean
        log.error("node.audit_events_lost", worker=worker, events=lost, exit_status=EXIT_AUDIT_EVENTS_LOST)
        raise SystemExit(EXIT_AUDIT_EVENTS_LOST)


EXIT_AUDIT_EVENTS_LOST = 3  # a worker (and so the node) that stopped with async audit events lost


def _importable(factory: AppFactory) -> AppFactory:
    """The factory as a spawned worker can unpickle it: by its module's real name.

    Under ``python -m regiond`` the factory's module is ``__main__``, which a spawned child
    cannot import (multiprocessing does not re-run a package's ``__main__``), so every worker
    died with "Can't get attribute 'build_app'". Importing the module under its spec name
    gives the same function under a name the child can import.
    """
    if getattr(factory, "__module__", None) != "__main__":
        return factory
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None or not spec.name or spec.name == "__main__":
        return factory
    resolved: AppFactory = getattr(importlib.import_module(spec.name), factory.__qualname__)
    return resolved


def serve(settings: Settings, factory: AppFactory) -> int:
    if settings.workers <= 1:
        run_worker(settings, factory, reuse_port=False)
        return 0
    factory = _importable(factory)
    metrics_dir = _metrics_directory(settings)
    try:
        supervisor = Supervisor(
            multiprocessing.get_context("spawn"), run_worker, (settings, factory, True, metrics_dir),
            settings.workers, metrics_dir,
        )  # fmt: skip
        return supervisor.run()
    finally:
        if metrics_dir is not None:
            node_metrics.remove_directory(metrics_dir)


def _metrics_directory(settings: Settings) -> Path | None:
    """Where the workers publish their metrics snapshots: a fresh directory private to this node.

    The temporary directory first (private to the node under systemd's PrivateTmp or in a
    container), then the state directory, then /dev/shm (a read-only root filesystem); None
    (each worker then serves its own metrics) if none is writable.
    """
    bases = [Path(tempfile.gettempdir())]
    if settings.state_dir is not None:
        bases.append(settings.state_dir)
    bases.append(Path("/dev/shm"))  # noqa: S108 - mkdtemp makes a 0700 directory of our own in it
    directory = node_metrics.create_directory(bases)
    if directory is None:
        log.warning("metrics.per_worker", reason="no writable directory for the node's metrics snapshots")
    return directory
