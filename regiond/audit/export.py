"""``regiond audit export``: the trail as CloudTrail log files and digest files, laid out as CloudTrail
delivers them to S3, so tools that read a CloudTrail bucket read an export unchanged (issue 15).

``OUT`` stands for the bucket's root (``--bucket`` names it inside the digests). Whole UTC hours that
have ended (by ``--to``, default now) are exported; within them:

    OUT/AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/
        <account>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<16 characters>.json.gz
    OUT/AWSLogs/<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/
        <account>_CloudTrail-Digest_<region>_<trail>_<region>_YYYYMMDDTHHmmssZ.json.gz
        ... and beside each digest, <digest name>.metadata.json: the object metadata CloudTrail
        sets on a digest object, {"signature": hex, "signature-algorithm": "Ed25519"}

**Log files.** One per account (the record's ``recipientAccountId``), region, writer (a v2 writer's
chain, or the closed legacy v1 chain) and five-minute slice of ``eventTime``, named with the slice's
end as CloudTrail names a file with its delivery time. The body is ``{"Records":[...]}`` holding the
records byte for byte as stored and hashed, in chain order, gzipped with no name or time in the
header; the 16-character part of the name is derived from the account, region, writer and slice
(CloudTrail's is random: it only keeps names apart), so exporting an hour again writes the same
names and bytes.

**Digest files.** One per account, region and hour, as CloudTrail delivers them (also for an hour
with no log file, so the chain of digests has no gap), with CloudTrail's members: ``awsAccountId``,
``digestStartTime``, ``digestEndTime``, ``digestS3Bucket``, ``digestS3Object``,
``digestPublicKeyFingerprint`` (SHA-256 hex of the raw Ed25519 key: ``regiond.crypto.sign``),
``digestSignatureAlgorithm`` (``Ed25519`` where CloudTrail writes ``SHA256withRSA``),
``newestEventTime``, ``oldestEventTime``, ``previousDigestS3Bucket``, ``previousDigestS3Object``,
``previousDigestHashValue`` (SHA-256 hex of the previous digest's uncompressed content),
``previousDigestHashAlgorithm``, ``previousDigestSignature`` and ``logFiles`` (``s3Bucket``,
``s3Object``, ``hashValue``: SHA-256 hex of the uncompressed log file, ``hashAlgorithm``,
``newestEventTime``, ``oldestEventTime``). The signature is CloudTrail's data-signing string signed
with the region identity key:

    digestEndTime "\\n" bucket "/" digestS3Object "\\n" hex(SHA-256(uncompressed digest)) "\\n"
    previousDigestSignature (hex, or "null" for the first digest)

``check_export`` checks an export tree: every digest's signature and link to the one before, every
log file against its digest's hash, and that no log file is in no digest.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from regiond.audit import segment
from regiond.audit.verify_segments import record_second
from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import audit as audit_store
from regiond.store import audit_segments
from regiond.store.pool import Conn, Pool, transaction

__all__ = [
    "DIGEST_NAME",
    "LOG_NAME",
    "ExportResult",
    "ExportedFile",
    "check_export",
    "export_region",
]

HOUR = dt.timedelta(hours=1)
SLICE = dt.timedelta(minutes=5)  # CloudTrail delivers a trail's log files about every five minutes
UNKNOWN_ACCOUNT = "000000000000"
LEGACY_WRITER = "legacy-v1"
SIGNATURE_ALGORITHM = "Ed25519"
HASH_ALGORITHM = "SHA-256"
METADATA_SUFFIX = ".metadata.json"
LOG_NAME = re.compile(
    r"^(?P<account>\d{12})_CloudTrail_(?P<region>[a-z0-9-]+)_(?P<time>\d{8}T\d{4}Z)_[A-Za-z0-9]{16}\.json\.gz$"
)
DIGEST_NAME = re.compile(
    r"^(?P<account>\d{12})_CloudTrail-Digest_(?P<region>[a-z0-9-]+)_(?P<trail>[A-Za-z0-9._-]+)_(?P=region)"
    r"_(?P<time>\d{8}T\d{6}Z)\.json\.gz$"
)
_ACCOUNT = re.compile(r"^\d{12}$")


@dataclass(frozen=True, slots=True)
class ExportedFile:
    key: str  # the path under OUT: the S3 object key
    records: int
    account: str
    writer: str


@dataclass(slots=True)
class ExportResult:
    files: list[ExportedFile] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)


def _second(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    t = t.astimezone(dt.UTC)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((t - epoch) // step) * step


def _folder(account: str, kind: str, region: str, t: dt.datetime) -> str:
    return f"AWSLogs/{account}/{kind}/{region}/{t:%Y}/{t:%m}/{t:%d}"


def log_file_key(account: str, region: str, writer: str, slice_end: dt.datetime) -> str:
    unique = hashlib.sha256(f"{account}/{region}/{writer}/{slice_end.isoformat()}".encode()).hexdigest()[:16]
    name = f"{account}_CloudTrail_{region}_{slice_end:%Y%m%dT%H%MZ}_{unique}.json.gz"
    return f"{_folder(account, 'CloudTrail', region, slice_end)}/{name}"


def digest_file_key(account: str, region: str, trail: str, end: dt.datetime) -> str:
    name = f"{account}_CloudTrail-Digest_{region}_{trail}_{region}_{end:%Y%m%dT%H%M%SZ}.json.gz"
    return f"{_folder(account, 'CloudTrail-Digest', region, end)}/{name}"


def string_to_sign(body: dict[str, Any], digest_content: bytes) -> bytes:
    """CloudTrail's data-signing string of a digest (module docstring)."""
    previous = body.get("previousDigestSignature") or "null"
    return (f"{body['digestEndTime']}\n{body['digestS3Bucket']}/{body['digestS3Object']}\n"
            f"{hashlib.sha256(digest_content).hexdigest()}\n{previous}").encode()  # fmt: skip


