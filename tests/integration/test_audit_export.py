"""``regiond audit export`` over audit trail v2 segments, on a real PostgreSQL: CloudTrail log files and
digest files laid out and named as CloudTrail delivers them, records byte for byte, digests that hash
their log files and chain to the one before, the same bytes when exported again."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from regiond.audit.export import check_export, export_region
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import audit_segments
from regiond.store.pool import Conn, Pool, create_pool
from tests.support.audit_v2 import Chain, record

REGION = "eu-west-1"
T0 = dt.datetime(2026, 12, 3, 23, 50, tzinfo=dt.UTC)  # two hours (23:00, 00:00) across a day boundary
KEY = RegionIdentityKey.generate()
A1, A2 = "111122223333", "444455556666"

# The names CloudTrail gives, written out here rather than taken from the code under test.
LOG_PATH = re.compile(
    r"^AWSLogs/(\d{12})/CloudTrail/eu-west-1/(\d{4})/(\d{2})/(\d{2})/"
    r"\1_CloudTrail_eu-west-1_(\2\3\4)T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$"
)
DIGEST_PATH = re.compile(
    r"^AWSLogs/(\d{12})/CloudTrail-Digest/eu-west-1/(\d{4})/(\d{2})/(\d{2})/"
    r"\1_CloudTrail-Digest_eu-west-1_regionkms_eu-west-1_(\2\3\4)T\d{6}Z\.json\.gz$"
)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    p = await create_pool(database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_an_export_is_cloudtrail_log_and_digest_files_that_check_out(pool: Pool, tmp_path: Path) -> None:
    a, b = Chain(REGION), Chain(REGION)
    written: dict[bytes, str] = {}  # record -> its writer
    async with pool.acquire() as con:
        for c in (a, b):
            await c.register(con)
        for i in range(8):  # every 3 minutes from 23:50: five-minute slices, then midnight
            at = T0 + dt.timedelta(minutes=3 * i)
            for c, account in ((a, A1), (b, A2 if i % 2 else A1)):
                records = [record(REGION, "Encrypt", at, recipientAccountId=account) for _ in range(2)]
                await _store(con, c, records, at)
                written.update(dict.fromkeys(records, str(c.writer_id)))
        # The hour in progress (relative to --to) stays out of the export.
        late = [record(REGION, "Decrypt", T0 + dt.timedelta(hours=2), recipientAccountId=A1)]
        await _store(con, a, late, T0 + dt.timedelta(hours=2))

    out = tmp_path / "bucket"
    until = T0 + dt.timedelta(hours=1, minutes=30)  # 01:20: the hours 23:00 and 00:00 have ended
    result = await export_region(pool, REGION, out, until=until, signer=KEY)
    assert result.records == len(written)

    logs = sorted(k for k in _tree(out) if "/CloudTrail/" in k)
    digests = sorted(k for k in _tree(out) if "/CloudTrail-Digest/" in k and k.endswith(".json.gz"))
    assert logs and all(LOG_PATH.match(k) for k in logs), logs
    assert all(DIGEST_PATH.match(k) for k in digests), digests
    # One digest per account and hour (23:00-00:00 and 00:00-01:00), each a chain of its own.
    assert len(digests) == 4

    seen: dict[bytes, str] = {}
    for key in logs:
        body = orjson.loads(gzip.decompress((out / key).read_bytes()))
        assert list(body) == ["Records"] and body["Records"]
        account = key.split("/")[1]
        writers = set()
        slices = set()
        for event in body["Records"]:
            raw = orjson.dumps(event)  # the stored bytes are canonical: they round trip exactly
            seen[raw] = written[raw]
            writers.add(written[raw])
            assert event["recipientAccountId"] == account
            t = dt.datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
            slices.add((t.hour, t.minute // 5))
        assert len(writers) == 1 and len(slices) == 1, key  # one writer and one five-minute slice per file
    assert seen == written  # every record exported once, byte for byte (the late one not at all)

    bodies = {k: orjson.loads(gzip.decompress((out / k).read_bytes())) for k in digests}
    listed = {f["s3Object"]: f["hashValue"] for d in bodies.values() for f in d["logFiles"]}
    assert sorted(listed) == logs
    for key, hash_value in listed.items():
        assert hashlib.sha256(gzip.decompress((out / key).read_bytes())).hexdigest() == hash_value
    for account in (A1, A2):
        first, second = sorted(k for k in digests if k.split("/")[1] == account)
        d1, d2 = bodies[first], bodies[second]
        assert (d1["digestStartTime"], d1["digestEndTime"]) == ("2026-12-03T23:00:00Z", "2026-12-04T00:00:00Z")
        assert d1["previousDigestSignature"] is None and d1["digestSignatureAlgorithm"] == "Ed25519"
        meta = orjson.loads((out / (first + ".metadata.json")).read_bytes())
        assert d2["previousDigestS3Object"] == first and d2["previousDigestSignature"] == meta["signature"]
        assert d2["previousDigestHashValue"] == hashlib.sha256(gzip.decompress((out / first).read_bytes())).hexdigest()
        assert d1["awsAccountId"] == account and d1["digestS3Object"] == first
    assert check_export(out, [KEY.public_bytes()]) == []
    assert check_export(out, [RegionIdentityKey.generate().public_bytes()]) == [
        f"{k}: its signature does not verify" for k in sorted(digests, key=lambda k: k.rsplit("/", 1)[1])]

    # Exported again (and again from the second hour on only), the same names and bytes.
    before = _tree(out)
    await export_region(pool, REGION, out, until=until, signer=KEY)
    await export_region(pool, REGION, out, since=T0 + dt.timedelta(minutes=15), until=until, signer=KEY)
    assert _tree(out) == before

    (out / logs[0]).unlink()
    (out / digests[-1]).write_bytes(gzip.compress(gzip.decompress((out / digests[-1]).read_bytes()).replace(
        b'"logFiles":[', b'"logFiles":[ ')))  # fmt: skip
    problems = check_export(out, [KEY.public_bytes()])
    assert any(logs[0] in p and "missing" in p for p in problems)
    assert f"{digests[-1]}: its signature does not verify" in problems


async def _store(con: Conn, chain: Chain, records: list[bytes], at: dt.datetime) -> None:
    await audit_segments.insert_segment(con, chain.next(records, at))
