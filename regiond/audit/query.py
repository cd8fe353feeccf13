"""``regiond audit query``: find events by name, key, principal, error and time.

JSON output is one event per line, exactly the bytes that were hashed into the chain (so a
line can be re-checked against ``verify``); the table is for people.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from regiond.store import audit as audit_store
from regiond.store.audit import EventFilter, EventRow
from regiond.store.pool import Pool, connection

__all__ = ["EventFilter", "find", "parse_time", "render_json", "render_table"]

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


async def find(pool: Pool, f: EventFilter) -> list[EventRow]:
    async with connection(pool) as con:
        return await audit_store.find_events(con, f)


def render_json(rows: Iterable[EventRow]) -> Iterator[str]:
    for row in rows:
        yield bytes(row.record).decode()


def _short_key(arns: list[str]) -> str:
    if not arns:
        return "-"
    tail = arns[0].rsplit(":", 1)[-1]
    return tail.removeprefix("key/") + (f" (+{len(arns) - 1})" if len(arns) > 1 else "")


def render_table(rows: Iterable[EventRow]) -> str:
    header = ("eventTime", "eventName", "principal", "key", "errorCode", "sourceIP", "requestID")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        event: dict[str, Any] = orjson.loads(row.record)
        lines.append((
            event.get("eventTime", ""), row.event_name, row.principal_arn or "-", _short_key(row.key_arns),
            row.error_code or "-", str(event.get("sourceIPAddress", "")), str(event.get("requestID", "")),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)
