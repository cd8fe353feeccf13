"""The digest half of ``regiond audit verify`` for audit trail v2 (``regiond.audit.digests``).

The segment chains (each writer's links and hashes, checked in ``regiond.audit.verify``) show a
segment changed, moved, inserted or deleted *inside* a chain. What no chain can show by itself is
a chain cut at its tail, a whole chain deleted, or a chain re-hashed from some point on by someone
who knows the format; the signed digests show those, since each fixes where every chain stood.
``check_digests`` reads the digests and the segments' headers (never their bodies) and reports:

* **digest-forged** - a digest whose signature does not verify with the region identity key, or
  whose message is not one the signer writes.
* **digest-missing** - the digests' own chain (seq, previous digest hash) has a hole or a stray member.
* **digest-column-changed** - a digest's columns disagree with its signed message.
* **digest-mismatch** - the stored segment at a signed head has another hash: the chain up to it
  was changed, moved or re-hashed after the digest was signed.
* **segment-deleted** - a signed head's segment is not stored, though later ones of its writer are.
* **truncated** - a writer's chain ends below the head a digest recorded (its tail was cut), or
  holds no segment at all (**writer-deleted**).
* **writer-dropped** - a writer open in one digest is missing from the next (neither open nor closed).
* **written-after-close** - segments stored past the final head of a writer a digest closed.
* **writer-undigested** - segments of a writer no digest knows, older than ``grace_s`` before the
  newest digest (the digest task signs every registered writer: these were put there).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from regiond.audit import digests, segment
from regiond.crypto import sign
from regiond.domain.audit_anchor import DIGEST_LABEL_V2, Anchor
from regiond.store import audit_digests as store
from regiond.store.pool import Conn

__all__ = ["DigestCheck", "check_digests"]

GRACE_S = 60.0
_Key = tuple[uuid.UUID, int]  # (writer, segment seq)


class _Report(Protocol):
    digests_checked: int
    anchors_checked: int
    notes: list[str]
    region: str

    def add(self, kind: str, seq: int | None, detail: str, event_id: str | None = None) -> None: ...

    def add_writer(self, kind: str, writer: uuid.UUID | None, seq: int | None, detail: str) -> None: ...


@dataclass(slots=True)
class _Newest:
    seq: int
    hash: bytes
    digest: int
    closed: bool


@dataclass(frozen=True, slots=True)
class DigestCheck:
    """What ``check_digests`` saw, for the summary line."""

    digests: int
    writers: int
    newest_time: dt.datetime | None


def _signed(trusted: Sequence[bytes], row: store.DigestRow) -> bool:
    return digests.signature_valid(trusted or [row.public_key], row.message, row.signature)


class _AnchorSet(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def anchors(self) -> Sequence[Anchor]: ...


async def check_digests(
    con: Conn, report: _Report, trusted_keys: Sequence[bytes] = (), *, grace_s: float = GRACE_S,
    anchors: Sequence[_AnchorSet] = (), pruned: Mapping[uuid.UUID, int] | None = None,
) -> DigestCheck:  # fmt: skip
    """Check the region's v2 digests against its segments (in the caller's snapshot) into ``report``.

    Memory is bounded by the number of writers: the digests are read in chunks and the segments at
    their heads looked up a chunk at a time (a head repeated by the next digest is looked up once).
    ``pruned``: each writer's last segment a signed prune record removed (``regiond.audit.prune``):
    heads at or below it are not looked for.
    """
    pruned = pruned or {}
    region = report.region
    trusted = [bytes(k) for k in trusted_keys if len(k) == sign.PUBLIC_KEY_BYTES]
    summaries = {s.writer_id: s for s in await store.writer_summaries(con)}
    first_seq = await store.v1_last_position(con, region) + 1  # v2 digests number on from the v1 chain's
    prev_row: store.DigestRow | None = None
    prev: digests.Digest | None = None
    newest: dict[uuid.UUID, _Newest] = {}
    pending: list[tuple[_Key, bytes, int]] = []  # heads to look up: (writer, seq), signed hash, digest
    newest_time: dt.datetime | None = None
    held_v2 = [(a_set.name, [a for a in a_set.anchors if a.message.startswith(DIGEST_LABEL_V2)]) for a_set in anchors]
    wanted = {a.position for _, held in held_v2 for a in held}
    stored_at: dict[int, bytes] = {}  # digest seq -> SHA-256 of its stored message, for the anchored seqs
    count = 0
    async for row in store.digests(con, region):
        if row.seq in wanted:
            stored_at[row.seq] = digests.digest_hash(row.message)
        count += 1
        report.digests_checked += 1
        where = f"digest {row.seq}"
        try:
            d = digests.decode(row.message)
        except digests.DigestFormatError as exc:
            report.add("digest-forged", None, f"{where}: {exc}")
            prev_row, prev = row, None
            continue
        if not _signed(trusted, row):
            report.add("digest-forged", None, f"{where}: its signature does not verify with the region identity key")
            prev_row, prev = row, None
            continue
        columns = {
            "region": (row.region, d.region if d.region == region else None), "seq": (row.seq, d.seq),
            "digest_time": (row.digest_time, d.digest_time), "prev_hash": (row.prev_hash, d.prev_hash),
            "writers": (row.writers, len(d.heads)), "closed": (sorted(row.closed), sorted(d.closed)),
        }  # fmt: skip
        changed = [name for name, (held, signed) in columns.items() if held != signed]
        if changed:
            report.add("digest-column-changed", None, f"{where}: column {', '.join(changed)} disagrees with its signed "
                       "message")  # fmt: skip
        if prev_row is not None:
            if d.seq != prev_row.seq + 1 or d.prev_hash != digests.digest_hash(prev_row.message):
                report.add("digest-missing", None, f"digest {d.seq} does not follow digest {prev_row.seq}: a digest "
                           "was removed or inserted")  # fmt: skip
        elif d.seq != first_seq or d.prev_hash is not None:
            report.add("digest-missing", None, f"digest {d.seq} is the first stored but does not start the chain "
                       f"(digest {first_seq})")  # fmt: skip
        _check_writers(report, prev, d)
        for h in d.heads:
            last = newest.get(h.writer_id)
            if h.seq == 0:
                if h.hash != segment.writer_genesis(region, h.writer_id):
                    report.add_writer("digest-forged", h.writer_id, None, f"{where} starts it from a foreign genesis")
            elif last is not None and last.seq == h.seq:
                if last.hash != h.hash:
                    report.add_writer("digest-forged", h.writer_id, h.seq, f"{where} signs it with another hash than "
                                      f"digest {last.digest}")  # fmt: skip
                if h.closed and not last.closed:  # closed where it stood: the closing digest is the one to name
                    last.closed, last.digest = True, d.seq
                continue  # the same head as before: looked up already
            else:
                pending.append(((h.writer_id, h.seq), h.hash, d.seq))
            if last is None or h.seq >= last.seq:
                newest[h.writer_id] = _Newest(h.seq, h.hash, d.seq, h.closed)
        if len(pending) >= store.FETCH_CHUNK_ROWS:
            await _check_heads(con, report, pending, summaries, pruned)
            pending = []
        prev_row, prev, newest_time = row, d, d.digest_time
    await _check_heads(con, report, pending, summaries, pruned)
    _check_tails(report, newest, summaries, newest_time, grace_s, pruned)
    _check_anchors(report, held_v2, stored_at, prev_row.seq if prev_row is not None else 0, trusted)
    return DigestCheck(count, len(newest), newest_time)


def _check_anchors(
    report: _Report, sets: Sequence[tuple[str, Sequence[Anchor]]], stored_at: dict[int, bytes], newest: int,
    trusted: Sequence[bytes],
) -> None:  # fmt: skip
    """Every v2 digest anchored outside the database must be held by it, byte for byte: a rollback of
    the newest segments and digests (all genuine, just fewer) shows only here."""
    for name, held in sets:
        for a in held:
            if a.region != report.region:
                report.add("anchor-invalid", None, f"{name} holds a v2 anchor of region {a.region}")
                continue
            if trusted and not digests.signature_valid(trusted, a.message, a.signature):
                report.add("anchor-invalid", None, f"{name}: v2 digest {a.position}'s signature does not verify "
                           "with the region identity key")  # fmt: skip
                continue
            report.anchors_checked += 1
            hash_ = stored_at.get(a.position)
            if hash_ is None:
                where = ("past the newest stored, " if a.position > newest else "") + f"digest {newest}"
                report.add("rolled-back", None, f"v2 digest {a.position}, signed at {a.digest_time} and anchored in "
                           f"{name}, is not in the database ({where}): the newest segments and digests were "
                           "removed, or the trail restored from an older copy")  # fmt: skip
            elif hash_ != a.digest_hash:
                report.add("rolled-back", None, f"the database holds another v2 digest {a.position} than the one "
                           f"signed at {a.digest_time} and anchored in {name}: the trail was rolled back and signed "
                           "again")  # fmt: skip


def _check_writers(report: _Report, prev: digests.Digest | None, d: digests.Digest) -> None:
    if prev is None:
        return
    heads = {h.writer_id: h for h in d.heads}
    for h in prev.heads:
        now = heads.get(h.writer_id)
        if h.closed:
            if now is not None:
                report.add_writer("writer-dropped", h.writer_id, None, f"closed by digest {prev.seq}, it is open "
                                  f"again in digest {d.seq}")  # fmt: skip
        elif now is None:
            report.add_writer("writer-dropped", h.writer_id, None, f"open in digest {prev.seq}, it is missing from "
                              f"digest {d.seq} (neither open nor closed)")  # fmt: skip
        elif now.seq < h.seq:
            report.add_writer("digest-forged", h.writer_id, now.seq, f"digest {d.seq} moves its head back from "
                              f"segment {h.seq}")  # fmt: skip


async def _check_heads(
    con: Conn, report: _Report, heads: list[tuple[_Key, bytes, int]], summaries: dict[uuid.UUID, store.WriterSummary],
    pruned: Mapping[uuid.UUID, int],
) -> None:  # fmt: skip
    """The stored segment at each signed head must be the signed one (a missing tail is ``_check_tails``')."""
    heads = [h for h in heads if h[0][1] > pruned.get(h[0][0], 0)]
    if not heads:
        return
    stored = await store.segment_hashes(con, [k for k, _, _ in heads])
    for (writer_id, seq), signed, digest in heads:
        held = stored.get((writer_id, seq))
        summary = summaries.get(writer_id)
        if held is None:
            if summary is None or summary.max_seq < seq:
                continue  # the tail check reports it once per writer
            report.add_writer("segment-deleted", writer_id, seq, f"signed as a head by digest {digest}, it is not "
                              "stored")  # fmt: skip
        elif held != signed:
            report.add_writer("digest-mismatch", writer_id, seq, f"it is not the segment digest {digest} signed: the "
                              "chain up to here was changed, moved or re-hashed after signing")  # fmt: skip


def _check_tails(
    report: _Report, newest: dict[uuid.UUID, _Newest], summaries: dict[uuid.UUID, store.WriterSummary],
    newest_time: dt.datetime | None, grace_s: float, pruned: Mapping[uuid.UUID, int],
) -> None:  # fmt: skip
    """Each writer's chain must reach its newest signed head, and a closed one go no further; a
    writer no digest knows must be younger than the newest digest."""
    for writer_id, n in sorted(newest.items(), key=lambda kv: kv[0].bytes):
        summary = summaries.get(writer_id)
        have = max(summary.max_seq if summary is not None else 0, pruned.get(writer_id, 0))
        if n.seq > 0 and have == 0:
            report.add_writer("writer-deleted", writer_id, None, f"no segment is stored, digest {n.digest} recorded "
                              f"its chain up to segment {n.seq}")  # fmt: skip
        elif have < n.seq:
            report.add_writer("truncated", writer_id, have + 1, f"the chain ends at segment {have}, digest "
                              f"{n.digest} recorded it up to segment {n.seq} (its tail was cut)")  # fmt: skip
        elif n.closed and have > n.seq:
            report.add_writer("written-after-close", writer_id, n.seq + 1, f"segments {n.seq + 1}..{have} are "
                              f"stored past segment {n.seq}, where digest {n.digest} closed the writer")  # fmt: skip
    unknown = [s for s in summaries.values() if s.writer_id not in newest]
    if newest_time is None:
        if summaries:
            report.notes.append("no v2 digest is stored: the segments are protected by their writers' hash chains "
                                "only (does the region's node have its identity key?)")  # fmt: skip
        return
    cutoff = newest_time - dt.timedelta(seconds=grace_s)
    for s in sorted(unknown, key=lambda s: s.writer_id.bytes):
        if s.oldest < cutoff:
            report.add_writer("writer-undigested", s.writer_id, None, f"{s.segments} segments (events from "
                              f"{s.oldest:%Y-%m-%dT%H:%M:%SZ}) are in no digest, though digests were signed after "
                              "them")  # fmt: skip
    ahead = sum(max(0, s.max_seq - newest[s.writer_id].seq) for s in summaries.values() if s.writer_id in newest)
    if ahead:
        report.notes.append(f"{ahead} newest segments are not yet covered by a signed v2 digest (protected by "
                            "their hash chains only)")  # fmt: skip
