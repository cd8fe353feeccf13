"""Running the HTTP node: one process per worker, all bound to one port with SO_REUSEPORT.

The parent process only supervises: it starts N workers, forwards SIGTERM/SIGINT to them
and waits. Each worker runs the full application (its own pool, caches and listener);
background tasks elect one runner per region through PostgreSQL advisory locks.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import signal
import sys
from collections.abc import Callable

import structlog
from aiohttp import web

from regiond import logging as regiond_logging
from regiond.config import Settings

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


async def _serve(settings: Settings, factory: AppFactory, reuse_port: bool) -> None:
    app = factory(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_host, settings.listen_port, reuse_port=reuse_port, backlog=1024)
    await site.start()
    log.info("node.listening", host=settings.listen_host, port=settings.listen_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node.draining")
    await runner.cleanup()


def run_worker(settings: Settings, factory: AppFactory, reuse_port: bool) -> None:
    regiond_logging.configure(settings.log_level, json=settings.log_json)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings, factory, reuse_port))


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
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=run_worker, args=(settings, factory, True), name=f"regiond-worker-{i}", daemon=False)
        for i in range(settings.workers)
    ]
    for w in workers:
        w.start()

    def forward(_signum: int, _frame: object) -> None:
        for w in workers:
            if w.is_alive():
                w.terminate()  # SIGTERM: each worker drains and flushes its audit writer

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for w in workers:
        w.join()
    return max((w.exitcode or 0) for w in workers)
