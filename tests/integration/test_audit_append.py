"""``append_batch``'s wire forms store exactly the rows the procedure's plain arrays store (issue 8)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from regiond.audit import chain
from regiond.audit.verify import verify_region
from regiond.store import audit as audit_store
from regiond.store.audit import NewEvent
from regiond.store.pool import Pool, create_pool

KEY_A = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_B = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
USER = "arn:aws:iam::111122223333:user/alice"


def _event(n: int, **fields: object) -> NewEvent:
    values: dict[str, object] = {
        "event_id": uuid.uuid4(),
        "event_time": dt.datetime(2026, 11, 29, 3, 0, n, 123456 + n, tzinfo=dt.UTC),
        "event_source": "kms.amazonaws.com",
        "event_name": "Encrypt",
        "principal_arn": USER,
        "key_arns": [KEY_A],
        "error_code": None,
        "read_only": False,
        "record": b'{"eventID":"%d","x":"\\u001e\\u001d"}' % n,
    }
    values.update(fields)
    return NewEvent(**values)  # type: ignore[arg-type]


def _varied_batch() -> list[NewEvent]:
    """Every kind of value the columns take: NULLs, empty and several key ARNs, both read-only flags."""
    return [
        _event(0),
        _event(1, principal_arn=None, error_code="AccessDeniedException", key_arns=[]),
        _event(2, key_arns=[KEY_A, KEY_B], read_only=True, event_name="DescribeKey"),
        _event(3, event_source="iam.amazonaws.com", event_name="CreateUser", key_arns=[], error_code=None),
        _event(4, principal_arn="", error_code="", record=b""),  # empty strings stay empty strings, not NULL
    ]


_COLUMNS = "event_id, event_time, event_source, event_name, principal_arn, key_arns, error_code, read_only, record"


async def _stored(pool: Pool, region: str) -> list[tuple[object, ...]]:
    async with pool.acquire() as con:
        rows = await con.fetch(f"SELECT {_COLUMNS} FROM audit_events WHERE region = $1 ORDER BY seq", region)
    return [tuple(r) for r in rows]


def _expected(batch: list[NewEvent]) -> list[tuple[object, ...]]:
    return [
        (e.event_id, e.event_time, e.event_source, e.event_name, e.principal_arn, e.key_arns, e.error_code,
         e.read_only, e.record)
        for e in batch
    ]  # fmt: skip


async def _append(pool: Pool, region: str, batch: list[NewEvent], *, arrays: bool = False) -> audit_store.Linked:
    async with pool.acquire() as con:
        await audit_store.ensure_head(con, region, chain.genesis_hash(region))
        if not arrays:
            return await audit_store.append_batch(con, region, batch)
        row = await con.fetchrow(audit_store._APPEND_ARRAYS, region, *audit_store._batch_arrays(batch))
        return audit_store.Linked(len(batch), int(row[0]), bytes(row[1]), int(row[2]))


def test_fields_holding_a_separator_are_not_packed() -> None:
    assert audit_store._packed_fields(_varied_batch()) is not None
    assert audit_store._packed_fields([_event(0, principal_arn="a\x1eb")]) is None
    assert audit_store._packed_fields([_event(0, error_code="\x1d")]) is None
    assert audit_store._packed_fields([_event(0, event_name="x\x1dy")]) is None


async def test_packed_batch_stores_the_same_rows_as_the_arrays(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        batch = _varied_batch()
        packed = await _append(pool, "us-east-1", batch)
        plain = await _append(pool, "eu-west-1", batch, arrays=True)
        assert await _stored(pool, "us-east-1") == await _stored(pool, "eu-west-1") == _expected(batch)
        assert (packed.linked, packed.last_seq, plain.last_seq) == (5, 5, 5)
        more = [_event(10), _event(11, read_only=True)]
        assert (await _append(pool, "us-east-1", more)).last_seq == 7
        assert await _stored(pool, "us-east-1") == _expected(batch + more)
        report = await verify_region(pool, "us-east-1")
        assert report.ok and report.events_checked == 7
    finally:
        await pool.close()


@pytest.mark.parametrize("odd", [{"principal_arn": "a\x1eb"}, {"error_code": "\x1d"}, {"key_arns": ["\x1d"]}])
async def test_a_batch_with_a_separator_in_a_field_is_stored_as_it_is(
    database_url: str, odd: dict[str, object]
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        batch = [_event(0), _event(1, **odd), _event(2, principal_arn=None)]
        assert (await _append(pool, "us-east-1", batch)).last_seq == 3
        assert await _stored(pool, "us-east-1") == _expected(batch)
        assert (await verify_region(pool, "us-east-1")).ok
    finally:
        await pool.close()
