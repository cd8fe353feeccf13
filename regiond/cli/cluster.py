"""``regiond cluster init``: every file a replicated cluster needs, made at once and without questions.

    regiond cluster init --dir DIR --region R=REPLICATION_ENDPOINT ... [--home-region R]
                         [--ca-dir CA] [--hostname R=HOST ...]

What ``regiond dev`` makes for its local cluster, for a deployment's one-shot init job (the
compose file of deploy/compose, a Kubernetes Job, a provisioning script), in ``regiond dev``'s
layout:

    CA/ca.crt, CA/ca.key            the cluster CA (``--ca-dir``, default DIR/cluster-ca); keep ca.key offline
    DIR/<region>/                   the region's state directory (``regiond init``) with its replication
                                    mTLS certificate (``tls/``, key wrapped by the region's root key)
    DIR/<region>/client-tls/        cert.pem and key.pem of the region's client endpoint, from the cluster
                                    CA for 127.0.0.1, localhost and each ``--hostname`` of that region
    DIR/peers.json                  the peers file every node reads (public material only)
    DIR/ca.crt                      the CA certificate again, for clients (``AWS_CA_BUNDLE``)

The first ``--region`` is the IAM home unless ``--home-region`` says otherwise, as in
``regiond dev``. It is idempotent: running it again keeps every key and every certificate that
is still valid for its names, so it can run at every start of a deployment. It prints one JSON
object naming what it wrote; a bad argument exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from regiond import private_files
from regiond.cli.cluster_file import UsageError
from regiond.crypto import pki

PEERS_FILE = "peers.json"
CA_BUNDLE = "ca.crt"


def _pairs(specs: list[str] | None, flag: str, what: str) -> list[tuple[str, str]]:
    out = []
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"{flag} must be REGION={what}, got {spec!r}")
        out.append((name, value))
    return out


def cmd_init(args: argparse.Namespace) -> int:
    from regiond.devtools.launcher import ClusterCA, ensure_client_tls, peers_document, prepare_region, write_peers_file

    endpoints = dict(_pairs(args.region, "--region", "REPLICATION_ENDPOINT"))
    if len(endpoints) != len(args.region):
        raise UsageError("each region may be given once")
    for name, endpoint in endpoints.items():
        if not endpoint.startswith("https://"):
            raise UsageError(f"the replication endpoint of {name} must be an https:// URL, got {endpoint!r}")
    hostnames: dict[str, list[str]] = {}
    for name, host in _pairs(args.hostname, "--hostname", "HOST"):
        if name not in endpoints:
            raise UsageError(f"--hostname names {name}, which is not a --region")
        hostnames.setdefault(name, []).append(host)
    home = args.home_region or next(iter(endpoints))
    if home not in endpoints:
        raise UsageError(f"--home-region {home} is not a --region")
    out = private_files.make_dir(Path(args.dir))
    ca = ClusterCA.ensure(Path(args.ca_dir) if args.ca_dir else out / "cluster-ca")
    states = {name: prepare_region(out / name, name, ca) for name in endpoints}
    client_tls = {
        name: ensure_client_tls(out / name, name, ca, (*pki.DEFAULT_HOSTNAMES, *hostnames.get(name, ())))
        for name in endpoints
    }
    document = peers_document(home_region=home, ca=ca, regions=states, endpoints=endpoints)
    peers = write_peers_file(out / PEERS_FILE, document)
    private_files.write_file(out / CA_BUNDLE, ca.cert_pem)
    report: dict[str, Any] = {
        "peers_file": str(peers), "ca_bundle": str(out / CA_BUNDLE), "home_region": home,
        "regions": {name: {"state_dir": str(states[name].state_dir), "replication_endpoint": endpoints[name],
                           "tls_cert": str(client_tls[name][0]), "tls_key": str(client_tls[name][1])}
                    for name in endpoints},
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    try:
        return int(args.cluster_func(args))
    except (UsageError, ValueError, OSError) as exc:
        print(f"regiond cluster: {exc}", file=sys.stderr)
        return 2


def add_cluster_parser(sub: Any) -> None:
    p = sub.add_parser("cluster", help="the files of a replicated cluster: CA, state directories, certificates, peers")
    p.set_defaults(func=cmd_cluster)
    cmds = p.add_subparsers(dest="cluster_command", required=True)
    c = cmds.add_parser("init", help="make (or complete) every file of a cluster, non-interactively")
    c.add_argument("--dir", required=True, help="where the regions' state directories and the peers file go")
    c.add_argument(
        "--region",
        action="append",
        required=True,
        help="REGION=REPLICATION_ENDPOINT, the https:// URL its peers reach its receiver at (repeatable)",
    )
    c.add_argument("--home-region", help="the IAM home region (default: the first --region)")
    c.add_argument("--ca-dir", help="the cluster CA's directory (default: DIR/cluster-ca)")
    c.add_argument(
        "--hostname",
        action="append",
        help="REGION=HOST, a DNS name or IP its client endpoint is reached at (repeatable)",
    )
    c.set_defaults(cluster_func=cmd_init)
