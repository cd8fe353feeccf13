"""The group commit's write path (issue 8): ``append_batch``'s wire forms store exactly the rows the
procedure's plain arrays store, and the committer's writer loops keep the write timeout and fail closed."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import orjson
import pytest

from regiond.audit import CommitOptions, GroupCommitter, chain
from regiond.audit.calls import CallRecord
from regiond.audit.committer import AuditUnavailableError
from regiond.audit.verify import verify_region
from regiond.clock import utc_second_text
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
    }
    values.update(fields)
    if "record" not in values:  # a record the columns agree with (verify checks them), separators in it
        values["record"] = orjson.dumps({
            "eventID": str(values["event_id"]), "eventTime": utc_second_text(values["event_time"]),  # type: ignore[arg-type]
            "eventSource": values["event_source"], "eventName": values["event_name"], "awsRegion": "us-east-1",
            "userIdentity": {"arn": values["principal_arn"]} if values["principal_arn"] is not None else None,
            "resources": [{"ARN": arn} for arn in values["key_arns"]],  # type: ignore[attr-defined]
            "errorCode": values["error_code"], "readOnly": values["read_only"], "x": "\x1e\x1d",
        })  # fmt: skip
    return NewEvent(**values)  # type: ignore[arg-type]


def _varied_batch() -> list[NewEvent]:
    """Every kind of value the columns take: NULLs, empty and several key ARNs, both read-only flags."""
    return [
        _event(0),
        _event(1, principal_arn=None, error_code="AccessDeniedException", key_arns=[]),
        _event(2, key_arns=[KEY_A, KEY_B], read_only=True, event_name="DescribeKey"),
        _event(3, event_source="iam.amazonaws.com", event_name="CreateUser", key_arns=[], error_code=None),
        _event(4, principal_arn="", error_code=""),  # empty strings stay empty strings, not NULL
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
        assert row is not None
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


def _call(n: int) -> CallRecord:
    now = dt.datetime.now(dt.UTC)
    return CallRecord(operation="ListKeys", event_source="kms.amazonaws.com", request_id=f"r{n}", event_time=now,
                      region="us-east-1", source_ip="127.0.0.1", user_agent="t")  # fmt: skip


async def test_a_write_stuck_on_a_kept_connection_times_out_and_fails_its_batch(database_url: str) -> None:
    """The write timeout holds on the writer's kept connection too (asyncpg's statement timeout there)."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    writer = GroupCommitter(pool, "us-east-1", None, options=CommitOptions(write_timeout_s=0.5))
    blocker = await asyncpg.connect(database_url)
    try:
        await writer.start()
        await asyncio.gather(*(writer.submit(_call(n)) for n in range(3)))  # the writers now keep connections
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("SELECT 1 FROM audit_chain_head WHERE region = 'us-east-1' FOR UPDATE")
        stuck = [asyncio.create_task(writer.submit(_call(n))) for n in range(3, 6)]
        results = await asyncio.wait_for(asyncio.gather(*stuck, return_exceptions=True), timeout=30)
        assert all(isinstance(r, AuditUnavailableError) for r in results)
        await lock.rollback()
        await asyncio.gather(*(writer.submit(_call(n)) for n in range(6, 9)))  # on fresh connections
        await writer.close()
        report = await verify_region(pool, "us-east-1")
        assert report.ok and report.events_checked == 6
    finally:
        await blocker.close()
        await pool.close()


async def test_every_writer_loop_drains_and_each_event_is_written_once(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=6)
    writer = GroupCommitter(pool, "us-east-1", None, options=CommitOptions(max_in_flight=3, max_batch_events=4))
    try:
        await writer.start()
        waves = [asyncio.gather(*(writer.submit(_call(w * 100 + n)) for n in range(10))) for w in range(5)]
        await asyncio.gather(*waves)
        await writer.close()
        async with pool.acquire() as con:
            ids = [r[0] for r in await con.fetch("SELECT record->>'requestID' FROM (SELECT convert_from(record, "
                                                   "'UTF8')::jsonb AS record FROM audit_events) e")]  # fmt: skip
        assert sorted(ids) == sorted(f"r{w * 100 + n}" for w in range(5) for n in range(10))
        with pytest.raises(AuditUnavailableError):
            await writer.submit(_call(999))
    finally:
        await pool.close()
