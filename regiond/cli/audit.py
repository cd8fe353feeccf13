"""``regiond audit``: verify, query and export a region's audit trail.

Which database (on every subcommand, as the other operator commands):
  --cluster DIR/cluster.json --region R   the region's database and state dir from the cluster file
  --database-url URL [--region R]         one database (every region found in it unless --region)
Which key digests must be signed with (``verify``) and exports are signed with (``export``):
  the region's ``identity.ed25519`` in --state-dir (or the cluster's state dir for the region);
  ``verify`` also takes --public-key (hex, or a file holding the raw 32 bytes), repeatable.
Which anchors (digests held outside the database, docs/AUDIT.md "Anchors") ``verify`` checks:
  the anchor file in the state dir, every --anchor FILE, and with --cluster the copies the
  other regions of the cluster hold; ``anchors`` prints the copies a database holds of a region's.

    regiond audit verify  [--from T] [--to T] [--anchor FILE]... [--format text|json]   exit 1 on any finding
    regiond audit anchors --source R                       (another region's anchors held here, as a file)
    regiond audit query   [--event-name N] [--key K] [--principal ARN] [--error-code C]
                          [--since T] [--until T] [--limit N] [--format json|table]
    regiond audit export  --out DIR [--from T] [--to T] [--bucket B] [--trail-name N]   (CloudTrail files)
    regiond audit prune   --before T [--anchor FILE]...    (v2 retention; needs the state dir: it signs)

Times are ISO 8601 (``2024-05-01T12:00:00Z``) or relative to now (``90s``, ``30m``, ``1h``, ``7d``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from regiond import statedir
from regiond.cli import cluster_file
from regiond.cli.cluster_file import UsageError
from regiond.config import env

EXIT_FINDINGS = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Target:
    database_url: str
    regions: list[str]  # empty: every region found in the database
    state_dir: Path | None
    peers: tuple[cluster_file.RegionEntry, ...] = ()  # the cluster's other regions (--cluster)


def _target(args: argparse.Namespace) -> Target:
    state_dir = Path(args.state_dir) if args.state_dir else None
    if args.cluster:
        entry = cluster_file.region_entry(args.cluster, args.region)
        peers = tuple(e for e in cluster_file.region_entries(args.cluster) if e.region != entry.region)
        return Target(entry.database_url, [entry.region], state_dir or entry.state_dir, peers)
    if args.database_url:
        return Target(args.database_url, [args.region] if args.region else [], state_dir)
    raise UsageError("give --cluster DIR/cluster.json --region R, or --database-url URL")


def _time(value: str | None, now: dt.datetime) -> dt.datetime | None:
    from regiond.audit.query import parse_time

    if value is None:
        return None
    try:
        return parse_time(value, now)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _trusted_keys(args: argparse.Namespace, target: Target) -> list[bytes]:
    keys: list[bytes] = []
    for value in args.public_key or []:
        path = Path(value)
        if path.is_file():
            keys.append(path.read_bytes())
        else:
            try:
                keys.append(bytes.fromhex(value))
            except ValueError:
                raise UsageError(f"--public-key {value[:20]!r} is neither a file nor hex") from None
    if target.state_dir is not None:
        try:
            keys.append(statedir.identity_public_key(target.state_dir))
        except OSError:
            raise UsageError(f"no identity.ed25519.pub in the state dir {target.state_dir.name!r}") from None
    for key in keys:
        if len(key) != 32:
            raise UsageError("a public key must be 32 raw bytes (64 hex digits)")
    return keys


def _signer(target: Target) -> Any:
    if target.state_dir is None:
        return None
    from regiond.audit import load_signer
    from regiond.config import Settings

    return load_signer(Settings(region="", database_url=target.database_url, state_dir=target.state_dir,
                                root_key_b64=env("ROOT_KEY")))  # fmt: skip


async def _regions(pool: Any, target: Target) -> list[str]:
    from regiond.audit.verify_segments import trail_regions
    from regiond.store.pool import connection

    if target.regions:
        return target.regions
    async with connection(pool) as con:
        return await trail_regions(con)


def _anchor_files(args: argparse.Namespace, target: Target) -> list[Any]:
    """The anchor files to check: the state dir's own (if it has one) and every ``--anchor``."""
    from regiond.audit.anchors import ANCHOR_FILE_NAME, V2_ANCHOR_FILE_NAME, read_anchor_file
    from regiond.audit.verify import AnchorSet

    paths = [Path(p) for p in args.anchor or []]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"--anchor {path.name}: no such file")
    for own in (V2_ANCHOR_FILE_NAME, ANCHOR_FILE_NAME):  # v1 and v2 digests' anchors (each check takes its own)
        if target.state_dir is not None and (target.state_dir / own).is_file():
            paths.insert(0, target.state_dir / own)
    sets = []
    for path in paths:
        read = read_anchor_file(path)
        sets.append(AnchorSet(f"the anchor file {path}", read.anchors, read.bad_lines))
    return sets


