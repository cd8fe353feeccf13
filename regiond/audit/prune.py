"""Audit trail v2 retention: whole old segments removed, and a signed record of where each chain now starts.

``regiond audit prune --before T`` removes, per writer, the oldest segments of its chain (a prefix:
seq 1.. or on from where the previous prune stopped) whose events are all older than ``T`` and that
a signed digest *anchored outside the database* covers (the writer's head in that digest is at or
past them). Before removing anything it checks every segment it would remove as ``verify`` does
(its hash, its link, its records and time columns), and the previous prune records; anything wrong
refuses the whole prune, so pruning never erases the evidence of tampering. It never removes an open
writer's newest segment (the digest task reads a writer's head from it). In the same transaction it
stores a **prune record** signed with the region's identity key (format version 2):

    message   = "regionkms.audit.prune.v2" || 0x00 || JSON (sorted keys, no spaces) of
                {"region", "seq" (1, 2, ... per region), "prunedAt" (RFC 3339 UTC, microseconds),
                 "before" (RFC 3339 UTC, seconds), "digest": {"seq", "hash"} (the anchored digest that
                 covered the run: SHA-256 hex of its message),
                 "writers": [{"writer" (UUID), "seq" (the last segment removed), "hash" (its hash, hex:
                              what the next kept segment links to), "lastTime" (its last eventTime),
                              "digest" (the seq of a digest whose head for the writer is at or past
                              "seq")} ... by writer]}
    signature = Ed25519(identity key, message)

``regiond audit verify`` (``check_prunes``) checks every record (its signature by the region's key,
its form, the digests it names as the database holds them) and starts each writer's walk after the
newest pruned segment, linked to the signed hash; it reports the pruned range as pruned, in a note.
Segments missing without such a record are reported as deleted, as before; a record deleted
turns the segments it removed into findings; one forged or edited is ``prune-forged``. Digests are
kept: they are small, and their chain stays whole.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from regiond.audit import digests, segment, verify_segments
from regiond.crypto import sign
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.audit_anchor import DIGEST_LABEL_V2, Anchor
from regiond.store import audit_digests as store
from regiond.store import audit_segments as segment_store
from regiond.store import locks
from regiond.store.pool import Conn, Pool, transaction

__all__ = ["PRUNE_LABEL", "Boundary", "Prune", "PruneFormatError", "PruneRefusedError", "PruneResult",
           "PrunedWriter", "check_prunes", "decode", "prune"]  # fmt: skip

PRUNE_LABEL = b"regionkms.audit.prune.v2\x00"
MAX_WRITERS = digests.MAX_WRITERS
LOCK_TRIES = 50  # a digest round holds the region's digest lock for milliseconds


class PruneFormatError(ValueError):
    """Bytes that are not a prune record ``Prune.message`` could have written."""


class PruneRefusedError(RuntimeError):
    """``prune`` removes nothing: the reason names what an operator must look at."""


def _time_us(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time_s(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class PrunedWriter:
    writer_id: uuid.UUID
    seq: int  # the last segment removed
    hash: bytes  # its hash: the next kept segment links to it
    last_time: dt.datetime  # its last eventTime (whole seconds)
    digest: int  # a digest whose head for this writer is at or past ``seq``


@dataclass(frozen=True, slots=True)
class Prune:
    region: str
    seq: int
    pruned_at: dt.datetime
    before: dt.datetime
    digest_seq: int
    digest_hash: bytes
    writers: tuple[PrunedWriter, ...]

    def message(self) -> bytes:
        """The one encoding (module docstring): what is signed and stored."""
        body = {
            "region": self.region, "seq": self.seq, "prunedAt": _time_us(self.pruned_at),
            "before": _time_s(self.before), "digest": {"seq": self.digest_seq, "hash": self.digest_hash.hex()},
            "writers": [
                {"writer": str(w.writer_id), "seq": w.seq, "hash": w.hash.hex(), "lastTime": _time_s(w.last_time),
                 "digest": w.digest}
                for w in sorted(self.writers, key=lambda w: w.writer_id.bytes)
            ],
        }  # fmt: skip
        return PRUNE_LABEL + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _get(body: dict[str, Any], name: str, kind: type) -> Any:
    value: Any = body.get(name)
    bad_int = kind is int and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63)
    if bad_int or not isinstance(value, kind):
        raise PruneFormatError(f"a prune record's {name} is missing or not {kind.__name__}")
    return value


def _hash(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != segment.HASH_BYTES:
        raise PruneFormatError(f"a prune record's {what} is not a SHA-256 in hex")
    return raw


def _when(value: Any, fmt: str, what: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(str(value), fmt).replace(tzinfo=dt.UTC)
    except ValueError:
        raise PruneFormatError(f"a prune record's {what} is not RFC 3339 UTC") from None


def decode(message: bytes) -> Prune:
    """The record a stored message holds; ``PruneFormatError`` unless ``Prune.message`` writes exactly it."""
    message = bytes(message)
    if not message.startswith(PRUNE_LABEL):
        raise PruneFormatError("not a v2 audit prune record (label)")
    try:
        body: Any = orjson.loads(message[len(PRUNE_LABEL) :])
    except orjson.JSONDecodeError:
        raise PruneFormatError("a prune record is not JSON") from None
    if not isinstance(body, dict):
        raise PruneFormatError("a prune record is not a JSON object")
    covering = _get(body, "digest", dict)
    writers = _get(body, "writers", list)
    if not 0 < len(writers) <= MAX_WRITERS or not all(isinstance(w, dict) for w in writers):
        raise PruneFormatError("a prune record names no writers, too many, or not as objects")
    try:
        pruned = tuple(PrunedWriter(uuid.UUID(str(_get(w, "writer", str))), _get(w, "seq", int),
                                    _hash(w.get("hash"), "segment hash"),
                                    _when(w.get("lastTime"), "%Y-%m-%dT%H:%M:%SZ", "lastTime"), _get(w, "digest", int))
                       for w in writers)  # fmt: skip
    except ValueError as exc:
        raise PruneFormatError(f"a prune record's writer: {exc}") from None
    record = Prune(
        _get(body, "region", str), _get(body, "seq", int), _when(body.get("prunedAt"), "%Y-%m-%dT%H:%M:%S.%fZ",
        "prunedAt"), _when(body.get("before"), "%Y-%m-%dT%H:%M:%SZ", "before"), _get(covering, "seq", int),
        _hash(covering.get("hash"), "digest hash"), pruned,
    )  # fmt: skip
    if record.message() != message or len({w.writer_id for w in pruned}) != len(pruned):
        raise PruneFormatError("a prune record is not in its canonical form")
    return record


# --- verify's half -------------------------------------------------------------------------------


class _Report(Protocol):
    notes: list[str]
    region: str

    def add(self, kind: str, seq: int | None, detail: str, event_id: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Boundary:
    """Where a writer's kept chain starts: after segment ``seq``, linked to ``hash`` (a signed prune record's)."""

    seq: int
    hash: bytes
    prune: int


@dataclass(slots=True)
class _Check:
    boundaries: dict[uuid.UUID, Boundary] = field(default_factory=dict)
    last_seq: int = 0
    segments: int = 0  # how many segments the valid records removed, by their own account


async def check_prunes(con: Conn, report: _Report, trusted: Sequence[bytes]) -> dict[uuid.UUID, Boundary]:
    """Check the region's prune records into ``report``; the boundary of every writer a valid one pruned.

    A record is honoured only if it is in its canonical form, signed by the region's key (``trusted``,
    or the key stored beside it when none is given: verify notes that case), of this region, numbered
    in order, and every digest it names is held by the database as signed with the head it relies on."""
    check = _Check()
    digest_cache: dict[int, digests.Digest | None] = {}
    for row in await store.prunes(con, report.region):
        where = f"prune record {row.seq}"
        try:
            p = decode(row.message)
        except PruneFormatError as exc:
            report.add("prune-forged", None, f"{where}: {exc}")
            continue
        if not digests.signature_valid(trusted or [row.public_key], row.message, row.signature):
            report.add("prune-forged", None, f"{where}: its signature does not verify with the region identity key")
            continue
        if p.region != report.region or p.seq != row.seq or p.pruned_at != row.pruned_at:
            report.add("prune-forged", None, f"{where}: its columns disagree with its signed message")
            continue
        if p.seq != check.last_seq + 1:
            report.add("prune-missing", None, f"{where} follows prune record {check.last_seq}: a record was removed "
                       "(the segments it pruned read as deleted)")  # fmt: skip
        check.last_seq = p.seq
        problem = await _covering_problem(con, report.region, p, trusted, digest_cache)
        if problem is not None:
            report.add("prune-invalid", None, f"{where}: {problem}")
            continue
        removed = 0
        for w in p.writers:
            before = check.boundaries.get(w.writer_id)
            if before is None or w.seq > before.seq:
                removed += w.seq - (before.seq if before is not None else 0)
                check.boundaries[w.writer_id] = Boundary(w.seq, w.hash, p.seq)
        check.segments += removed
        report.notes.append(f"{where} (signed {_time_s(p.pruned_at)}): {removed} segments of {len(p.writers)} "
                            f"writers with events before {_time_s(p.before)} were pruned by regiond audit prune; "
                            f"the kept chains start after them")  # fmt: skip
    return check.boundaries


async def _digest(
    con: Conn, region: str, seq: int, trusted: Sequence[bytes], cache: dict[int, digests.Digest | None]
) -> digests.Digest | None:
    if seq not in cache:
        row = await store.digest_at(con, region, seq)
        d = None
        if row is not None and digests.signature_valid(trusted or [row.public_key], row.message, row.signature):
            try:
                d = digests.decode(row.message)
            except digests.DigestFormatError:
                d = None
        cache[seq] = d
    return cache[seq]


async def _covering_problem(
    con: Conn, region: str, p: Prune, trusted: Sequence[bytes], cache: dict[int, digests.Digest | None]
) -> str | None:
    """Why the digests ``p`` names do not cover it (``None``: they do)."""
    anchored = await _digest(con, region, p.digest_seq, trusted, cache)
    if anchored is None or digests.digest_hash(anchored.message()) != p.digest_hash:
        return f"the database does not hold digest {p.digest_seq} as the record names it"
    for w in p.writers:
        d = await _digest(con, region, w.digest, trusted, cache)
        head = d.head(w.writer_id) if d is not None else None
        if head is None or head.seq < w.seq or w.digest > p.digest_seq:
            return f"digest {w.digest} does not cover writer {w.writer_id} up to segment {w.seq}"
    return None


# --- the prune -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneResult:
    seq: int
    segments: int
    writers: int
    digest: int


class _Collect:
    """A finding sink for the pre-prune checks: the first finding refuses the prune."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.findings: list[str] = []
        self.notes: list[str] = []

    def add(self, kind: str, seq: int | None, detail: str, event_id: str | None = None) -> None:
        self.findings.append(f"{kind}: {detail}")

    def add_writer(self, kind: str, writer: uuid.UUID | None, seq: int | None, detail: str) -> None:
        self.findings.append(f"writer {writer} segment {seq}: {kind}: {detail}")


