"""``regiond replication``: replication status, and the cluster's TLS and peers-file plumbing.

    regiond replication status     (--cluster DIR/cluster.json --region R | --database-url URL --region R)
                                   [--peers-file F] [--format table|json]
    regiond replication promote    (--cluster DIR/cluster.json --region R | --database-url URL --region R --state-dir D)
                                   [--peers-file F] (--key KEY | --all-from-region LOST) [--force]
                                   make this region's replicas primary when their primary's region is lost
                                   (replication.promote: refused while that region answers, unless --force)
    regiond replication resync-iam (--cluster DIR/cluster.json --region HOME | --database-url URL --region HOME)
                                   [--peers-file F] --to R
                                   queue the IAM home region's complete IAM for R (replication.resync)
    regiond replication make-ca    --ca-dir DIR                      the cluster CA (ca.crt, ca.key 0600)
    regiond replication issue-cert --ca-dir DIR --state-dir SDIR --region R [--hostname H ...]
                                   the region's mTLS certificate (key wrapped by the region's root key)
    regiond replication peers-file --out FILE --ca-dir DIR --iam-home R --peer R=ENDPOINT=STATE_DIR ...
                                   the peers file every node reads (public material only)

``status`` reads the region's own database, so it works whether or not a node runs: per peer
the last sequence appended, sent and acknowledged, the lag in entries and seconds and the
last error; per source the last sequence applied and the refusals. ``regiond dev`` does the
three plumbing steps itself for the local cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regiond import private_files, statedir
from regiond.cli import cluster_file
from regiond.cli.cluster_file import UsageError
from regiond.config import env
from regiond.store.pool import DATABASE_ERRORS, create_pool


@dataclass(frozen=True)
class Target:
    database_url: str
    region: str
    peers_file: Path | None


def _target(args: argparse.Namespace) -> Target:
    if not args.region:
        raise UsageError("give --region")
    peers = Path(args.peers_file) if args.peers_file else None
    if args.cluster:
        entry = cluster_file.region_entry(args.cluster, args.region)
        cluster = cluster_file.load(args.cluster)
        if peers is None and cluster.get("peers_file"):
            peers = Path(cluster["peers_file"])
        return Target(entry.database_url, args.region, peers)
    if args.database_url:
        return Target(args.database_url, args.region, peers)
    raise UsageError("give --cluster DIR/cluster.json --region R, or --database-url URL --region R")


def _table(status: dict[str, Any]) -> str:
    lines = [f"region {status['region']}", "", "outbound (this region -> peer)"]
    lines.append(f"  {'peer':<16}{'appended':>10}{'sent':>10}{'acked':>10}{'lag':>8}{'lag s':>9}  last error")
    for p in status["peers"]:
        error = f"{p['last_error']} ({p['last_error_at']})" if p["last_error"] else "-"
        lines.append(f"  {p['peer']:<16}{p['appended_seq']:>10}{p['sent_seq']:>10}{p['acked_seq']:>10}"
                     f"{p['lag_entries']:>8}{p['lag_seconds']:>9.1f}  {error}")  # fmt: skip
    lines += ["", "inbound (source -> this region)", f"  {'source':<16}{'applied':>10}{'refused':>9}  last refusal"]
    for i in status["inbound"]:
        lines.append(f"  {i['source']:<16}{i['applied_seq']:>10}{i['refused']:>9}  {i['last_refusal'] or '-'}")
    return "\n".join(lines)


async def _status(target: Target) -> dict[str, Any]:
    from replication.peers import load_topology
    from replication.status import read_status

    peers = load_topology(target.peers_file, target.region).peer_names if target.peers_file else []
    pool = await create_pool(target.database_url, min_size=1, max_size=2)
    try:
        status = await read_status(pool, target.region, peers, dt.datetime.now(dt.UTC))
    finally:
        await pool.close()
    return status.as_dict()


def cmd_status(args: argparse.Namespace) -> int:
    status = asyncio.run(_status(_target(args)))
    print(json.dumps(status, indent=2) if args.format == "json" else _table(status))
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    if args.cluster:
        return cluster_file.region_entry(args.cluster, args.region).state_dir
    raise UsageError("give --state-dir (the region's identity and replication TLS keys)")


def _mrk_id(value: str) -> str:
    """A multi-region key id, given as an id or a key ARN."""
    from regiond.domain import ids

    key_id = value.rsplit(":key/", 1)[1] if value.startswith("arn:") and ":key/" in value else value
    if ids.key_id_kind(key_id) is not ids.KeyIdKind.MULTI_REGION or not ids.is_valid_key_id(key_id):
        raise UsageError(f"--key must be a multi-Region key id (mrk-...) or its ARN, got {value!r}")
    return key_id


def _progress(line: str) -> None:
    print(f"regiond replication promote: {line}", file=sys.stderr, flush=True)


async def _promote(args: argparse.Namespace, target: Target, sdir: Path, peers_file: Path) -> int:
    import os
    import socket
    import uuid

    from regiond.audit import SegmentWriter, WriterOptions
    from regiond.audit.calls import CallRecord
    from regiond.audit.events import OPERATOR_SOURCE
    from regiond.clock import SystemClock
    from regiond.crypto import pki
    from regiond.domain.ids import key_arn
    from regiond.store.outbox import Outbox
    from replication import promote
    from replication.channel import HttpsTransport
    from replication.peers import load_region_tls, load_topology
    from replication.sender import FrameBuilder

    here = target.region
    topology = load_topology(peers_file, here)
    keyring = statedir.load_root_keyring(sdir)
    builder = FrameBuilder(region=here, keyring=keyring, identity=statedir.load_identity(sdir, keyring),
                           clock=SystemClock())  # fmt: skip
    cert, key = load_region_tls(sdir, keyring)
    transport = HttpsTransport(pki.ssl_client_context(cert, key, topology.ca_cert_pem, check_hostname=True),
                               timeout_s=args.probe_timeout)  # fmt: skip
    outbox = Outbox(region=here, peers=topology.peer_names, iam_home_region=topology.iam_home_region)
    lost: str | None = args.all_from_region
    if lost is not None and lost not in topology.regions:
        raise UsageError(f"--all-from-region {lost} is not a region of the peers file")
    if lost == here:
        raise UsageError(f"--all-from-region names {here}, the region promoted to")
    pool = await create_pool(target.database_url, min_size=1, max_size=4)
    audit: SegmentWriter | None = None
    try:
        candidates = [_mrk_id(args.key)] if args.key else await promote.replicas_of(pool, lost or "")
        primaries = {p for p in [await promote.primary_of(pool, k) for k in candidates] if p and p != here}
        for region in sorted(primaries):
            if region not in topology.regions:
                _progress(f"{region} is not in the peers file: not probed")
                continue
            _progress(f"probing {region}'s replication endpoint ({args.probe_timeout:g} s)")
            answer = await promote.probe(transport, builder, topology.regions[region], timeout_s=args.probe_timeout)
            if answer is None:
                _progress(f"{region} does not answer")
            elif not args.force:
                print(f"regiond replication promote: {region} answers on its replication endpoint ({answer}): it is "
                      "not lost; move the primary with UpdatePrimaryRegion, or give --force to promote anyway",
                      file=sys.stderr)  # fmt: skip
                return 1
            else:
                _progress(f"{region} answers ({answer}); promoting anyway (--force)")
        audit = SegmentWriter(pool, here, options=WriterOptions())
        await audit.start()  # before anything changes: no promotion goes unaudited
        promoted: list[str] = []
        already: list[str] = []
        refused: list[dict[str, str]] = []
        for key_id in candidates:
            now = dt.datetime.now(dt.UTC)
            try:
                done = await promote.promote_key(pool, outbox, key_id, lost_region=lost, now=now)
            except promote.PromoteRefused as exc:
                _progress(f"{key_id}: refused: {exc}")
                refused.append({"key_id": key_id, "reason": str(exc)})
                continue
            if done.already:
                _progress(f"{key_id}: {here} is already its primary")
                already.append(key_id)
                continue
            _progress(f"{key_id}: primary {done.previous_primary} -> {here} at epoch {done.epoch}, "
                      f"replicas {', '.join(done.replicas) or '-'}")  # fmt: skip
            await audit.submit(CallRecord(
                operation="PromoteReplica", event_source=OPERATOR_SOURCE, request_id=str(uuid.uuid4()),
                event_time=now, region=here, source_ip=socket.gethostname(),
                user_agent=f"regiond replication promote (uid {os.getuid()})",
                params={"KeyId": key_id, "PreviousPrimaryRegion": done.previous_primary, "Forced": bool(args.force)},
                result={"PrimaryRegion": here, "ReplicaRegions": list(done.replicas), "Epoch": done.epoch},
                resources=[key_arn(here, done.account, key_id)],
            ))  # fmt: skip
            promoted.append(key_id)
    finally:
        if audit is not None:
            await audit.close()
        await transport.close()
        await pool.close()
    print(json.dumps({"region": here, "promoted": promoted, "already_primary": already, "refused": refused,
                      "forced": bool(args.force)}))  # fmt: skip
    return 1 if refused else 0


def cmd_promote(args: argparse.Namespace) -> int:
    from regiond.audit import AuditUnavailableError

    target = _target(args)
    if bool(args.key) == bool(args.all_from_region):
        raise UsageError("name the key (--key KEY) or every key of a lost region (--all-from-region R), one of them")
    if target.peers_file is None:
        raise UsageError("give --peers-file (the region's peers file)")
    try:
        return asyncio.run(_promote(args, target, _state_dir(args), target.peers_file))
    except AuditUnavailableError as exc:
        print(f"regiond replication promote: the audit trail cannot be written, stopped: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # a state or peers file: one line and exit 2 (cmd_replication)
    except DATABASE_ERRORS as exc:
        print(f"regiond replication promote: database error: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
        return 1


async def _resync_iam(target: Target, peers_file: Path, dest: str) -> dict[str, Any]:
    from replication.peers import load_topology
    from replication.resync import resync_iam

    topology = load_topology(peers_file, target.region)
    pool = await create_pool(target.database_url, min_size=1, max_size=2)
    try:
        done = await resync_iam(pool, region=target.region, iam_home_region=topology.iam_home_region,
                                peers=topology.peer_names, dest=dest)  # fmt: skip
    finally:
        await pool.close()
    return {
        "region": target.region, "to": done.dest, "accounts": done.accounts, "principals": done.principals,
        "access_keys": done.access_keys, "policies": done.policies, "seq": [done.first_seq, done.last_seq],
    }  # fmt: skip


def cmd_resync_iam(args: argparse.Namespace) -> int:
    from replication.resync import ResyncRefused

    target = _target(args)
    if target.peers_file is None:
        raise UsageError("give --peers-file (the IAM home region's peers file)")
    try:
        result = asyncio.run(_resync_iam(target, target.peers_file, args.to))
    except ResyncRefused as exc:
        print(f"regiond replication resync-iam: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except DATABASE_ERRORS as exc:
        print(f"regiond replication resync-iam: database error: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def cmd_make_ca(args: argparse.Namespace) -> int:
    from replication.peers import ensure_cluster_ca

    ensure_cluster_ca(Path(args.ca_dir))
    print(json.dumps({"ca_cert": str(Path(args.ca_dir) / "ca.crt")}))
    return 0


def cmd_issue_cert(args: argparse.Namespace) -> int:
    from regiond.crypto import pki
    from replication.peers import ensure_cluster_ca, ensure_region_cert

    ca_cert, ca_key = ensure_cluster_ca(Path(args.ca_dir))
    sdir = Path(args.state_dir)
    keyring = statedir.load_root_keyring(sdir)
    ensure_region_cert(sdir, keyring, ca_cert, ca_key, args.region, tuple(args.hostname or pki.DEFAULT_HOSTNAMES))
    print(json.dumps({"region": args.region, "cert": str(statedir.region_tls_cert_path(sdir))}))
    return 0


def cmd_peers_file(args: argparse.Namespace) -> int:
    from replication.peers import ensure_cluster_ca, topology_document

    ca_cert, _ = ensure_cluster_ca(Path(args.ca_dir))
    regions: dict[str, tuple[str, bytes, bytes]] = {}
    for spec in args.peer:
        name, _, rest = spec.partition("=")
        endpoint, _, pub_dir = rest.rpartition("=")
        if not name or not endpoint or not pub_dir:
            raise UsageError(f"--peer must be REGION=ENDPOINT=STATE_DIR, got {spec!r}")
        d = Path(pub_dir)
        regions[name] = (endpoint, statedir.identity_public_key(d), statedir.encryption_public_key(d))
    document = topology_document(iam_home_region=args.iam_home, ca_cert_pem=ca_cert, regions=regions)
    private_files.write_file(Path(args.out), json.dumps(document, indent=2).encode() + b"\n")
    print(json.dumps({"peers_file": args.out, "regions": sorted(regions)}))
    return 0


def cmd_replication(args: argparse.Namespace) -> int:
    from replication.peers import PeersFileError

    try:
        return int(args.replication_func(args))
    except (UsageError, PeersFileError, OSError) as exc:
        print(f"regiond replication: {exc}", file=sys.stderr)
        return 2


def add_replication_parser(sub: Any) -> None:
    p = sub.add_parser("replication", help="replication status, cluster CA, region certificates, peers file")
    p.set_defaults(func=cmd_replication)
    cmds = p.add_subparsers(dest="replication_command", required=True)

    c = cmds.add_parser("status", help="per peer: sent, acknowledged, lag, last error; per source: applied")
    c.add_argument("--cluster", help="cluster.json written by `regiond dev` (with --region)")
    c.add_argument("--database-url", default=env("DATABASE_URL"))
    c.add_argument("--region", default=env("REGION"))
    c.add_argument("--peers-file", default=env("PEERS_FILE"), help="list peers that have no cursor yet too")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(replication_func=cmd_status)

    c = cmds.add_parser("promote", help="make this region's replicas primary when their primary's region is lost")
    c.add_argument("--cluster", help="cluster.json written by `regiond dev` (with --region)")
    c.add_argument("--database-url", default=env("DATABASE_URL"))
    c.add_argument("--region", default=env("REGION"), help="the surviving region whose replicas become primary")
    c.add_argument("--state-dir", default=env("STATE_DIR"), help="that region's state directory")
    c.add_argument("--peers-file", default=env("PEERS_FILE"))
    c.add_argument("--key", help="the multi-Region key (mrk-... or its ARN)")
    c.add_argument("--all-from-region", metavar="R", help="every replica here whose primary is in region R")
    c.add_argument("--force", action="store_true", help="promote even though the old primary's region answers")
    c.add_argument("--probe-timeout", type=float, default=5.0, help="seconds to wait for the old primary's answer")
    c.set_defaults(replication_func=cmd_promote)

    c = cmds.add_parser("resync-iam", help="queue the IAM home region's complete IAM for a region (one added)")
    c.add_argument("--cluster", help="cluster.json written by `regiond dev` (with --region)")
    c.add_argument("--database-url", default=env("DATABASE_URL"))
    c.add_argument("--region", default=env("REGION"), help="the IAM home region (whose database is read)")
    c.add_argument("--peers-file", default=env("PEERS_FILE"))
    c.add_argument("--to", required=True, metavar="REGION", help="the region to send it to")
    c.set_defaults(replication_func=cmd_resync_iam)

    c = cmds.add_parser("make-ca", help="create the cluster CA (once per cluster)")
    c.add_argument("--ca-dir", required=True)
    c.set_defaults(replication_func=cmd_make_ca)

    c = cmds.add_parser("issue-cert", help="issue a region's mTLS certificate from the cluster CA")
    c.add_argument("--ca-dir", required=True)
    c.add_argument("--state-dir", required=True)
    c.add_argument("--region", required=True)
    c.add_argument("--hostname", action="append", help="a DNS name or IP the region is reached at (repeatable)")
    c.set_defaults(replication_func=cmd_issue_cert)

    c = cmds.add_parser("peers-file", help="write the peers file from each region's public keys")
    c.add_argument("--out", required=True)
    c.add_argument("--ca-dir", required=True)
    c.add_argument("--iam-home", required=True)
    c.add_argument("--peer", action="append", required=True, help="REGION=ENDPOINT=STATE_DIR (repeatable)")
    c.set_defaults(replication_func=cmd_peers_file)