async def _peer_anchors(target: Target, region: str) -> list[Any]:
    """What every other region of the cluster holds of ``region``'s digests (pushed by replication)."""
    from regiond.audit.verify import AnchorSet
    from regiond.domain.audit_anchor import AnchorError, parse_anchor
    from regiond.store import audit as audit_store
    from regiond.store.pool import connection, create_pool

    sets = []
    for peer in target.peers:
        pool = await create_pool(peer.database_url, min_size=1, max_size=1)
        try:
            async with connection(pool) as con:
                held = await audit_store.peer_anchors(con, region)
        finally:
            await pool.close()
        anchors, bad = [], []
        for number, (message, signature) in enumerate(held, start=1):
            try:
                anchors.append(parse_anchor(message, signature))
            except AnchorError as exc:
                bad.append((number, str(exc)))
        sets.append(AnchorSet(f"region {peer.region}'s copy", anchors, bad))
    return sets


async def _verify(args: argparse.Namespace, target: Target, pool: Any) -> int:
    from regiond.audit.verify import verify_region

    now = dt.datetime.now(dt.UTC)
    since, until = _time(args.since, now), _time(args.until, now)
    keys = _trusted_keys(args, target)
    files = _anchor_files(args, target)
    reports = []
    for region in await _regions(pool, target):
        anchors = [*files, *await _peer_anchors(target, region)]
        reports.append(await verify_region(pool, region, trusted_keys=keys, since=since, until=until,
                                           anchors=anchors))  # fmt: skip
    if args.format == "json":
        for r in reports:
            print(json.dumps({"region": r.region, "ok": r.ok, "firstSeq": r.first_seq, "lastSeq": r.last_seq,
                              "eventsChecked": r.events_checked, "digestsChecked": r.digests_checked,
                              "anchorsChecked": r.anchors_checked, "writersChecked": r.writers_checked,
                              "segmentsChecked": r.segments_checked,
                              "findings": [asdict(f) for f in r.findings], "notes": r.notes}))  # fmt: skip
    else:
        if not keys:
            print("note: no --state-dir or --public-key: digest signatures are checked against the keys "
                  "recorded in the database")  # fmt: skip
        for r in reports:
            for f in r.findings:
                print(f.line())
            for note in r.notes:
                print(f"{r.region}: note: {note}")
            verdict = "OK" if r.ok else f"FAILED ({len(r.findings)} findings)"
            print(f"{r.region}: {verdict}: {r.events_checked} events of the legacy chain (seq {r.first_seq}.."
                  f"{r.last_seq}), {r.segments_checked} segments of {r.writers_checked} writers, "
                  f"{r.digests_checked} signed digests, {r.anchors_checked} anchors checked")  # fmt: skip
    if not reports:
        print("no audit trail found", file=sys.stderr)
    return 0 if all(r.ok for r in reports) else EXIT_FINDINGS


async def _query(args: argparse.Namespace, target: Target, pool: Any) -> int:
    from regiond.audit.query import EventFilter, find, render_json, render_table

    now = dt.datetime.now(dt.UTC)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    rows = await find(pool, EventFilter(
        region=target.regions[0] if len(target.regions) == 1 else None, event_name=args.event_name, key=args.key,
        principal_arn=args.principal, since=_time(args.since, now), until=_time(args.until, now),
        error_code=args.error_code, limit=args.limit,
    ))  # fmt: skip
    if args.format == "table":
        print(render_table(rows))
    else:
        for line in render_json(rows):
            print(line)
    return 0


async def _export(args: argparse.Namespace, target: Target, pool: Any) -> int:
    from regiond.audit.export import export_region

    now = dt.datetime.now(dt.UTC)
    if not _BUCKET.match(args.bucket) or not _TRAIL.match(args.trail_name):
        raise UsageError("--bucket is an S3 bucket name (3-63 of a-z 0-9 . -), --trail-name 1-128 of A-Z a-z 0-9 . _ -")
    signer = _signer(target)
    if signer is None:
        print("note: no --state-dir: the exported digests are not signed", file=sys.stderr)
    files = records = digests = 0
    for region in await _regions(pool, target):
        result = await export_region(pool, region, Path(args.out), since=_time(args.since, now),
                                     until=_time(args.until, now), signer=signer, bucket=args.bucket,
                                     trail=args.trail_name, now=now)  # fmt: skip
        for f in result.files:
            print(f"{f.key} ({f.records} records)")
        for key in result.digests:
            print(key)
        files, records, digests = files + len(result.files), records + result.records, digests + len(result.digests)
    print(f"exported {records} records in {files} log files and {digests} digest files (whole hours ended by "
          f"{_time(args.until, now) or now:%Y-%m-%dT%H:%M:%SZ})", file=sys.stderr)  # fmt: skip
    return 0


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRAIL = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


async def _anchors(args: argparse.Namespace, target: Target, pool: Any) -> int:
    from regiond.domain.audit_anchor import AnchorError, parse_anchor
    from regiond.store import audit as audit_store
    from regiond.store.pool import connection

    async with connection(pool) as con:
        held = await audit_store.peer_anchors(con, args.source)
    for message, signature in held:
        try:
            sys.stdout.write(parse_anchor(message, signature).line().decode())
        except AnchorError as exc:
            print(f"skipped an unreadable anchor: {exc}", file=sys.stderr)
    print(f"{len(held)} anchors of {args.source}", file=sys.stderr)
    return 0