async def prune(
    pool: Pool, region: str, signer: RegionIdentityKey, before: dt.datetime, anchors: Sequence[Anchor],
    *, now: dt.datetime | None = None,
) -> PruneResult | None:  # fmt: skip
    """Remove the segments of ``region`` older than ``before`` that an anchored digest covers (module
    docstring); ``None`` if there is nothing to remove, ``PruneRefusedError`` if it will not."""
    trusted = [signer.public_bytes()]
    for _ in range(LOCK_TRIES):
        async with transaction(pool) as con:
            if not await locks.try_lock_xact(con, locks.LockId.AUDIT_DIGEST):
                continue  # a digest round is signing: it is done in milliseconds
            return await _prune(con, region, signer, trusted, before, anchors, now or dt.datetime.now(dt.UTC))
        await asyncio.sleep(0.1)
    raise PruneRefusedError("the region's digest lock stayed taken: try again")


async def _prune(
    con: Conn, region: str, signer: RegionIdentityKey, trusted: list[bytes], before: dt.datetime,
    anchors: Sequence[Anchor], now: dt.datetime,
) -> PruneResult | None:  # fmt: skip
    anchored = await _newest_anchored(con, region, trusted, anchors)
    sink = _Collect(region)
    boundaries = await check_prunes(con, sink, trusted)
    if sink.findings:
        raise PruneRefusedError(f"the prune records are not whole ({sink.findings[0]}): run regiond audit verify")
    covered = await _covered(con, region, trusted, anchored.seq)
    spans = {s.writer_id: s for s in await store.writer_spans(con, list(covered), before)}
    pruned: list[PrunedWriter] = []
    for writer_id, (head, digest_seq, closed) in sorted(covered.items(), key=lambda kv: kv[0].bytes):
        span = spans.get(writer_id)
        if span is None:
            continue
        limit = min(head.seq, span.first_young - 1 if span.first_young is not None else span.max_seq)
        if not closed:
            limit = min(limit, span.max_seq - 1)  # the digest task reads an open writer's head from its newest
        start = boundaries.get(writer_id)
        if limit <= (start.seq if start is not None else 0):
            continue
        pruned.append(await _checked_run(con, region, writer_id, start, limit, head, digest_seq, before))
    if not pruned:
        return None
    last = await store.prunes(con, region)
    record = Prune(region, (last[-1].seq if last else 0) + 1, now, before, anchored.seq,
                   digests.digest_hash(anchored.message()), tuple(pruned))  # fmt: skip
    message = record.message()
    through = [(w.writer_id, w.seq) for w in pruned]
    removed = await store.add_prune(con, store.PruneRow(region, record.seq, now, signer.public_bytes(), message,
                                                        signer.sign(message)), through)  # fmt: skip
    return PruneResult(record.seq, removed, len(pruned), anchored.seq)


