"""Group commit: every request's event is durable before its response, without an INSERT each.

``submit`` turns the call record into its event bytes (one ``orjson.dumps``), queues it with a
future and waits. One writer task per process takes everything queued and appends it with one
round trip (docs/AUDIT.md, "Durability: one call, two commits"; ``regiond.store.audit``): a
procedure that links the batch into the region's hash chain under the chain head's row lock and
commits *without* waiting for the WAL flush (so the lock is never held across an fsync and the
writers of every process and node queue behind each other only for microseconds), then commits a
one-record transaction synchronously, whose flush covers the batch. The futures are resolved
after that: a response leaves only once its event is durable.

Up to ``max_in_flight`` batches (2 by default, each on its own connection) are in flight at once,
one per writer loop (a task each, started once): while one waits for its WAL flush the next one
starts, so a request that arrives during a flush waits for one flush, not for the end of the
previous batch's and then its own (at 8 concurrent clients this alone raised Encrypt's throughput by
about a third: benchmarks/README.md, "Design figures"). What queues while every loop is busy forms
the next batch, so the batch size follows the load: one event per write when idle, dozens when busy,
and the cost per request stays a few microseconds of Python plus a share of one round trip.

Failure is closed: if the batch cannot be committed (database down, table not writable, a
trigger that raises or silently drops rows, a write that takes longer than the timeout), every
waiting ``submit`` raises and the protocol edge answers ``KMSInternalException`` instead of the
result. A timed-out call is ambiguous: the event may exist for a call the client saw fail,
never the reverse. Writes are not retried for the same reason.

Nodes of the previous release staged events in ``audit_pending`` first and linked them in a
second statement; ``start`` and the maintenance timer (every ``LINK_EVERY_S``) still link
whatever such a node left there, and ``regiond audit verify`` reports events left unchained for
longer than a minute.

The writer also keeps the chain's checkpoints (a digest signed with the region identity key
every ``checkpoint_events`` events, started right after the batch that crosses the mark, or every
``checkpoint_interval_s`` from a timer; either way in a task beside the writer, under the chain
head's row lock, committed without waiting for a flush), anchors each digest outside the database
once it is durable (appended to the node's anchor file, ``regiond.audit.anchors``; the replication
senders push it to the other regions), refuses to sign over a database that no longer holds the
last digest it anchored (a rollback), and applies retention (deletes signed, expired events in
small chunks, keeping the chain anchor).
``close`` drains the queue, links what is pending and writes a last digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import Counter, Gauge, Histogram

from regiond.audit import chain, events
from regiond.audit.anchors import ANCHOR_FILE_NAME, AnchorFile
from regiond.audit.calls import CallRecord
from regiond.audit.verify import column_mismatches
from regiond.clock import Clock, SystemClock
from regiond.config import Settings
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import Anchor
from regiond.runtime.metrics import REGISTRY
from regiond.store import audit as audit_store
from regiond.store.pool import ACQUIRE_TIMEOUT_S, Conn, Pool, transaction

log = structlog.get_logger(__name__)

AUDIT_BATCH_EVENTS = Histogram(
    "regionkms_audit_batch_events",
    "Events per group-commit batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
AUDIT_WRITE_SECONDS = Histogram(
    "regionkms_audit_write_seconds",
    "Time to make one group-commit batch durable (the wait every request of the batch shares)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
AUDIT_WRITE_FAILURES = Counter(
    "regionkms_audit_write_failures_total", "Group-commit batches that could not be made durable", registry=REGISTRY
)
AUDIT_ROLLBACK = Gauge(
    "regionkms_audit_rollback_detected",
    "1 once this process found its last anchored digest missing from the database (digests stop)",
    registry=REGISTRY,
)

RETENTION_CHUNK_EVENTS = 5000
RETENTION_EVERY_S = 3600.0
LINK_MAX_EVENTS = 5000  # per linking transaction: bounds how long one pass holds the chain head lock
LINK_EVERY_S = 5.0  # the timer's pass: links what a node of the previous release left pending


class AuditUnavailableError(RuntimeError):
    """The event could not be made durable; the call must not be answered as a success."""


@dataclass(frozen=True, slots=True)
class CommitOptions:
    linger_s: float = 0.0
    max_batch_events: int = 1000
    max_in_flight: int = 2
    checkpoint_events: int = 1000
    checkpoint_interval_s: float = 300.0
    retention_days: int = 0  # 0: keep forever
    write_timeout_s: float = 5.0
    anchor_path: Path | None = None  # the node's anchor file (None: digests are anchored nowhere here)

    @classmethod
    def from_settings(cls, s: Settings) -> CommitOptions:
        return cls(
            anchor_path=s.state_dir / ANCHOR_FILE_NAME if s.state_dir is not None else None,
            linger_s=s.audit_batch_linger_ms / 1000.0,
            max_batch_events=s.audit_max_batch_events,
            max_in_flight=s.audit_max_in_flight,
            checkpoint_events=s.audit_checkpoint_events,
            checkpoint_interval_s=s.audit_checkpoint_interval_s,
            retention_days=s.audit_retention_days,
            write_timeout_s=s.audit_write_timeout_s,
        )


class GroupCommitter:
    """The production ``AuditSink`` of one process (see module docstring)."""

    def __init__(
        self, pool: Pool, region: str, signer: RegionIdentityKey | None, *,
        options: CommitOptions = CommitOptions(), clock: Clock | None = None,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._region = region
        self._signer = signer
        self._opt = options
        self._clock = clock or SystemClock()
        self._genesis = chain.genesis_hash(region)
        # Queued events and the futures their submitters wait on, index for index.
        self._pending: list[events.PreparedEvent] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        # The writer keeps its connections: a pool release costs a reset query (a round trip) per batch.
        self._idle: list[Conn] = []
        self._anchors = AnchorFile(options.anchor_path) if options.anchor_path is not None else None
        self._last_anchor: Anchor | None = None  # the newest digest this process knows was anchored
        self._failed_at: float | None = None  # monotonic time of the last failed batch, None after a success

    async def start(self) -> None:
        if self._anchors is not None and self._signer is not None:
            self._last_anchor = await asyncio.to_thread(self._anchors.last)
        async with transaction(self._pool) as con:
            await audit_store.ensure_head(con, self._region, self._genesis)
        try:  # events a crashed writer (of any node) left durable but unchained
            await self.link()
        except Exception as exc:
            log.warning("audit.link_failed", error=type(exc).__name__, sqlstate=getattr(exc, "sqlstate", None))
        if self._signer is None:
            log.warning("audit.unsigned", region=self._region, reason="no region identity key: digests are not written")
        self._writer = asyncio.create_task(self._write_loops(), name="audit-writer")
        self._ticker = asyncio.create_task(self._tick_loop(), name="audit-checkpoints")

    async def submit(self, record: CallRecord) -> None:
        if self._closing or self._writer is None or self._writer.done():
            raise AuditUnavailableError("the audit writer is not running")
        prepared = events.prepare(record)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(prepared)
        self._waiters.append(future)
        self._wakeup.set()
        await future

    def problem(self, hold_s: float) -> str | None:
        """Why calls cannot be audited durably now, or None (readiness, regiond.service.readiness).

        A failed batch counts for ``hold_s``: an unready node gets no traffic, so without a bound
        it would never see the success that clears it; after that the readiness check's own
        database probes decide, and the next failure marks it again.
        """
        if self._writer is None or self._writer.done() or self._closing:
            return "the audit writer is not running"
        if self._failed_at is not None and time.monotonic() - self._failed_at < hold_s:
            return "audit writes are failing"
        return None

    async def close(self) -> None:
        """Drain: every queued event is written (or failed), then a last digest."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._writer is not None:
            await self._writer
        if self._checkpointing is not None:
            await self._checkpointing
        await self._release_connections()
        try:
            await self.link()
            await self.checkpoint(force=True)
        except Exception as exc:
            log.warning("audit.final_checkpoint_failed", error=type(exc).__name__)

    # --- the writer ---------------------------------------------------------------------

    async def _write_loops(self) -> None:
        """One loop per batch that may be in flight: a loop, not a task per batch (a task, a semaphore
        and a done callback per batch cost the writer measurably more: benchmarks/README.md)."""
        await asyncio.gather(*(self._write_loop() for _ in range(max(1, self._opt.max_in_flight))))

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:  # drained: close() stops new submits before it sets this
                    return
                self._wakeup.clear()  # no await since the check: a submit after it sets the event again
                await self._wakeup.wait()
                continue  # another loop may have taken what woke this one
            # This loop is free, so at most max_in_flight - 1 batches are in flight: whatever queues
            # while they finish joins this batch.
            if self._opt.linger_s > 0 and not self._closing:
                await asyncio.sleep(self._opt.linger_s)
            else:
                await asyncio.sleep(0)  # let handlers that are ready right now join this batch
            n = min(len(self._pending), self._opt.max_batch_events)
            if not n:
                continue
            batch, waiters = self._pending[:n], self._waiters[:n]
            del self._pending[:n], self._waiters[:n]
            await self._commit(batch, waiters)

    async def _writer_connection(self) -> Conn:
        while self._idle:
            con = self._idle.pop()
            if not con.is_closed():
                return con
            await self._discard_connection(con)  # the server went away meanwhile: never write on it
        con = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        try:
            await audit_store.require_synchronous_commit(con)
        except BaseException:
            await self._pool.release(con, timeout=ACQUIRE_TIMEOUT_S)
            raise
        return con

    async def _discard_connection(self, con: Conn) -> None:
        try:
            await self._pool.release(con, timeout=ACQUIRE_TIMEOUT_S)
        except Exception:  # a broken connection: the pool replaces it
            con.terminate()

    async def _release_connections(self) -> None:
        idle, self._idle = self._idle, []
        for con in idle:
            await self._discard_connection(con)

    async def _commit(self, batch: list[events.PreparedEvent], waiters: list[asyncio.Future[None]]) -> None:
        started = time.perf_counter()
        con: Conn | None = None
        try:
            if self._idle and not self._idle[-1].is_closed():
                con = self._idle.pop()
            else:
                async with asyncio.timeout(self._opt.write_timeout_s):
                    con = await self._writer_connection()
            # The rest of the write timeout bounds the call (asyncpg's statement timeout: it replaces
            # the connection's command timeout, where an asyncio.timeout around it would add a timer).
            left_s = self._opt.write_timeout_s - (time.perf_counter() - started)
            if left_s <= 0:
                raise TimeoutError
            head = await audit_store.append_batch(con, self._region, batch, timeout_s=left_s)
        except Exception as exc:
            if con is not None:  # its state is unknown after a failure or a timeout
                await self._discard_connection(con)
            AUDIT_WRITE_FAILURES.inc()
            self._failed_at = time.monotonic()
            # The type and SQLSTATE only: a driver message may quote row data.
            log.error("audit.write_failed", events=len(batch), error=type(exc).__name__,
                      sqlstate=getattr(exc, "sqlstate", None))  # fmt: skip
            for future in waiters:  # one exception each: every request logs its own traceback
                if not future.done():
                    future.set_exception(AuditUnavailableError("the audit event could not be made durable"))
            return
        self._idle.append(con)
        self._failed_at = None
        AUDIT_WRITE_SECONDS.observe(time.perf_counter() - started)
        AUDIT_BATCH_EVENTS.observe(len(batch))
        for future in waiters:
            if not future.done():
                future.set_result(None)
        if head.last_seq - head.digest_seq >= self._opt.checkpoint_events:
            self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """Sign a digest beside the writer: the next batch must not wait for it (one at a time)."""
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = asyncio.create_task(self._checkpoint_logged(), name="audit-checkpoint")

    async def _checkpoint_logged(self) -> None:
        try:
            await self.checkpoint(force=True)
        except Exception as exc:
            log.warning("audit.checkpoint_failed", error=type(exc).__name__,
                        sqlstate=getattr(exc, "sqlstate", None))  # fmt: skip

    # --- chaining ----------------------------------------------------------------------

    async def link(self) -> int:
        """Chain whatever is pending in the region now (any writer's); return how many events were linked.

        Only events staged by a node of the previous release wait there (this release appends and
        chains in one call); ``start``, the maintenance timer and ``checkpoint`` link them.
        """
        linked = 0
        async with asyncio.timeout(self._opt.write_timeout_s), self._pool.acquire() as con:
            if not await audit_store.has_pending(con, self._region):  # the usual case: no lock taken
                return 0
            while True:
                passed = await audit_store.link_pending(con, self._region, LINK_MAX_EVENTS)
                linked += passed.linked
                if passed.linked < LINK_MAX_EVENTS:
                    return linked

    async def _locked_head(self, con: Conn) -> audit_store.ChainHead:
        head = await audit_store.lock_head(con, self._region)
        if head is None:  # never started, or the row was removed: recreate it so the failure is visible
            await audit_store.ensure_head(con, self._region, self._genesis)
            head = await audit_store.lock_head(con, self._region)
            assert head is not None
        return head

    # --- checkpoints and retention -----------------------------------------------------

    def _digest(self, head: audit_store.ChainHead) -> chain.Digest:
        assert self._signer is not None
        return chain.Digest(
            region=self._region, first_seq=head.digest_seq + 1, last_seq=head.seq, last_hash=head.hash,
            prev_digest=head.digest_hash, digest_time=self._clock.now(),
        ).signed(self._signer)  # fmt: skip

    async def _rolled_back(self, con: Conn, head: audit_store.ChainHead) -> bool:
        """True if the database no longer holds the last digest this process anchored: it was rolled
        back (or restored from an older backup). Signing on top would make the shortened trail look
        whole, so no digest is signed until an operator has looked (docs/AUDIT.md, "Anchors")."""
        last = self._last_anchor
        if last is None or last.position <= head.pruned_seq:  # nothing anchored yet, or removed by retention
            return False
        stored = await audit_store.digest_at(con, self._region, last.position)
        if stored is not None and chain.digest_hash(chain.digest_of(stored)) == last.digest_hash:
            return False
        AUDIT_ROLLBACK.set(1)
        log.error("audit.rollback_detected", region=self._region, anchored_position=last.position,
                  anchored_time=last.digest_time, head_seq=head.seq, head_digest_seq=head.digest_seq,
                  found="another digest" if stored is not None else "no digest")  # fmt: skip
        return True

    async def checkpoint(self, *, force: bool = False) -> bool:
        """Sign a digest now if events are undigested and one is due (or ``force``); True if written.

        The digest is then anchored outside the database: once it is durable, it is appended to the
        node's anchor file (the other regions get it from the replication senders).
        """
        if self._signer is None:
            return False
        await self.link()  # a digest covers the chain: chain what is durable first
        async with asyncio.timeout(self._opt.write_timeout_s), transaction(self._pool) as con:
            # The head lock must not be held across a WAL flush (every writer queues behind it). A
            # digest lost in a crash is lost with every event after it and is simply made again.
            await audit_store.defer_flush(con)
            head = await self._locked_head(con)
            if head.seq <= head.digest_seq:
                return False
            now = self._clock.now()
            age = (now - head.digest_time).total_seconds() if head.digest_time is not None else None
            if not force and age is not None and age < self._opt.checkpoint_interval_s:
                return False
            if await self._rolled_back(con, head):
                return False
            d = self._digest(head)
            row = audit_store.DigestRow(d.region, d.first_seq, d.last_seq, d.digest_time, d.last_hash, d.prev_digest,
                                        d.public_key, d.signature, d.message())  # fmt: skip
            await audit_store.add_digest(con, row, chain.digest_hash(d))
        await self._anchor(d.anchor())
        return True

    async def _anchor(self, anchor: Anchor) -> None:
        self._last_anchor = anchor
        if self._anchors is None:
            return
        async with asyncio.timeout(self._opt.write_timeout_s), self._pool.acquire() as con:
            await audit_store.flush_wal(con)  # the anchor must never name a digest a crash could lose
        try:
            await asyncio.to_thread(self._anchors.append, anchor)
        except OSError as exc:
            log.error("audit.anchor_write_failed", region=self._region, position=anchor.position,
                      error=type(exc).__name__)  # fmt: skip

    async def apply_retention(self) -> int:
        """Delete events older than the retention period that a signed digest covers; return how many."""
        if self._opt.retention_days <= 0:
            return 0
        cutoff = self._clock.now() - dt.timedelta(days=self._opt.retention_days)
        deleted = 0
        while True:
            async with asyncio.timeout(self._opt.write_timeout_s), transaction(self._pool) as con:
                head = await self._locked_head(con)
                due = await audit_store.prune_candidate(
                    con, self._region, cutoff, head.pruned_seq, RETENTION_CHUNK_EVENTS
                )
                if due is None:
                    return deleted
                seq, anchor, through = due
                if not await self._retention_may_take(con, seq, cutoff):
                    return deleted
                deleted += await audit_store.prune(con, self._region, seq, anchor, through)
                log.info("audit.retention", region=self._region, through_seq=seq, deleted=deleted)

    async def _retention_may_take(self, con: Conn, seq: int, cutoff: dt.datetime) -> bool:
        """Whether the hashed record of the last event a retention chunk would delete is old enough.

        Retention selects on the ``event_time`` column, which the chain does not hash: a back-dated
        column must not make it delete recent events (``verify`` reports such a column too).
        """
        row = await audit_store.event_at(con, self._region, seq)
        if (row is not None and chain.event_hash(row.prev_hash, row.record) == row.hash
                and not column_mismatches(row) and row.event_time < cutoff):  # fmt: skip
            return True
        log.error("audit.retention_refused", region=self._region, seq=seq,
                  reason="the event's record does not match its columns: run regiond audit verify")  # fmt: skip
        return False

    async def _tick_loop(self) -> None:
        period_s = min(max(self._opt.checkpoint_interval_s / 4, 0.05), 60.0, LINK_EVERY_S)
        since_retention_s = RETENTION_EVERY_S  # run retention once soon after start
        while True:
            await asyncio.sleep(period_s)
            since_retention_s += period_s
            try:
                await self.link()
                await self.checkpoint()
                if since_retention_s >= RETENTION_EVERY_S:
                    since_retention_s = 0.0
                    await self.apply_retention()
            except Exception as exc:
                log.warning("audit.maintenance_failed", error=type(exc).__name__,
                            sqlstate=getattr(exc, "sqlstate", None))  # fmt: skip
