"""``regiond dev``: a local multi-region cluster on one machine (what ``make run`` starts).

For each region: a state directory (``regiond init``), its own PostgreSQL (embedded, or
the URL given with ``--database-url-<region>``), and one ``regiond serve`` process on its
own loopback port. Account 111122223333 is bootstrapped with an ``admin`` user whose
identity policy allows ``kms:*`` and the IAM admin operations, and its access key.
Everything is written to ``DIR/cluster.json``; running again reuses the directory, so
keys, users and access keys survive restarts.

The regions form one replicated cluster (``replication/``): a cluster CA in ``DIR/cluster-ca``,
each region's mTLS certificate in its state directory, a replication receiver per region on
its own loopback port, and ``DIR/peers.json`` naming them all, with the first region as the
IAM home. cluster.json gains ``peers_file`` and, per region, ``replication_endpoint``.

cluster.json holds the admin's secret access key and the logs may hold anything a node says,
so everything under DIR is readable by its owner only (files 0600, directories 0700;
regiond.private_files). The one exception: run as root, the local PostgreSQL runs as an
unprivileged user, and the directories on the way to its data directory let that user's
group (and only it) pass through (0710).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from regiond import private_files
from regiond.devtools.launcher import (
    ClusterCA,
    NodeProcess,
    RegionState,
    bootstrap_admin,
    migrate,
    peers_document,
    prepare_region,
    write_peers_file,
)
from regiond.devtools.postgres import LocalPostgres, free_port
from regiond.store.databases import ensure_database

ACCOUNT_ID = "111122223333"
ADMIN_USER = "admin"
DATABASE = "regionkms"
READY_TIMEOUT_S = 60


async def _bootstrap(
    region_dbs: dict[str, str], states: dict[str, RegionState], saved: dict[str, Any]
) -> dict[str, str]:
    """Create the account, admin user, policy and access key in every region (idempotent)."""
    creds: dict[str, str] = dict(saved.get("credentials") or {})
    for region, url in region_dbs.items():
        await migrate(url)
        known = (creds["access_key_id"], creds["secret_access_key"]) if creds else None
        admin = await bootstrap_admin(
            url, states[region].state_dir, account_id=ACCOUNT_ID, user_name=ADMIN_USER, access_key=known
        )
        creds = {"access_key_id": admin.access_key_id, "secret_access_key": admin.secret_access_key}
    return creds


def _saved_port(saved: dict[str, Any], region: str, member: str) -> int | None:
    text = saved.get("regions", {}).get(region, {}).get(member, "").rsplit(":", 1)[-1]
    return int(text) if text.isdigit() else None


def run_dev(
    *, regions: list[str], state_dir: Path, database_urls: dict[str, str | None], base_port: int, workers: int
) -> int:
    private_files.restrict_umask()  # PostgreSQL's files, the nodes' logs: nothing readable by others
    private_files.make_dir(state_dir)
    cluster_file = state_dir / "cluster.json"
    saved: dict[str, Any] = json.loads(cluster_file.read_text()) if cluster_file.exists() else {}
    servers: list[LocalPostgres] = []
    nodes: list[NodeProcess] = []
    states: dict[str, RegionState] = {}
    try:
        ca = ClusterCA.ensure(state_dir / "cluster-ca")
        for i, region in enumerate(regions):
            rdir = state_dir / region
            states[region] = prepare_region(rdir, region, ca)
            url = database_urls.get(region)
            if not url:
                pg = LocalPostgres(rdir / "postgres", private_root=state_dir)
                servers.append(pg)
                url = asyncio.run(ensure_database(pg.start(), DATABASE))
            port = base_port + i if base_port else _saved_port(saved, region, "endpoint") or free_port()
            repl_port = (
                base_port + 100 + i if base_port else _saved_port(saved, region, "replication_endpoint") or free_port()
            )
            nodes.append(NodeProcess(
                region, url, rdir.resolve(), port, workers=workers, replication_port=repl_port,
                log_path=rdir / "regiond.log", env=os.environ,
            ))  # fmt: skip
        document = peers_document(
            home_region=regions[0], ca=ca, regions=states, endpoints={n.region: n.replication_endpoint for n in nodes}
        )
        peers_file = write_peers_file(state_dir / "peers.json", document)
        creds = asyncio.run(_bootstrap({n.region: n.database_url for n in nodes}, states, saved))
        for node in nodes:
            node.peers_file = peers_file
            node.start()
        for node in nodes:
            node.wait_ready(READY_TIMEOUT_S)
        region_info = {
            n.region: {"endpoint": n.endpoint, "database_url": n.database_url, "state_dir": str(n.state_dir),
                       "replication_endpoint": n.replication_endpoint}
            for n in nodes
        }  # fmt: skip
        cluster = {"account_id": ACCOUNT_ID, "regions": region_info, "credentials": creds,
                   "peers_file": str(peers_file.resolve())}  # fmt: skip
        private_files.write_file(cluster_file, json.dumps(cluster, indent=2).encode())
        _print_welcome(cluster, cluster_file)
        stop = {"now": False}

        def on_signal(_signum: int, _frame: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop["now"] and all(n.is_running() for n in nodes):
            time.sleep(0.2)
        return 0
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.stop()
        for pg in servers:
            pg.stop()
        print("regionkms dev cluster stopped", flush=True)


def _print_welcome(cluster: dict[str, Any], cluster_file: Path) -> None:
    creds = cluster["credentials"]
    first_region, first = next(iter(cluster["regions"].items()))
    lines = ["", "regionkms dev cluster is up:"]
    for region, info in cluster["regions"].items():
        lines.append(f"  {region:<16} {info['endpoint']}")
    lines += [
        "  (plain HTTP on loopback, for local use only: production nodes serve TLS, docs/SECURITY.md)",
        "",
        f"cluster file: {cluster_file}",
        "",
        # The venv's bin first: the README's `aws` and `kmsclient` are the ones `make run` installed.
        f'export PATH="{Path(sys.executable).parent}:$PATH"',
        "export AWS_ACCESS_KEY_ID=" + creds["access_key_id"],
        "export AWS_SECRET_ACCESS_KEY=" + creds["secret_access_key"],
        f"export AWS_DEFAULT_REGION={first_region}",
        "",
        f"aws kms list-keys --endpoint-url {first['endpoint']} --region {first_region}",
        "",
        "Ctrl-C stops the cluster; `make run` again resumes it with its keys.",
    ]
    print("\n".join(lines), flush=True)
