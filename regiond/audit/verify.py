"""``regiond audit verify``: prove the trail is what the writers wrote, or say exactly where not.

Reads one consistent snapshot (REPEATABLE READ) of a region's trail and reports every finding;
``Report.ok`` is true only if there are none. ``verify_region`` runs one check after the other on
that snapshot, each adding its findings to the report:

* ``_check_legacy``: the v1 trail (``audit_events``, one chain per region, closed by the upgrade to
  v2 and verified with the v1 rules below, its digests and anchors);
* ``verify_segments.check_writers``: every writer's chain of v2 segments (that module lists what
  each finding means); it returns the heads of the writer chains as stored, which a digest check
  over them takes.

How each tampering of the legacy chain shows (chain.py explains why the seq is not hashed):

* **changed** - an event whose stored bytes no longer hash to its stored hash.
* **deleted** - a hole in the seqs where the next event's link points to no stored event, or
  a chain head further than the last stored event.
* **inserted** - a well-formed event that the chain skips: the event after it links to the
  event before it; or events stored past the chain head.
* **reordered** - an event whose link points to an event stored *after* it.
* **broken** - a link that points to no stored event without a hole: an event was changed and
  re-hashed (its successor still holds the old hash), or deleted and the seqs closed up.
* **digest-forged** - a digest whose Ed25519 signature does not verify with the region's
  identity key (``--state-dir``/``--public-key``; without one, with the key recorded in the
  digest, which only catches edits made without re-signing).
* **digest-mismatch** - a validly signed digest whose ``lastEventHash`` is not the hash of the
  stored event at its ``lastSeq``: the events before it were rewritten after it was signed.
* **digest-missing** - the digests' own chain has a hole or a stray member.
* **column-changed** - an event whose query columns (``event_time``, ``event_name``,
  ``principal_arn``, ``key_arns``, ``error_code``, ``event_source``, ``read_only``, ``event_id``,
  ``region``) disagree with its hashed record: ``audit query``, ``--from/--to`` and retention
  select on them, so a changed column could hide an event or make retention take it early.
* **rolled-back** - a digest anchored outside the database (the node's anchor file, another
  region's copy) that the database no longer holds, or holds a different digest in its place:
  the newest events and digests were removed (and perhaps written and signed again since).
* **anchor-invalid** - an anchor that is not a digest of this region signed by its key, or an
  unreadable line of an anchor file.
* **unchained** - events stored durably but not linked into the chain (``audit_pending``, where
  nodes of the 0007 release stage them) for longer than ``UNCHAINED_AFTER_S``: every node links
  them on start and every few seconds, so this means no chainer is running or someone keeps it
  from linking (a lock held, a trigger that rejects the link). Younger pending events are
  normal during a rolling upgrade and only noted.

Reordering is detected within ``WINDOW_EVENTS`` positions (a wider move reads as broken
links), which keeps memory bounded however long the trail is.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from regiond.audit import chain, prune, verify_segments
from regiond.audit.digest_verify import check_digests
from regiond.audit.verify_segments import WriterHead
from regiond.clock import utc_second_text
from regiond.crypto import sign
from regiond.domain.audit_anchor import DIGEST_LABEL_V1, Anchor
from regiond.store import audit as audit_store
from regiond.store.pool import Conn, Pool, transaction

__all__ = ["AnchorSet", "Finding", "Report", "column_mismatches", "verify_region", "walk_events"]

WINDOW_EVENTS = 1024
UNCHAINED_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    region: str
    seq: int | None
    detail: str
    event_id: str | None = None
    writer: str | None = None  # a v2 writer's id: ``seq`` is then a segment of its chain

    def line(self) -> str:
        if self.writer is not None:
            where = f"writer {self.writer}" + (f" segment {self.seq}" if self.seq is not None else "")
            return f"{self.region} {where}: {self.kind}: {self.detail}"
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        ident = f" (eventID {self.event_id})" if self.event_id else ""
        return f"{self.region} {where}: {self.kind}: {self.detail}{ident}"


@dataclass(slots=True)
class Report:
    region: str
    first_seq: int = 0
    last_seq: int = 0
    events_checked: int = 0
    digests_checked: int = 0
    anchors_checked: int = 0
    writers_checked: int = 0
    segments_checked: int = 0
    heads: list[WriterHead] = field(default_factory=list)  # every v2 writer's chain head as stored
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, seq: int | None, detail: str, event_id: str | None = None) -> None:
        self.findings.append(Finding(kind, self.region, seq, detail, event_id))

    def add_writer(self, kind: str, writer: uuid.UUID | None, seq: int | None, detail: str) -> None:
        self.findings.append(Finding(kind, self.region, seq, detail, writer=str(writer) if writer else None))


@dataclass(frozen=True, slots=True)
class AnchorSet:
    """Anchors from one place outside the database: ``name`` says where (a file, a peer region)."""

    name: str
    anchors: Sequence[Anchor]
    bad_lines: Sequence[tuple[int, str]] = ()


def column_mismatches(row: audit_store.EventRow) -> list[str]:
    """The query columns of ``row`` that disagree with its record (the hashed bytes), by name.

    ``event_time`` keeps the microseconds the record's ``eventTime`` (CloudTrail: to the second)
    does not, so it must lie within that second.
    """
    try:
        event: Any = orjson.loads(row.record)
    except orjson.JSONDecodeError:
        return ["record"]
    if not isinstance(event, dict):
        return ["record"]
    identity = event.get("userIdentity")
    resources = event.get("resources") or []
    expected: dict[str, object] = {
        "region": event.get("awsRegion"),
        "event_id": event.get("eventID"),
        "event_time": event.get("eventTime"),
        "event_source": event.get("eventSource"),
        "event_name": event.get("eventName"),
        "principal_arn": identity.get("arn") if isinstance(identity, dict) else None,
        "key_arns": [r.get("ARN") for r in resources if isinstance(r, dict)] if isinstance(resources, list) else None,
        "error_code": event.get("errorCode"),
        "read_only": event.get("readOnly"),
    }
    stored: dict[str, object] = {
        "region": row.region,
        "event_id": str(row.event_id),
        "event_time": utc_second_text(row.event_time),
        "event_source": row.event_source,
        "event_name": row.event_name,
        "principal_arn": row.principal_arn,
        "key_arns": list(row.key_arns),
        "error_code": row.error_code,
        "read_only": row.read_only,
    }
    return [name for name, value in expected.items() if stored[name] != value]


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seqs {first}..{last}"


class _ChainWalk:
    """Checks events one by one in seq order, with a window of neighbours on both sides."""

    def __init__(
        self, report: Report, anchor: bytes | None, first_seq: int, boundaries: set[int], *, columns: bool = False
    ) -> None:
        self.r = report
        self.columns = columns
        self.expected_prev = anchor
        self.expected_seq = first_seq
        self.behind: OrderedDict[bytes, int] = OrderedDict()  # hash -> seq, last WINDOW_EVENTS evaluated
        self.moved: set[int] = set()
        self.boundaries = boundaries
        self.boundary_hashes: dict[int, bytes | None] = {}  # digest lastSeq -> stored hash (None: not self-consistent)
        self.last: audit_store.EventRow | None = None

    def check(self, row: audit_store.EventRow, ahead: dict[bytes, audit_store.EventRow]) -> None:
        r = self.r
        r.events_checked += 1
        event_id = str(row.event_id)
        self_ok = chain.event_hash(row.prev_hash, row.record) == row.hash
        if not self_ok:
            r.add("changed", row.seq, "its content no longer matches its hash", event_id)
        elif self.columns:
            for column in column_mismatches(row):
                r.add("column-changed", row.seq, f"its {column} column disagrees with its hashed record "
                      "(queries, time ranges and retention select on it)", event_id)  # fmt: skip
        if row.seq in self.boundaries:
            self.boundary_hashes[row.seq] = row.hash if self_ok else None
        gap = row.seq > self.expected_seq
        if self.expected_prev is not None and row.prev_hash != self.expected_prev:
            later = ahead.get(row.prev_hash)
            earlier = self.behind.get(row.prev_hash)
            if later is not None and later.seq != row.seq:
                r.add("reordered", row.seq, f"it was written after the event stored at seq {later.seq}", event_id)
                self.moved.update((row.seq, later.seq))
            elif earlier is not None:
                between = [s for s in self.behind.values() if s > earlier]
                if not (self.moved.intersection(between) or row.seq in self.moved):
                    for s in between:
                        r.add("inserted", s, f"not part of the chain: seq {row.seq} links past it to seq {earlier}")
            elif gap:
                missing = _span(self.expected_seq, row.seq - 1)
                r.add("deleted", self.expected_seq, f"{missing} missing: seq {row.seq} links to an event not stored")
            elif row.seq not in self.moved:
                r.add("broken", row.seq, "it links to no stored event: the event before it was changed and "
                      "re-hashed, or an event was removed and the seqs closed up", event_id)  # fmt: skip
        elif gap:
            r.add("renumbered", self.expected_seq,
                  f"the chain is intact but {_span(self.expected_seq, row.seq - 1)} are not used")  # fmt: skip
        self.expected_prev = row.hash
        self.expected_seq = row.seq + 1
        self.behind[row.hash] = row.seq
        if len(self.behind) > WINDOW_EVENTS:
            self.behind.popitem(last=False)
        self.last = row


class _Window:
    """Feeds ``_ChainWalk`` with up to ``WINDOW_EVENTS`` rows of lookahead (for reorder detection)."""

    def __init__(self, walk: _ChainWalk) -> None:
        self.walk = walk
        self.rows: deque[audit_store.EventRow] = deque()
        self.ahead: dict[bytes, audit_store.EventRow] = {}

    def _step(self) -> None:
        row = self.rows.popleft()
        if self.ahead.get(row.hash) is row:
            del self.ahead[row.hash]
        self.walk.check(row, self.ahead)

    def feed(self, row: audit_store.EventRow) -> None:
        self.rows.append(row)
        self.ahead[row.hash] = row
        if len(self.rows) > WINDOW_EVENTS:
            self._step()

    def finish(self) -> _ChainWalk:
        while self.rows:
            self._step()
        return self.walk


def walk_events(rows: Iterable[audit_store.EventRow], region: str, *, anchor: bytes | None, first_seq: int) -> Report:
    """Check a run of events (pure: for tests and tools that already hold the rows)."""
    report = Report(region)
    window = _Window(_ChainWalk(report, anchor, first_seq, set()))
    for row in rows:
        window.feed(row)
    window.finish()
    return report


def _check_tail(report: Report, head: audit_store.ChainHead, walk: _ChainWalk, first_expected: int) -> None:
    last = walk.last
    if last is None:
        if head.seq >= first_expected:
            report.add("deleted", first_expected, f"{_span(first_expected, head.seq)} missing: no events are stored")
        return
    if last.hash == head.hash:
        if last.seq != head.seq:
            report.add("renumbered", last.seq, f"the chain head is seq {head.seq} but its event is stored here")
        return
    head_at = walk.behind.get(head.hash)
    if head_at is not None:
        for s in [s for s in walk.behind.values() if s > head_at]:
            report.add("inserted", s, f"stored after the chain head (seq {head_at})")
    elif head.seq > last.seq:
        report.add("deleted", last.seq + 1, f"{_span(last.seq + 1, head.seq)} missing from the end of the chain")
    else:
        report.add("broken", last.seq, "the chain head's hash matches no stored event: the last events were "
                   "changed and re-hashed, or removed")  # fmt: skip


def _check_digests(
    report: Report, digests: Sequence[audit_store.DigestRow], before: audit_store.DigestRow | None,
    walk: _ChainWalk, trusted: Sequence[bytes], head: audit_store.ChainHead, full: bool, first_seq: int,
    last_seq: int,
) -> None:  # fmt: skip
    keys = {d.public_key for d in digests}
    if not trusted and len(keys) > 1:
        report.notes.append("digests carry several signer keys: give --state-dir or --public-key to know which is "
                            "the region's")  # fmt: skip
    prev: chain.Digest | None = None
    if before is not None:
        prev = chain.Digest(before.region, before.first_seq, before.last_seq, before.last_hash, before.prev_digest,
                            before.digest_time, before.public_key, before.signature)  # fmt: skip
    for row in digests:
        report.digests_checked += 1
        d = chain.Digest(row.region, row.first_seq, row.last_seq, row.last_hash, row.prev_digest, row.digest_time,
                         row.public_key, row.signature)  # fmt: skip
        if trusted:
            signed = any(d.signature_valid(k) for k in trusted)
            if not signed:
                report.add("digest-forged", d.last_seq, "its signature does not verify with the region identity key")
        else:
            signed = d.signature_valid()
            if not signed:
                report.add("digest-forged", d.last_seq, "its signature does not verify")
        if prev is not None:
            if d.prev_digest != chain.digest_hash(prev) or d.first_seq != prev.last_seq + 1:
                detail = f"it does not follow the digest at seq {prev.last_seq}: a digest was removed or inserted"
                report.add("digest-missing", d.last_seq, detail)
        elif full and head.pruned_seq == 0 and (d.prev_digest is not None or d.first_seq != 1):
            report.add("digest-missing", d.last_seq, "the first digest does not start the digest chain")
        if signed and first_seq <= d.last_seq <= last_seq:
            stored = walk.boundary_hashes.get(d.last_seq, b"")
            if stored is None:
                pass  # that event is already reported as changed
            elif stored == b"":
                report.add("digest-mismatch", d.last_seq, "the event this digest signs is not stored")
            elif stored != d.last_hash:
                report.add("digest-mismatch", d.last_seq, "the event stored here is not the one signed: events up "
                           "to here were changed, moved or re-hashed after signing")  # fmt: skip
        prev = d
    if full and prev is not None and head.digest_hash is not None and head.digest_hash != chain.digest_hash(prev):
        report.add("digest-missing", head.digest_seq, "the latest digest recorded by the chain head is not stored")
    elif full and prev is None and head.digest_hash is not None:
        report.add("digest-missing", head.digest_seq, "the chain head records a digest but none is stored")


def _check_anchors(
    report: Report, sets: Sequence[AnchorSet], stored: Sequence[audit_store.DigestRow], trusted: Sequence[bytes],
    head: audit_store.ChainHead,
) -> None:  # fmt: skip
    """Every anchor must name a digest the database holds, byte for byte (module docstring: rolled-back)."""
    if not sets:
        report.notes.append("no anchor held outside the database was checked, so a rollback of the newest events "
                            "and digests cannot be seen (give --state-dir, --anchor FILE or --cluster)")  # fmt: skip
        return
    by_position = {d.last_seq: d for d in stored}
    newest_stored = max(by_position, default=0)
    keys = list(trusted) or sorted({bytes(d.public_key) for d in stored})
    for anchor_set in sets:
        for number, why in anchor_set.bad_lines:
            report.add("anchor-invalid", None, f"{anchor_set.name} line {number}: {why}")
        missing: list[Anchor] = []
        changed: list[Anchor] = []
        reached = 0
        for a in anchor_set.anchors:
            if not a.message.startswith(DIGEST_LABEL_V1):
                continue  # a v2 digest's anchor: regiond.audit.digest_verify checks it
            if a.region != report.region:
                report.add("anchor-invalid", a.position, f"{anchor_set.name} holds an anchor of region {a.region}")
                continue
            if not any(sign.verify(k, a.message, a.signature) for k in keys):
                report.add("anchor-invalid", a.position, f"{anchor_set.name}: its signature does not verify with "
                           "the region identity key")  # fmt: skip
                continue
            report.anchors_checked += 1
            if a.position <= head.pruned_seq:
                continue  # its digest went with the events retention removed
            row = by_position.get(a.position)
            if row is None:
                missing.append(a)
            elif chain.digest_hash(chain.digest_of(row)) != a.digest_hash:
                changed.append(a)
            else:
                reached = max(reached, a.position)
        _report_rollback(report, anchor_set.name, missing, changed, newest_stored)
        if reached and not (missing or changed):
            report.notes.append(f"the database holds every digest anchored in {anchor_set.name} "
                                f"(newest: seq {reached})")  # fmt: skip


def _report_rollback(report: Report, name: str, missing: list[Anchor], changed: list[Anchor], newest: int) -> None:
    if changed:
        first = min(changed, key=lambda a: a.position)
        more = f" ({len(changed)} anchored digests in all)" if len(changed) > 1 else ""
        detail = (f"the database holds another digest here than the one signed at {first.digest_time} and "
                  f"anchored in {name}{more}: the trail was rolled back and signed again")  # fmt: skip
        report.add("rolled-back", first.position, detail)
    if missing:
        first, last = min(missing, key=lambda a: a.position), max(missing, key=lambda a: a.position)
        if first.position > newest:
            detail = (f"the digest signed at {first.digest_time} and anchored in {name} is not in the database, "
                      f"whose newest digest ends at seq {newest}: the newest events and digests were removed "
                      f"(anchored up to seq {last.position})")  # fmt: skip
        else:
            detail = (f"the digest signed at {first.digest_time} and anchored in {name} is not in the database "
                      f"({len(missing)} anchored digests missing, up to seq {last.position}): the trail was rolled "
                      "back and written again, or digests were deleted")  # fmt: skip
        report.add("rolled-back", first.position, detail)


def _check_pending(report: Report, pending: audit_store.PendingStats, after_s: float) -> None:
    if pending.stale:
        oldest = f"{pending.oldest:%Y-%m-%dT%H:%M:%SZ}" if pending.oldest is not None else "?"
        report.add("unchained", None, f"{pending.stale} events stored more than {after_s:g} s ago (oldest "
                   f"{oldest}) are not linked into the chain: no chainer is running, or it cannot link")  # fmt: skip
    if pending.count > pending.stale:
        report.notes.append(f"{pending.count - pending.stale} events are stored but not yet chained "
                            "(written in the last seconds)")  # fmt: skip


async def verify_region(
    pool: Pool, region: str, *, trusted_keys: Sequence[bytes] = (),
    since: dt.datetime | None = None, until: dt.datetime | None = None,
    unchained_after_s: float = UNCHAINED_AFTER_S, anchors: Sequence[AnchorSet] = (),
) -> Report:  # fmt: skip
    """Verify ``region``'s trail (all of it, or the events with ``since <= eventTime < until``).

    The checks run in order on one snapshot (module docstring). ``anchors`` (whatever the range)
    must all be held by the database: that is what detects a rollback of the legacy chain.
    """
    trusted = [bytes(k) for k in trusted_keys if len(k) == sign.PUBLIC_KEY_BYTES]
    report = Report(region)
    async with transaction(pool, isolation="repeatable_read") as con:
        await _check_legacy(con, report, region, trusted, since, until, unchained_after_s, anchors)
        pruned = await prune.check_prunes(con, report, trusted)  # v2 retention: where each kept chain starts
        report.heads = await verify_segments.check_writers(
            con, report, region, await verify_segments.trail_regions(con), since, until, pruned
        )
        report.writers_checked = len(report.heads)
        report.segments_checked = sum(h.segments_checked for h in report.heads)
        await check_digests(con, report, trusted, anchors=anchors, pruned=prune.pruned_through(pruned))
    if not report.events_checked and not report.segments_checked and not report.findings:
        report.notes.append("no audit events for this region" + (" in the time range" if since or until else ""))
    return report


async def _check_legacy(
    con: Conn, report: Report, region: str, trusted: Sequence[bytes], since: dt.datetime | None,
    until: dt.datetime | None, unchained_after_s: float, anchors: Sequence[AnchorSet],
) -> None:  # fmt: skip
    """The v1 trail (``audit_events``): events not yet chained whatever the range (they are the
    newest, and a chainer that stopped is a finding however old the range asked for is)."""
    full = since is None and until is None
    head = await audit_store.get_head(con, region)
    if head is None:
        return
    _check_pending(report, await audit_store.pending_stats(con, region, unchained_after_s), unchained_after_s)
    if full:
        bounds = await audit_store.seq_bounds(con, region)
        first = head.pruned_seq + 1
        last = max(head.seq, bounds[1] if bounds else 0)
        anchor: bytes | None = head.pruned_hash if head.pruned_seq > 0 else chain.genesis_hash(region)
    else:
        bounds = await audit_store.seq_range_for_time(con, region, since, until)
        if bounds is None:
            return
        first, last = bounds
        if first - 1 == head.pruned_seq:
            anchor = head.pruned_hash if head.pruned_seq > 0 else chain.genesis_hash(region)
        else:
            before_row = await audit_store.event_at(con, region, first - 1)
            anchor = before_row.hash if before_row is not None else None
    if head.pruned_seq > 0:
        report.notes.append(f"events through seq {head.pruned_seq} (event time up to "
                            f"{head.pruned_through:%Y-%m-%dT%H:%M:%SZ}) were removed by retention")  # fmt: skip
    report.first_seq, report.last_seq = first, last
    digest_rows = await audit_store.digests(con, region, None if full else first, None if full else last)
    boundaries = {d.last_seq for d in digest_rows}
    window = _Window(_ChainWalk(report, anchor, first, boundaries, columns=True))
    async for row in audit_store.iter_events(con, region, first, last):
        window.feed(row)
    walk = window.finish()
    if full:
        _check_tail(report, head, walk, first)
    before = None if full else await audit_store.digest_before(con, region, first)
    if full and head.pruned_seq > 0 and digest_rows:
        before = None  # the digest before the first kept one was pruned with its events
    _check_digests(report, digest_rows, before, walk, trusted, head, full, first, last)
    all_digests = digest_rows if full else await audit_store.digests(con, region)
    _check_anchors(report, anchors, all_digests, trusted, head)
    undigested = max(0, (walk.last.seq if walk.last else 0) - head.digest_seq)
    if undigested:
        report.notes.append(f"{undigested} newest events are not yet covered by a signed digest "
                            "(protected by the hash chain only)")  # fmt: skip
