"""The audit writer of one worker process: each group-commit batch is one segment, one INSERT, one commit.

``submit`` turns the call record into its event bytes (one ``orjson.dumps``, ``events.encode``) and
queues them. A writer loop takes everything queued and writes it as one segment of this writer's
own hash chain (``regiond.audit.segment``): the sequence number and the hash are computed here, in
the worker, so the database only stores the row (``regiond.store.audit_segments.insert_segment``):
no pending table, no procedure, no lock shared with any other writer, worker or node.

Writer identity: ``start`` makes a writer id (uuid4), closes the legacy v1 chain if this is the
first v2 writer of the database (``close_v1_chains``) and registers the writer with its genesis, so
verify and the digests know every chain there is.

Adaptive group commit: up to ``max_in_flight`` batches are in flight at once (a loop each, each on
its own kept connection). While they wait for their commits, whatever arrives queues and forms the
next batch, so the batch size follows the load: one event per segment on an idle node, dozens under
load. ``linger_s`` lets a batch wait for company, but only under load (the previous batch carried
more than one event): an idle node answers without waiting. The chain stays in order with two
batches in flight because a segment's hash is fixed when it is built, before its INSERT is sent.

Liveness: the writer holds a lease (``regiond.audit.lease``: ``audit_writers.alive_at`` renewed in a
task) and builds a segment only while it is valid, since the digests close a writer whose lease
lapsed and a segment written after that would be a finding. When it lapsed (the database out of
reach for half of ``audit_writer_close_after_s``, or a digest closed the writer), the writer never
writes under that id again: it registers a new writer id and starts a new chain. At a clean stop,
once every segment is stored, it retires the lease so the next digest closes it at once.

Durability (``audit_durability``, docs/AUDIT.md "Durability modes"):

* ``sync`` (the default): ``submit`` returns once the segment holding the event is committed with a
  synchronous commit (its WAL flushed). A response leaves only after its event is durable.
* ``async``: ``submit`` returns once the event is queued. At most ``async_queue_events`` events are
  queued or unwritten at a time (the loss window of a crash); when the queue is full ``submit``
  raises, so the call is refused (``KMSInternalException``) rather than answered unaudited.

Failure is closed: a batch that cannot be committed (database down, table not writable, a trigger
that raises or drops the row, a write longer than ``write_timeout_s``) fails every ``submit`` of
that batch (sync), the node reports itself unready, and the next write acquires a new connection
(reconnecting after a database restart without a process restart). A failed segment may have
committed unseen, so it is not dropped: it is retried idempotently (same writer, seq and hash)
before any new segment is built, which keeps the writer's chain free of holes; an event may thus
exist for a call the client saw fail, never the reverse. In ``async`` mode a failed segment's
events stay counted in the queue until a retry stores them: under a stopped PostgreSQL the queue
fills and calls are then refused. A worker that stops while the database cannot take what it still
holds gives those events up after the first failed write (its stop stays bounded), counts them in
``regionkms_audit_events_lost_total``, logs ``audit.events_lost_at_close`` with the count once, and
exits with a failure status (``events_lost_in_process``, read by ``regiond.runtime.serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import structlog
from prometheus_client import Counter, Histogram

from regiond.audit import chain, events, segment
from regiond.audit.calls import CallRecord
from regiond.audit.lease import WriterLease
from regiond.config import Settings
from regiond.errors import KMSInternalException
from regiond.runtime.metrics import REGISTRY
from regiond.store import audit_segments as store
from regiond.store.pool import ACQUIRE_TIMEOUT_S, Conn, Pool, connection_usable, drop_if_gone

log = structlog.get_logger(__name__)

Durability = Literal["sync", "async"]

AUDIT_BATCH_EVENTS = Histogram(
    "regionkms_audit_batch_events",
    "Events per group-commit batch (one segment each)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
AUDIT_WRITE_SECONDS = Histogram(
    "regionkms_audit_write_seconds",
    "Time to make one segment durable (the wait every request of the batch shares)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
AUDIT_WRITE_FAILURES = Counter(
    "regionkms_audit_write_failures_total", "Segments whose write failed (retried until stored)", registry=REGISTRY
)
AUDIT_QUEUE_REFUSED = Counter(
    "regionkms_audit_queue_full_total",
    "Calls refused because the async audit queue was full (audit_durability = async)",
    registry=REGISTRY,
)

AUDIT_EVENTS_LOST = Counter(
    "regionkms_audit_events_lost_total",
    "Events answered in async mode that the worker could not make durable before it stopped (the database "
    "did not take them): lost, or for a segment that failed unseen, not known to be stored",
    registry=REGISTRY,
)
_lost_in_process = 0  # what every writer of this process lost at close: the worker's exit status says so


def events_lost_in_process() -> int:
    """Events this process's writers lost at close (async mode, database unreachable): the worker then
    exits with a failure status (``regiond.runtime.serve``), never 0."""
    return _lost_in_process


RETRY_EVERY_S = 0.5  # how often an unstored segment is retried when no new event comes to carry it


class AuditUnavailableError(KMSInternalException):
    """The event could not be made durable (or queued, in async mode); the call must not succeed.

    A server fault the client retries (KMSInternalException, 500), answered without a traceback:
    it is what every call meets while the database fails over (the writer logs the cause once per
    batch, ``audit.write_failed``)."""


@dataclass(frozen=True, slots=True)
class WriterOptions:
    durability: Durability = "sync"
    linger_s: float = 0.0004  # audit_batch_linger_ms's default (regiond.config)
    max_batch_events: int = 1000
    max_in_flight: int = 2
    write_timeout_s: float = 5.0
    async_queue_events: int = 10_000
    close_after_s: float = 30.0  # the digests close a writer whose lease lapsed this long (lease.py)

    @classmethod
    def from_settings(cls, s: Settings) -> WriterOptions:
        return cls(
            durability="async" if s.audit_durability == "async" else "sync",
            linger_s=s.audit_batch_linger_ms / 1000.0,
            max_batch_events=min(s.audit_max_batch_events, segment.MAX_SEGMENT_RECORDS),
            max_in_flight=s.audit_max_in_flight,
            write_timeout_s=s.audit_write_timeout_s,
            async_queue_events=s.audit_async_queue_events,
            close_after_s=s.audit_writer_close_after_s,
        )


@dataclass(slots=True)
class _Queued:
    second: dt.datetime  # the event's eventTime (whole seconds, as recorded)
    record: bytes
    future: asyncio.Future[None] | None  # None in async mode: nobody waits


class SegmentWriter:
    """The production ``AuditSink`` of one process (see module docstring)."""

    def __init__(
        self, pool: Pool, region: str, *, options: WriterOptions = WriterOptions(), node: str | None = None
    ) -> None:
        self._pool = pool
        self._region = region
        self._opt = options
        self._node = node or socket.gethostname()
        self._sync = options.durability == "sync"
        self.writer_id = uuid.uuid4()
        self._seq = 0
        self._head = segment.writer_genesis(region, self.writer_id)
        self._pending: list[_Queued] = []
        self._unstored: list[tuple[store.NewSegment, list[_Queued]]] = []  # failed: retried in seq order first
        self._unstored_events = 0
        self._in_flight_events = 0
        self._retrying = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._loops: asyncio.Task[None] | None = None
        self._idle: list[Conn] = []  # kept connections: a pool release costs a reset query per batch
        self._failed_at: float | None = None
        self._last_batch = 0
        self._lease: WriterLease | None = None
        self._lease_stop = asyncio.Event()
        self._lease_task: asyncio.Task[None] | None = None
        self._chain_lock = asyncio.Lock()
        self._close_failed = False  # a write failed while closing: what is still queued is given up at once
        self.lost_at_close = 0  # async events never made durable (or not known to be) when ``close`` ended

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Close the legacy v1 chain if still open, register this writer, start the writer loops."""
        async with asyncio.timeout(self._opt.write_timeout_s * 4):
            con = await self._connection()
            try:
                closed = await store.close_v1_chains(con, self._region, chain.genesis_hash(self._region))
                if closed is not None:
                    log.info("audit.v1_chain_closed", region=self._region, closed_seq=closed)
                await store.register_writer(con, self.writer_id, self._node, os.getpid(), self._head)
            except BaseException:
                await self._discard(con)
                raise
            self._idle.append(con)
        self._hold_lease()
        log.info("audit.writer_started", region=self._region, writer=str(self.writer_id),
                 durability=self._opt.durability)  # fmt: skip
        self._loops = asyncio.create_task(self._write_loops(), name="audit-writer")

    def _hold_lease(self) -> None:
        """Renew the current writer id's lease (``regiond.audit.lease``) from now on, in a task."""
        self._lease_stop.set()  # a previous writer id's renewals end
        self._lease_stop = asyncio.Event()
        self._lease = WriterLease(self._pool, self.writer_id, close_after_s=self._opt.close_after_s)
        self._lease_task = asyncio.create_task(self._lease.run(self._lease_stop), name="audit-writer-lease")

    async def _new_chain(self) -> None:
        """The lease lapsed (the database was out of reach, or a digest closed this writer): never write
        under this id again. Register a new writer id, a new chain from seq 1; a segment of the old one
        that was never stored is dropped in sync mode (its calls failed) and re-queued in async mode
        (its calls were answered), so an event may be stored twice, never lost."""
        old = self.writer_id
        writer_id = uuid.uuid4()
        genesis = segment.writer_genesis(self._region, writer_id)
        async with asyncio.timeout(self._opt.write_timeout_s):
            con = await self._connection()
            try:
                await store.register_writer(con, writer_id, self._node, os.getpid(), genesis)
            except BaseException:
                await self._discard(con)
                raise
            self._idle.append(con)
        self.writer_id, self._seq, self._head = writer_id, 0, genesis
        unstored, self._unstored, self._unstored_events = self._unstored, [], 0
        if not self._sync:
            self._pending[:0] = [q for _, batch in sorted(unstored, key=lambda u: u[0].seq) for q in batch]
        self._hold_lease()
        log.warning("audit.writer_renewed", old_writer=str(old), writer=str(writer_id),
                    dropped_segments=len(unstored) if self._sync else 0)  # fmt: skip

    async def _ensure_lease(self) -> None:
        if self._lease is not None and self._lease.valid():
            return
        async with self._chain_lock:
            if self._lease is None or not self._lease.valid():
                await self._new_chain()

    async def close(self) -> None:
        """Drain: every queued event is written (or failed), unstored segments retried once more."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._loops is not None:
            await self._loops
        if self._unstored and self._lease is not None and self._lease.valid():
            with contextlib.suppress(Exception):
                await self._retry_unstored()
        if self._unstored:
            log.error("audit.unstored_at_close", writer=str(self.writer_id), segments=len(self._unstored),
                      events=self._unstored_events)  # fmt: skip
        self._account_lost()
        self._lease_stop.set()
        if self._lease_task is not None:
            await self._lease_task
        if self._lease is not None and not self._unstored:
            try:  # every segment is stored: the next digest may close this writer at once
                await self._lease.retire()
            except Exception as exc:
                log.warning("audit.retire_failed", writer=str(self.writer_id), error=type(exc).__name__)
        idle, self._idle = self._idle, []
        for con in idle:
            await self._discard(con)

    def _account_lost(self) -> None:
        """Async mode: every answered event not durable at close is counted, logged once and makes the
        worker's exit status a failure. (Sync mode loses nothing: those calls failed.)"""
        global _lost_in_process
        unconfirmed = 0 if self._sync else self._unstored_events  # failed segments: may have committed unseen
        lost = self.lost_at_close + unconfirmed
        if not lost:
            return
        self.lost_at_close = lost
        _lost_in_process += lost
        AUDIT_EVENTS_LOST.inc(lost)
        log.error("audit.events_lost_at_close", writer=str(self.writer_id), events=lost, unconfirmed=unconfirmed,
                  durability=self._opt.durability,
                  reason="the worker stopped while the database could not take its queued events")  # fmt: skip

    # --- the seam ----------------------------------------------------------------------------

    async def submit(self, record: CallRecord) -> None:
        if self._closing or self._loops is None or self._loops.done():
            raise AuditUnavailableError("the audit writer is not running")
        data = events.encode(record)
        second = record.event_time.replace(microsecond=0)
        if self._sync:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending.append(_Queued(second, data, future))
            self._wakeup.set()
            await future
            return
        if self.backlog >= self._opt.async_queue_events:
            AUDIT_QUEUE_REFUSED.inc()
            raise AuditUnavailableError("the audit queue is full")
        self._pending.append(_Queued(second, data, None))
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        """Events accepted but not yet durable (queued, in flight or in unstored segments)."""
        return len(self._pending) + self._in_flight_events + self._unstored_events

    def problem(self, hold_s: float) -> str | None:
        """Why calls cannot be audited now, or None (readiness, ``regiond.service.readiness``).

        A failed write counts for ``hold_s``: an unready node gets no traffic, so without a bound
        it would never see the success that clears it.
        """
        if self._loops is None or self._loops.done() or self._closing:
            return "the audit writer is not running"
        if self._failed_at is not None and time.monotonic() - self._failed_at < hold_s:
            return "audit writes are failing"
        if not self._sync and self.backlog >= self._opt.async_queue_events:
            return "the audit queue is full"
        return None

    # --- the loops ---------------------------------------------------------------------------

    async def _write_loops(self) -> None:
        await asyncio.gather(*(self._write_loop() for _ in range(max(1, self._opt.max_in_flight))))

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()  # no await since the check: a submit after it sets the event again
                if self._unstored:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RETRY_EVERY_S):
                            await self._wakeup.wait()
                    if not self._pending and not self._closing:
                        await self._retry_logged()
                else:
                    await self._wakeup.wait()
                continue
            if self._closing and self._close_failed and not self._sync:
                self.lost_at_close += len(self._pending)  # the database failed at close: do not wait on each batch
                self._pending.clear()
                continue
            if self._opt.linger_s > 0 and self._last_batch > 1 and not self._closing:
                await asyncio.sleep(self._opt.linger_s)  # under load only: an idle node does not wait
            else:
                await asyncio.sleep(0)  # let handlers that are ready right now join this batch
            n = min(len(self._pending), self._opt.max_batch_events)
            if not n:
                continue
            batch = self._pending[:n]
            del self._pending[:n]
            self._in_flight_events += n
            try:
                await self._write(batch)
            finally:
                self._in_flight_events -= n

    async def _write(self, batch: list[_Queued]) -> None:
        self._last_batch = len(batch)
        started = time.perf_counter()
        try:
            await self._ensure_lease()  # before any write under this id (a new chain if it lapsed)
            if self._unstored:
                await self._retry_unstored()
        except Exception as exc:
            self._fail(batch, exc, None)
            if not self._sync:  # keep the events: nothing acknowledged is dropped while it is retried
                await self._requeue(batch)
            return
        seg = self._build(batch)
        try:
            await self._insert(seg, idempotent=False)
        except Exception as exc:
            self._unstored.append((seg, batch))
            self._unstored_events += seg.record_count
            self._fail(batch, exc, seg)
            return
        self._failed_at = None
        AUDIT_WRITE_SECONDS.observe(time.perf_counter() - started)
        AUDIT_BATCH_EVENTS.observe(len(batch))
        for q in batch:
            if q.future is not None and not q.future.done():
                q.future.set_result(None)

    async def _requeue(self, batch: list[_Queued]) -> None:
        """Async mode: put a batch that could not be written back at the head of the queue after a pause
        (the database is failing: retrying at once would spin), unless the writer is closing."""
        if not self._closing:
            await asyncio.sleep(RETRY_EVERY_S)
        if self._closing:
            self._close_failed = True
            self.lost_at_close += len(batch)  # counted and logged once, by close
            return
        self._pending[:0] = batch

    def _build(self, batch: list[_Queued]) -> store.NewSegment:
        """The next segment of this writer's chain (synchronous: two loops never build one seq twice)."""
        records = [q.record for q in batch]
        body = segment.encode(records)
        self._seq += 1
        first = min(q.second for q in batch)
        last = max(q.second for q in batch)
        h = segment.segment_hash(self._head, self.writer_id, self._seq, len(records), body)
        seg = store.NewSegment(self.writer_id, self._seq, first, last, len(records), self._head, h, body)
        self._head = h
        return seg

    def _fail(self, batch: list[_Queued], exc: Exception, seg: store.NewSegment | None) -> None:
        AUDIT_WRITE_FAILURES.inc()
        self._failed_at = time.monotonic()
        # The type and SQLSTATE only: a driver message may quote row data.
        log.error("audit.write_failed", events=len(batch), writer=str(self.writer_id),
                  seq=seg.seq if seg is not None else None, error=type(exc).__name__,
                  sqlstate=getattr(exc, "sqlstate", None))  # fmt: skip
        for q in batch:
            if q.future is not None and not q.future.done():
                q.future.set_exception(AuditUnavailableError("the audit event could not be made durable"))

    async def _retry_logged(self) -> None:
        try:
            await self._ensure_lease()
            await self._retry_unstored()
        except Exception as exc:
            self._failed_at = time.monotonic()
            log.warning("audit.retry_failed", writer=str(self.writer_id), segments=len(self._unstored),
                        error=type(exc).__name__, sqlstate=getattr(exc, "sqlstate", None))  # fmt: skip

    async def _retry_unstored(self) -> None:
        """Store every failed segment, in seq order (idempotent: it may have committed unseen)."""
        async with self._retrying:
            stale = [u for u in self._unstored if u[0].writer_id != self.writer_id]
            if stale:  # failed under a writer id given up since (_new_chain): never written under it again
                self._unstored = [u for u in self._unstored if u[0].writer_id == self.writer_id]
                self._unstored_events -= sum(u[0].record_count for u in stale)
                if not self._sync:
                    self._pending[:0] = [q for _, batch in stale for q in batch]
            self._unstored.sort(key=lambda u: u[0].seq)
            while self._unstored:
                seg = self._unstored[0][0]
                try:
                    await self._insert(seg, idempotent=True)
                except store.SegmentConflictError:
                    log.error("audit.chain_conflict", writer=str(self.writer_id), seq=seg.seq)
                    raise
                self._unstored.pop(0)
                self._unstored_events -= seg.record_count
                log.info("audit.segment_retried", writer=str(self.writer_id), seq=seg.seq)
            self._failed_at = None

    # --- connections -------------------------------------------------------------------------

    async def _insert(self, seg: store.NewSegment, *, idempotent: bool) -> None:
        started = time.perf_counter()
        con: Conn | None = None
        try:
            async with asyncio.timeout(self._opt.write_timeout_s):
                con = await self._connection()
            # The rest of the write timeout bounds the statement (asyncpg's own timeout: no extra timer).
            left_s = self._opt.write_timeout_s - (time.perf_counter() - started)
            if left_s <= 0:
                raise TimeoutError
            await store.insert_segment(con, seg, timeout_s=left_s, idempotent=idempotent)
        except BaseException as exc:
            if con is not None:  # its state is unknown after a failure or a timeout
                drop_if_gone(con, exc)  # a server gone or read-only: never pooled again (a failover)
                await self._discard(con)
            raise
        self._idle.append(con)

    async def _connection(self) -> Conn:
        """A kept connection if one is still open, else a new one from the pool (after a database
        restart: the pool reconnects)."""
        while self._idle:
            con = self._idle.pop()
            if connection_usable(con):
                return con
            await self._discard(con)
        con = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        try:
            await store.require_synchronous_commit(con)
        except BaseException:
            await self._discard(con)
            raise
        return con

    async def _discard(self, con: Conn) -> None:
        try:
            await self._pool.release(con, timeout=ACQUIRE_TIMEOUT_S)
        except Exception:  # a broken connection (or one the pool took back when it closed): replaced
            with contextlib.suppress(Exception):
                con.terminate()
