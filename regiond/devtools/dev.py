"""``regiond dev``: a local multi-region cluster on one machine (what ``make run`` starts).

For each region: a state directory (``regiond init``), its own PostgreSQL (embedded, or
the URL given with ``--database-url-<region>``), and one ``regiond serve`` process on its
own loopback port. Account 111122223333 is bootstrapped with an ``admin`` user whose
identity policy allows ``kms:*`` and the IAM admin operations, and its access key.
Everything is written to ``DIR/cluster.json``; running again reuses the directory, so
keys, users and access keys survive restarts.

The client endpoints are plain HTTP on loopback unless ``--tls``: then each region serves a
certificate issued by the cluster CA (``DIR/<region>/client-tls``, made once), cluster.json names
the CA as ``ca_bundle``, and the banner prints the ``AWS_CA_BUNDLE`` line the AWS CLI and SDKs read.

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
import ssl
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
    ensure_client_tls,
    migrate,
    peers_document,
    prepare_region,
    write_peers_file,
)
from regiond.devtools.postgres import LocalPostgres, free_port, port_is_free
from regiond.store.databases import ensure_database

ACCOUNT_ID = "111122223333"
ADMIN_USER = "admin"
DATABASE = "regionkms"
READY_TIMEOUT_S = 60
AWS_CONFIG = "aws-config"


REPLICATION_PORT_OFFSET = 100


def base_ports(base_port: int, index: int) -> tuple[int, int]:
    """The client and replication ports of the ``index``-th region under ``--base-port base_port``.

    One formula for ``regiond dev`` and for what is laid out like it (deploy/compose publishes
    its regions' ports so, and its test compares them with this).
    """
    return base_port + index, base_port + REPLICATION_PORT_OFFSET + index


def aws_config_text(cluster: dict[str, Any]) -> str:
    """The AWS CLI config file of ``cluster``: a ``[profile REGION]`` per region, reaching its node.

    A profile-wide ``endpoint_url`` (botocore's endpoint configuration) serves KMS and STS alike.
    Given with ``--profile``, a profile's credentials win over ``AWS_ACCESS_KEY_ID`` in the shell.
    """
    creds = cluster["credentials"]
    lines = ["# Written by `regiond dev`: AWS_CONFIG_FILE=<this file> aws --profile <region> kms list-keys"]
    for region, info in cluster["regions"].items():
        lines += ["", f"[profile {region}]", f"region = {region}", f"endpoint_url = {info['endpoint']}",
                  f"aws_access_key_id = {creds['access_key_id']}",
                  f"aws_secret_access_key = {creds['secret_access_key']}"]  # fmt: skip
        if cluster.get("ca_bundle"):
            lines.append(f"ca_bundle = {cluster['ca_bundle']}")
    return "\n".join(lines) + "\n"


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
    """The port this region's ``member`` had in the last run, if it is still free: kept so the
    printed endpoints stay valid across restarts, given up when something else took it meanwhile
    (the node would otherwise fail to bind and the whole cluster with it)."""
    text = saved.get("regions", {}).get(region, {}).get(member, "").rsplit(":", 1)[-1]
    return int(text) if text.isdigit() and port_is_free(int(text)) else None


def run_dev(
    *, regions: list[str], state_dir: Path, database_urls: dict[str, str | None], base_port: int, workers: int,
    tls: bool = False,
) -> int:  # fmt: skip
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
            if base_port:
                port, repl_port = base_ports(base_port, i)
            else:
                port = _saved_port(saved, region, "endpoint") or free_port()
                repl_port = _saved_port(saved, region, "replication_endpoint") or free_port()
            nodes.append(NodeProcess(
                region, url, rdir.resolve(), port, workers=workers, replication_port=repl_port,
                log_path=rdir / "regiond.log", env=os.environ, tls=ensure_client_tls(rdir, region, ca) if tls else None,
            ))  # fmt: skip
        document = peers_document(
            home_region=regions[0], ca=ca, regions=states, endpoints={n.region: n.replication_endpoint for n in nodes}
        )
        peers_file = write_peers_file(state_dir / "peers.json", document)
        creds = asyncio.run(_bootstrap({n.region: n.database_url for n in nodes}, states, saved))
        for node in nodes:
            node.peers_file = peers_file
            node.start()
        ca_file = (state_dir / "cluster-ca" / "ca.crt").resolve()
        probe = ssl.create_default_context(cadata=ca.cert_pem.decode()) if tls else None
        for node in nodes:
            node.wait_ready(READY_TIMEOUT_S, probe)
        region_info = {
            n.region: {"endpoint": n.endpoint, "database_url": n.database_url, "state_dir": str(n.state_dir),
                       "replication_endpoint": n.replication_endpoint}
            for n in nodes
        }  # fmt: skip
        cluster = {"account_id": ACCOUNT_ID, "regions": region_info, "credentials": creds,
                   "peers_file": str(peers_file.resolve())}  # fmt: skip
        if tls:
            cluster["ca_bundle"] = str(ca_file)
        aws_config = state_dir / AWS_CONFIG
        cluster["aws_config"] = str(aws_config.resolve())
        private_files.write_file(aws_config, aws_config_text(cluster).encode())
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
        "  (TLS, certificates from the cluster CA: AWS_CA_BUNDLE below)"
        if cluster.get("ca_bundle")
        else "  (plain HTTP on loopback, for local use only: --tls or production nodes serve TLS, docs/SECURITY.md)",
        "",
        f"cluster file: {cluster_file}",
        "",
        # The venv's bin first: the README's `aws` and `kmsclient` are the ones `make run` installed.
        f'export PATH="{Path(sys.executable).parent}:$PATH"',
        *([f"export AWS_CA_BUNDLE={cluster['ca_bundle']}"] if cluster.get("ca_bundle") else []),
        "export AWS_ACCESS_KEY_ID=" + creds["access_key_id"],
        "export AWS_SECRET_ACCESS_KEY=" + creds["secret_access_key"],
        f"export AWS_DEFAULT_REGION={first_region}",
        "",
        f"or one AWS CLI profile per region: AWS_CONFIG_FILE={cluster['aws_config']} aws --profile {first_region}"
        " kms list-keys",
        "",
        f"aws kms list-keys --endpoint-url {first['endpoint']} --region {first_region}",
        "",
        "Ctrl-C stops the cluster; `make run` again resumes it with its keys.",
    ]
    print("\n".join(lines), flush=True)
