"""``regiond audit query``: find events by name, key, principal, error and time.

Two stores are read: the v2 segments (``audit_segments``, pruned on their ``first_time``/``last_time``
columns, which ``verify`` checks against the hashed records; the filters then apply to the decoded
records themselves) and the closed legacy v1 chain (``audit_events``, filtered on its query columns).
The results are merged oldest first.

JSON output is one event per line, exactly the bytes that were hashed into the chain (so a
line can be re-checked against ``verify``); the table is for people.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from regiond.audit import segment
from regiond.audit.verify_segments import record_second
from regiond.store import audit as audit_store
from regiond.store import audit_segments as segment_store
from regiond.store.audit import EventFilter
from regiond.store.pool import Pool, transaction

__all__ = ["EventFilter", "Hit", "find", "parse_time", "render_json", "render_table"]

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """``1h``/``30m``/``7d`` (that long before ``now``) or an ISO 8601 time (UTC if no offset given)."""
    m = _RELATIVE.match(text)
    if m:
        return now - dt.timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use e.g. 1h, 30m, 7d or 2024-05-01T12:00:00Z)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Hit:
    """One event found: its time (to the second, as recorded) and its record (the hashed bytes)."""

    time: dt.datetime
    record: bytes


def _key_matches(arns: list[str], key: str) -> bool:
    return any(a == key or a.endswith(":key/" + key) or a.endswith(":" + key) for a in arns)


def matches(event: dict[str, Any], f: EventFilter) -> bool:
    """Whether a decoded record passes every filter of ``f`` but the time range (checked by the caller)."""
    identity = event.get("userIdentity")
    resources = event.get("resources") or []
    arns = [str(r["ARN"]) for r in resources if isinstance(r, dict) and isinstance(r.get("ARN"), str)]
    return (
        (f.region is None or event.get("awsRegion") == f.region)
        and (f.event_name is None or event.get("eventName") == f.event_name)
        and (f.key is None or _key_matches(arns, f.key))
        and (f.principal_arn is None or (isinstance(identity, dict) and identity.get("arn") == f.principal_arn))
        and (f.error_code is None or event.get("errorCode") == f.error_code)
    )


def _in_range(t: dt.datetime, f: EventFilter) -> bool:
    return (f.since is None or t >= f.since) and (f.until is None or t < f.until)


async def find(pool: Pool, f: EventFilter) -> list[Hit]:
    """The first ``f.limit`` events matching ``f``, oldest first, from the segments and the legacy chain.

    Segments come by ``first_time``: once ``limit`` hits are held and the next segment starts after
    the newest of them, no later segment can hold an older hit, so the walk stops there.
    """
    hits: list[Hit] = []
    async with transaction(pool, isolation="repeatable_read") as con:
        for row in await audit_store.find_events(con, f):
            hits.append(Hit(row.event_time.replace(microsecond=0), bytes(row.record)))
        async for seg in segment_store.iter_segments_by_time(con, f.since, f.until):
            if len(hits) >= f.limit:
                hits.sort(key=lambda h: h.time)
                del hits[f.limit :]
                if seg.first_time > hits[-1].time:
                    break
            try:
                records = segment.decode(seg.writer_id, seg.seq, seg.record_count, seg.body)
            except segment.SegmentFormatError:
                continue  # ``audit verify`` names it; a query shows what can be read
            for record in records:
                event = orjson.loads(record)
                t = record_second(event["eventTime"])
                if _in_range(t, f) and matches(event, f):
                    hits.append(Hit(t, record))
    hits.sort(key=lambda h: h.time)
    return hits[: f.limit]


def render_json(hits: Iterable[Hit]) -> Iterator[str]:
    for hit in hits:
        yield hit.record.decode()


def _short_key(arns: list[str]) -> str:
    if not arns:
        return "-"
    tail = arns[0].rsplit(":", 1)[-1]
    return tail.removeprefix("key/") + (f" (+{len(arns) - 1})" if len(arns) > 1 else "")


def render_table(hits: Iterable[Hit]) -> str:
    header = ("eventTime", "eventName", "principal", "key", "errorCode", "sourceIP", "requestID")
    lines: list[tuple[str, ...]] = [header]
    for hit in hits:
        event: dict[str, Any] = orjson.loads(hit.record)
        identity = event.get("userIdentity")
        principal = identity.get("arn") if isinstance(identity, dict) else None
        arns = [str(r.get("ARN")) for r in event.get("resources") or [] if isinstance(r, dict)]
        lines.append((
            str(event.get("eventTime", "")), str(event.get("eventName", "")), str(principal or "-"), _short_key(arns),
            str(event.get("errorCode") or "-"), str(event.get("sourceIPAddress", "")), str(event.get("requestID", "")),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)