def _account(event: dict[str, Any]) -> str:
    for value in (event.get("recipientAccountId"), (event.get("userIdentity") or {}).get("accountId")):
        if isinstance(value, str) and _ACCOUNT.match(value):
            return value
    return UNKNOWN_ACCOUNT


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(slots=True)
class _Slice:
    records: list[tuple[tuple[int, int], bytes, dt.datetime]] = field(default_factory=list)  # (order, record, time)


@dataclass(slots=True)
class _Previous:
    key: str
    content: bytes
    signature: str | None


class _Exporter:
    def __init__(self, region: str, out: Path, bucket: str, trail: str, signer: RegionIdentityKey | None) -> None:
        self.region, self.out, self.bucket, self.trail, self.signer = region, out, bucket, trail, signer
        self.result = ExportResult()
        self.previous: dict[str, _Previous | None] = {}  # account -> its newest digest (this run or on disk)

    async def hour(self, con: Conn, start: dt.datetime) -> None:
        end = start + HOUR
        slices: dict[tuple[str, str, dt.datetime], _Slice] = {}

        def add(event_bytes: bytes, order: tuple[int, int], writer: str) -> None:
            event = orjson.loads(event_bytes)
            when = record_second(event["eventTime"])
            if start <= when < end:
                key = (_account(event), writer, _floor(when, SLICE) + SLICE)
                slices.setdefault(key, _Slice()).records.append((order, event_bytes, when))

        async for row in audit_store.iter_events_by_time(con, self.region, start, end):
            add(bytes(row.record), (row.seq, 0), LEGACY_WRITER)
        async for s in audit_segments.iter_segments_by_time(con, start, end):
            for i, record in enumerate(segment.decode(s.writer_id, s.seq, s.record_count, s.body)):
                add(record, (s.seq, i), str(s.writer_id))
        files: dict[str, list[dict[str, Any]]] = {}
        for (account, writer, slice_end), sl in sorted(slices.items()):
            sl.records.sort(key=lambda r: r[0])
            content = b'{"Records":[' + b",".join(r[1] for r in sl.records) + b"]}"
            key = log_file_key(account, self.region, writer, slice_end)
            _write(self.out / key, gzip.compress(content, mtime=0))
            times = [r[2] for r in sl.records]
            files.setdefault(account, []).append({
                "s3Bucket": self.bucket, "s3Object": key, "hashValue": hashlib.sha256(content).hexdigest(),
                "hashAlgorithm": HASH_ALGORITHM, "newestEventTime": _second(max(times)),
                "oldestEventTime": _second(min(times)),
            })  # fmt: skip
            self.result.files.append(ExportedFile(key, len(sl.records), account, writer))
        for account in sorted(set(files) | set(self.previous)):
            self._digest(account, start, end, files.get(account, []))

    def _last_on_disk(self, account: str, end: dt.datetime) -> _Previous | None:
        """The newest digest of ``account`` already in OUT ending before ``end`` (an earlier export)."""
        folder = self.out / "AWSLogs" / account / "CloudTrail-Digest" / self.region
        best: tuple[str, Path] | None = None
        for path in folder.glob("*/*/*/*.json.gz"):
            m = DIGEST_NAME.match(path.name)
            if m and m["trail"] == self.trail and m["time"] < f"{end:%Y%m%dT%H%M%SZ}" and (
                    best is None or m["time"] > best[0]):  # fmt: skip
                best = (m["time"], path)
        if best is None:
            return None
        return _read_previous(self.out, best[1])

    def _digest(self, account: str, start: dt.datetime, end: dt.datetime, logs: list[dict[str, Any]]) -> None:
        if account not in self.previous:
            self.previous[account] = self._last_on_disk(account, end)
        prev = self.previous[account]
        key = digest_file_key(account, self.region, self.trail, end)
        times = [t for f in logs for t in (f["newestEventTime"], f["oldestEventTime"])]
        body: dict[str, Any] = {
            "awsAccountId": account, "digestStartTime": _second(start), "digestEndTime": _second(end),
            "digestS3Bucket": self.bucket, "digestS3Object": key,
            "digestPublicKeyFingerprint": self.signer.fingerprint() if self.signer is not None else None,
            "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
            "newestEventTime": max(times) if times else None, "oldestEventTime": min(times) if times else None,
            "previousDigestS3Bucket": self.bucket if prev is not None else None,
            "previousDigestS3Object": prev.key if prev is not None else None,
            "previousDigestHashValue": hashlib.sha256(prev.content).hexdigest() if prev is not None else None,
            "previousDigestHashAlgorithm": HASH_ALGORITHM if prev is not None else None,
            "previousDigestSignature": prev.signature if prev is not None else None,
            "logFiles": logs,
        }  # fmt: skip
        content = orjson.dumps(body)
        _write(self.out / key, gzip.compress(content, mtime=0))
        signature: str | None = None
        if self.signer is not None:
            signature = self.signer.sign(string_to_sign(body, content)).hex()
            meta = {"signature": signature, "signature-algorithm": SIGNATURE_ALGORITHM}
            _write(self.out / (key + METADATA_SUFFIX), orjson.dumps(meta, option=orjson.OPT_SORT_KEYS) + b"\n")
        self.previous[account] = _Previous(key, content, signature)
        self.result.digests.append(key)