async def _newest_anchored(con: Conn, region: str, trusted: list[bytes], anchors: Sequence[Anchor]) -> digests.Digest:
    """The newest v2 digest of ``region`` that the database holds exactly as an anchor holds it."""
    held = [a for a in anchors if a.message.startswith(DIGEST_LABEL_V2) and a.region == region
            and sign.verify(trusted[0], a.message, a.signature)]  # fmt: skip
    for a in sorted(held, key=lambda a: a.position, reverse=True):
        row = await store.digest_at(con, region, a.position)
        if row is not None and digests.digest_hash(row.message) == a.digest_hash:
            return digests.decode(row.message)
    raise PruneRefusedError(f"no v2 digest of {region} that the database holds is anchored in the anchor files "
                            "given (the state dir's, --anchor, the peers' copies): nothing is covered")  # fmt: skip


async def _covered(
    con: Conn, region: str, trusted: list[bytes], through: int
) -> dict[uuid.UUID, tuple[digests.Head, int, bool]]:
    """Each writer's newest head in the digests up to ``through``, the digest that signed it, and
    whether it was closed there (a closed writer is in no later digest)."""
    covered: dict[uuid.UUID, tuple[digests.Head, int, bool]] = {}
    async for row in store.digests(con, region):
        if row.seq > through:
            break
        if not digests.signature_valid(trusted, row.message, row.signature):
            raise PruneRefusedError(f"digest {row.seq} is not signed by the region's key: run regiond audit verify")
        d = digests.decode(row.message)
        for h in d.heads:
            covered[h.writer_id] = (h, d.seq, h.closed)
    return covered


