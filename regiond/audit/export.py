"""``regiond audit export``: hourly JSON-lines files for shipping to a SIEM, each with a digest.

Layout (one file per region and UTC hour holding events, like CloudTrail's delivery):

    OUT/<region>/YYYY/MM/DD/regionkms_<region>_YYYYMMDDTHH00Z.jsonl.gz
    OUT/<region>/YYYY/MM/DD/regionkms_<region>_YYYYMMDDTHH00Z.digest.json

A ``.jsonl.gz`` holds the hour's events in chain order, one JSON object per line, exactly as
stored (and hashed). Its gzip header carries no name or time, so exporting the same hour
again yields the same bytes and a shipper can skip unchanged files.

The digest, format version 1, is a JSON object::

    {"version": 1, "region", "hourStart", "hourEnd", "file", "fileSha256", "eventCount",
     "firstSeq", "lastSeq", "lastEventHash", "publicKey", "signature"}

``signature`` is Ed25519 by the region identity key over
``"regionkms.audit.export.v1" || 0x00 || JSON(every other member, sorted keys)``, or ``null``
when the exporter was given no key (``--state-dir`` or ``--cluster``); ``check_export``
verifies a pair of files.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey
from regiond.store import audit as audit_store
from regiond.store.pool import Pool, transaction

__all__ = ["ExportedHour", "check_export", "export_region"]

_EXPORT_LABEL = b"regionkms.audit.export.v1\x00"
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ExportedHour:
    path: Path
    digest_path: Path
    events: int


def _hour_floor(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed_body(body: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return _EXPORT_LABEL + orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def export_region(
    pool: Pool, region: str, out_dir: Path, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
    signer: RegionIdentityKey | None = None,
) -> list[ExportedHour]:  # fmt: skip
    """Write one file (and digest) per hour with events of ``region`` in ``[since, until)``."""
    written: list[ExportedHour] = []
    async with transaction(pool, isolation="repeatable_read") as con:
        span = await audit_store.time_span(con, region, since, until)
        if span is None:
            return written
        hour = _hour_floor(span[0])
        while hour <= span[1]:
            lo = max(hour, since) if since is not None else hour
            hi = min(hour + HOUR, until) if until is not None else hour + HOUR
            name = f"regionkms_{region}_{hour:%Y%m%dT%H}00Z"
            folder = out_dir / region / f"{hour:%Y}" / f"{hour:%m}" / f"{hour:%d}"
            path = folder / f"{name}.jsonl.gz"
            tmp = path.with_name(path.name + ".tmp")
            count, first_seq, last_seq, last_hash = 0, 0, 0, b""
            with contextlib.ExitStack() as files:
                out: gzip.GzipFile | None = None
                async for row in audit_store.iter_events_by_time(con, region, lo, hi):
                    if out is None:
                        folder.mkdir(parents=True, exist_ok=True)
                        raw = files.enter_context(tmp.open("wb"))
                        out = files.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
                    out.write(bytes(row.record) + b"\n")
                    count += 1
                    first_seq = first_seq or row.seq
                    last_seq, last_hash = row.seq, bytes(row.hash)
            if count:
                os.replace(tmp, path)
                body: dict[str, Any] = {
                    "version": 1, "region": region, "hourStart": _stamp(hour), "hourEnd": _stamp(hour + HOUR),
                    "file": path.name, "fileSha256": _file_sha256(path), "eventCount": count, "firstSeq": first_seq,
                    "lastSeq": last_seq, "lastEventHash": last_hash.hex(),
                    "publicKey": signer.public_bytes().hex() if signer is not None else None, "signature": None,
                }  # fmt: skip
                if signer is not None:
                    body["signature"] = base64.b64encode(signer.sign(_signed_body(body))).decode()
                digest_path = folder / f"{name}.digest.json"
                _write_atomic(digest_path, orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
                written.append(ExportedHour(path, digest_path, count))
            hour += HOUR
    return written


def check_export(digest_path: Path, public_key: bytes | None = None) -> list[str]:
    """Problems with an exported hour (empty when its file and signature check out)."""
    body: dict[str, Any] = orjson.loads(digest_path.read_bytes())
    problems: list[str] = []
    data_path = digest_path.with_name(str(body.get("file", "")))
    if not data_path.is_file():
        return [f"{data_path.name}: missing"]
    data = data_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != body.get("fileSha256"):
        problems.append(f"{data_path.name}: content does not match its digest")
    elif len(gzip.decompress(data).splitlines()) != body.get("eventCount"):
        problems.append(f"{data_path.name}: event count does not match its digest")
    if body.get("signature") is None:
        problems.append(f"{digest_path.name}: not signed")
    else:
        key = public_key if public_key is not None else bytes.fromhex(str(body.get("publicKey") or ""))
        if not sign.verify(key, _signed_body(body), base64.b64decode(str(body["signature"]))):
            problems.append(f"{digest_path.name}: signature does not verify")
    return problems