def _read_previous(out: Path, path: Path) -> _Previous:
    meta_path = path.with_name(path.name + METADATA_SUFFIX)
    signature = None
    if meta_path.is_file():
        signature = str(orjson.loads(meta_path.read_bytes()).get("signature") or "") or None
    return _Previous(path.relative_to(out).as_posix(), gzip.decompress(path.read_bytes()), signature)


async def export_region(
    pool: Pool, region: str, out_dir: Path, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
    signer: RegionIdentityKey | None = None, bucket: str = "regionkms-audit", trail: str = "regionkms",
    now: dt.datetime | None = None,
) -> ExportResult:  # fmt: skip
    """Export every whole UTC hour of ``region`` from ``since`` (floored to its hour) that ended by
    ``until`` (default: now) and holds events (v2 segments and the legacy v1 chain), with its digests."""
    until = until if until is not None else (now or dt.datetime.now(dt.UTC))
    exporter = _Exporter(region, out_dir, bucket, trail, signer)
    lo = _floor(since, HOUR) if since is not None else None
    async with transaction(pool, isolation="repeatable_read") as con:
        spans = [s for s in (await audit_store.time_span(con, region, lo, until),
                             await audit_segments.time_span(con, lo, until)) if s is not None]  # fmt: skip
        if not spans:
            return exporter.result
        hour = _floor(min(s[0] for s in spans), HOUR)
        last = max(s[1] for s in spans)
        if lo is not None:
            hour = max(hour, lo)
        while hour <= last and hour + HOUR <= until:
            await exporter.hour(con, hour)
            hour += HOUR
    return exporter.result


def _log_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def check_export(out_dir: Path, public_keys: Iterable[bytes] = ()) -> list[str]:
    """Problems with an export tree (empty when every digest, its signature and chain, and every log
    file check out). Without ``public_keys``, signatures are not checked (and that is one problem)."""
    keys = list(public_keys)
    problems: list[str] = [] if keys else ["no public key given: digest signatures were not checked"]
    listed: set[str] = set()
    digests = sorted(out_dir.glob("AWSLogs/*/CloudTrail-Digest/*/*/*/*/*.json.gz"), key=lambda p: p.name)
    by_key = {p.relative_to(out_dir).as_posix(): p for p in digests}
    for path in digests:
        key = path.relative_to(out_dir).as_posix()
        content = gzip.decompress(path.read_bytes())
        body: dict[str, Any] = orjson.loads(content)
        if body.get("digestS3Object") != key:
            problems.append(f"{key}: it names itself {body.get('digestS3Object')!r}")
        if keys:
            meta_path = path.with_name(path.name + METADATA_SUFFIX)
            meta = orjson.loads(meta_path.read_bytes()) if meta_path.is_file() else {}
            try:
                signature = bytes.fromhex(str(meta.get("signature", "")))
            except ValueError:
                signature = b""
            if not any(sign.verify(k, string_to_sign(body, content), signature) for k in keys):
                problems.append(f"{key}: its signature does not verify")
        prev_key = body.get("previousDigestS3Object")
        if prev_key is not None:
            prev_path = by_key.get(prev_key)
            if prev_path is None:
                problems.append(f"{key}: the previous digest {prev_key} is missing")
            else:
                prev = _read_previous(out_dir, prev_path)
                if hashlib.sha256(prev.content).hexdigest() != body.get("previousDigestHashValue"):
                    problems.append(f"{key}: the previous digest {prev_key} was changed")
                if prev.signature != body.get("previousDigestSignature"):
                    problems.append(f"{key}: the previous digest's signature is not the one it carries")
        for f in body.get("logFiles", []):
            listed.add(f["s3Object"])
            if _log_hash(out_dir / f["s3Object"]) != f.get("hashValue"):
                problems.append(f"{f['s3Object']}: missing, or its content does not match digest {key}")
    for path in sorted(out_dir.glob("AWSLogs/*/CloudTrail/*/*/*/*/*.json.gz")):
        key = path.relative_to(out_dir).as_posix()
        if key not in listed:
            problems.append(f"{key}: a log file in no digest")
    return problems
