"""Audit trail v2 segments built as a writer builds them, for tests of verify, digests and export.

A ``Chain`` is one writer's hash chain (``regiond.audit.segment``): ``next(records)`` makes its next
segment, linked to the one before; ``write`` registers the writer and stores segments through the
store's write half (``regiond.store.audit_segments``), as the writer does. Records are canonical
event JSON (``record``), so the segment decoder and the CloudTrail export read them.

``edited`` is a body changed as a forger with database access would change it: inflated, edited and
compressed again (bodies are stored compressed), so the row still decodes and only the chain shows it.

``trail_records`` reads back everything a region's database holds durably: the
closed legacy v1 chain, then every writer's segments.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

from regiond.audit import segment
from regiond.store import audit_segments
from regiond.store.pool import Conn

_counter = itertools.count(1)

# Every durable event: the closed legacy v1 chain in chain order, then every writer's segments
# (writers in the order they started, each chain in seq order).
LEGACY_RECORDS = "SELECT record FROM audit_events ORDER BY seq"
SEGMENTS = (
    "SELECT s.writer_id, s.seq, s.record_count, s.body FROM audit_segments s"
    " LEFT JOIN audit_writers w USING (writer_id) ORDER BY w.started_at, s.writer_id, s.seq"
)


def edited(body: bytes, old: bytes, new: bytes) -> bytes:
    """``body`` with the first ``old`` of its records replaced by ``new``, stored as ``encode`` stores it."""
    lines = segment.lines(uuid.UUID(int=0), 1, body)
    assert old in lines, old
    return segment.encode(lines.replace(old, new, 1).split(b"\n"))


async def trail_records(database_url: str) -> list[bytes]:
    """Each durable event's stored JSON bytes, in trail order."""
    con = await asyncpg.connect(database_url)
    try:
        legacy = [bytes(r["record"]) for r in await con.fetch(LEGACY_RECORDS)]
        segments = await con.fetch(SEGMENTS)
    finally:
        await con.close()
    return legacy + [
        record
        for r in segments
        for record in segment.decode(r["writer_id"], r["seq"], r["record_count"], bytes(r["body"]))
    ]


def record(region: str, name: str, when: dt.datetime, **extra: object) -> bytes:
    """One event record, shaped like the writer's (the members verify, query and export read)."""
    n = next(_counter)
    body: dict[str, object] = {
        "eventVersion": "1.08", "eventTime": when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "kms.amazonaws.com", "eventName": name, "awsRegion": region,
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/test", "accountId": "111122223333"},
        "requestID": f"req-{n}", "eventID": str(uuid.uuid4()), "readOnly": False, "eventType": "AwsApiCall",
        "recipientAccountId": "111122223333", **extra,
    }  # fmt: skip
    return orjson.dumps(body)


@dataclass
class Chain:
    """One writer's chain; ``segments`` holds what ``next`` made, in order."""

    region: str
    writer_id: uuid.UUID = field(default_factory=uuid.uuid4)
    segments: list[audit_segments.NewSegment] = field(default_factory=list)

    @property
    def genesis(self) -> bytes:
        return segment.writer_genesis(self.region, self.writer_id)

    @property
    def head(self) -> bytes:
        return self.segments[-1].hash if self.segments else self.genesis

    def next(self, records: Sequence[bytes], when: dt.datetime) -> audit_segments.NewSegment:
        """The next segment; its time bounds are its records' eventTimes, as the writer sets them (``when``,
        to the second, for records without a readable one)."""
        body = segment.encode(records)
        seq = len(self.segments) + 1
        prev = self.head
        link = segment.segment_hash(prev, self.writer_id, seq, len(records), body)
        times = [_event_time(r) or when.replace(microsecond=0) for r in records]
        s = audit_segments.NewSegment(self.writer_id, seq, min(times), max(times), len(records), prev, link, body)
        self.segments.append(s)
        return s

    async def register(self, con: Conn, node: str = "test-node", pid: int = 1) -> None:
        await audit_segments.register_writer(con, self.writer_id, node, pid, self.genesis)

    async def write(
        self, con: Conn, segments: int, *, when: dt.datetime, events: int = 2, step: dt.timedelta = dt.timedelta(0),
        name: str = "Encrypt",
    ) -> list[audit_segments.NewSegment]:  # fmt: skip
        """Store ``segments`` more segments of ``events`` records each (event times ``when``, ``when + step`` ...)."""
        made = []
        for i in range(segments):
            at = when + i * step
            s = self.next([record(self.region, name, at) for _ in range(events)], at)
            await audit_segments.insert_segment(con, s)
            made.append(s)
        return made


def _event_time(record: bytes) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(orjson.loads(record)["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (ValueError, KeyError, TypeError):
        return None


def rehash(segments: Sequence[audit_segments.NewSegment]) -> list[audit_segments.NewSegment]:
    """The chain relinked from the first segment's ``prev_hash`` on (an attacker who knows the format)."""
    out: list[audit_segments.NewSegment] = []
    prev = segments[0].prev_hash if segments else b""
    for s in segments:
        h = segment.segment_hash(prev, s.writer_id, s.seq, s.record_count, s.body)
        out.append(audit_segments.NewSegment(s.writer_id, s.seq, s.first_time, s.last_time, s.record_count, prev, h,
                                             s.body))  # fmt: skip
        prev = h
    return out