async def _prune(args: argparse.Namespace, target: Target, pool: Any) -> int:
    from regiond.audit.prune import PruneRefusedError, prune

    now = dt.datetime.now(dt.UTC)
    before = _time(args.before, now)
    assert before is not None
    if before > now:
        raise UsageError("--before must not be in the future")
    signer = _signer(target)
    if signer is None:
        raise UsageError("prune signs its record with the region identity key: give --state-dir (and the root key)")
    regions = await _regions(pool, target)
    if len(regions) != 1:
        raise UsageError("prune works on one region: give --region")
    region = regions[0]
    anchors = [a for s in [*_anchor_files(args, target), *await _peer_anchors(target, region)] for a in s.anchors]
    try:
        result = await prune(pool, region, signer, before, anchors, now=now)
    except PruneRefusedError as exc:
        print(f"regiond audit prune: {region}: refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    if result is None:
        print(f"{region}: nothing to prune before {before:%Y-%m-%dT%H:%M:%SZ} that an anchored digest covers")
    else:
        print(
            f"{region}: pruned {result.segments} segments of {result.writers} writers with events before "
            f"{before:%Y-%m-%dT%H:%M:%SZ} (prune record {result.seq}, covered by digest {result.digest})"
        )
    return 0


async def _run(args: argparse.Namespace) -> int:
    from regiond.store.pool import create_pool

    target = _target(args)
    pool = await create_pool(target.database_url, min_size=1, max_size=2)
    try:
        command = {"verify": _verify, "query": _query, "export": _export, "anchors": _anchors,
                   "prune": _prune}[args.audit_command]  # fmt: skip
        return await command(args, target, pool)
    finally:
        await pool.close()


def cmd_audit(args: argparse.Namespace) -> int:
    from regiond.store.pool import DATABASE_ERRORS

    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"regiond audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"regiond audit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DATABASE_ERRORS as exc:  # the database failed mid-way (or is failing over): one line, no traceback
        print(f"regiond audit: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", help="cluster.json written by `regiond dev` (with --region)")
    p.add_argument("--database-url", default=env("DATABASE_URL"))
    p.add_argument("--region", default=None, help="the region (default with --database-url: every region)")
    p.add_argument("--state-dir", default=env("STATE_DIR"), help="the region's state dir (identity key)")


def add_audit_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="verify, query and export the audit trail")
    p.set_defaults(func=cmd_audit)
    cmds = p.add_subparsers(dest="audit_command", required=True)

    c = cmds.add_parser("verify", help="check the hash chain and signed digests; exit 1 on any finding")
    _common(c)
    c.add_argument("--public-key", action="append", help="trusted region identity key: hex or a file (repeatable)")
    c.add_argument("--from", dest="since", help="first event time (ISO 8601 or 1h, 7d ...)")
    c.add_argument("--to", dest="until", help="end of the time range (exclusive)")
    c.add_argument("--anchor", action="append", help="an anchor file (a node's audit-anchors.jsonl, or the "
                   "output of `audit anchors`) whose digests the database must hold (repeatable)")  # fmt: skip
    c.add_argument("--format", choices=("text", "json"), default="text")

    c = cmds.add_parser("query", help="find events; JSON lines (one event per line) or a table")
    _common(c)
    c.add_argument("--event-name")
    c.add_argument("--key", help="key id or key ARN")
    c.add_argument("--principal", help="principal ARN")
    c.add_argument("--error-code")
    c.add_argument("--since", help="ISO 8601 or 1h, 30m, 7d ...")
    c.add_argument("--until")
    c.add_argument("--limit", type=int, default=1000)
    c.add_argument("--format", choices=("json", "table"), default="json")

    c = cmds.add_parser("anchors", help="print the anchors this database holds of another region's digests")
    _common(c)
    c.add_argument("--source", required=True, help="the region whose anchors to print")

    c = cmds.add_parser("prune", help="remove whole v2 segments older than --before that an anchored digest "
                        "covers, recorded in a prune record signed with the region identity key")  # fmt: skip
    _common(c)
    c.add_argument("--before", required=True, help="remove segments whose events are all older (ISO 8601 or 90d ...)")
    c.add_argument("--anchor", action="append", help="an anchor file whose digests may cover what is pruned "
                   "(besides the state dir's and, with --cluster, the peers' copies; repeatable)")  # fmt: skip

    c = cmds.add_parser("export", help="write CloudTrail log files and digest files (whole UTC hours) under OUT")
    _common(c)
    c.add_argument("--out", required=True, help="output directory: the root of the bucket the files would go to")
    c.add_argument("--from", dest="since", help="first hour (floored to the hour; default: the first event's)")
    c.add_argument("--to", dest="until", help="export the hours that ended by then (default: now)")
    c.add_argument("--bucket", default="regionkms-audit", help="the S3 bucket the digests name")
    c.add_argument("--trail-name", default="regionkms", help="the trail name in digest file names")
