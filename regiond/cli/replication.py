"""``regiond replication``: replication status, and the cluster's TLS and peers-file plumbing.

    regiond replication status     (--cluster DIR/cluster.json --region R | --database-url URL --region R)
                                   [--peers-file F] [--format table|json]
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
from regiond.store.pool import create_pool


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