async def _checked_run(
    con: Conn, region: str, writer_id: uuid.UUID, start: Boundary | None, limit: int, head: digests.Head,
    digest_seq: int, before: dt.datetime,
) -> PrunedWriter:  # fmt: skip
    """Check segments after ``start`` through ``limit`` of one writer as verify would; what pruning
    them records. ``PruneRefusedError`` at the first thing wrong."""
    sink = _Collect(region)
    expected_seq = (start.seq if start is not None else 0) + 1
    expected_prev = start.hash if start is not None else segment.writer_genesis(region, writer_id)
    last: segment_store.SegmentRow | None = None
    async for row in segment_store.iter_writer_segments(con, writer_id):
        if row.seq < expected_seq:
            continue  # left by an earlier prune (it records where the chain starts)
        if row.seq > limit:
            break
        own = segment.segment_hash(row.prev_hash, row.writer_id, row.seq, row.record_count, row.body)
        if row.seq != expected_seq or row.prev_hash != expected_prev or own != row.hash:
            sink.add_writer("segment-changed", writer_id, row.seq, "not the segment its chain links to")
        else:
            verify_segments.check_content(sink, region, row)
        if not sink.findings and row.last_time >= before:
            sink.add_writer("segment-time-changed", writer_id, row.seq, f"its events are not all before {before}")
        if sink.findings:
            raise PruneRefusedError(f"{sink.findings[0]}: nothing was pruned; run regiond audit verify")
        expected_seq, expected_prev, last = row.seq + 1, row.hash, row
    if last is None or last.seq != limit:
        raise PruneRefusedError(f"writer {writer_id}: segments {expected_seq}..{limit} are not stored: nothing was "
                                "pruned; run regiond audit verify")  # fmt: skip
    if limit == head.seq and last.hash != head.hash:
        raise PruneRefusedError(f"writer {writer_id} segment {limit}: not the segment digest {digest_seq} signed: "
                                "nothing was pruned; run regiond audit verify")  # fmt: skip
    return PrunedWriter(writer_id, limit, last.hash, last.last_time, digest_seq)


def pruned_through(boundaries: Mapping[uuid.UUID, Boundary]) -> dict[uuid.UUID, int]:
    """The digest check's view: each pruned writer's last removed seq."""
    return {w: b.seq for w, b in boundaries.items()}
