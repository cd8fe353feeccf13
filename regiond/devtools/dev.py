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
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from regiond import private_files
from regiond.crypto.keyring import load_file_keyring
from regiond.devtools.postgres import LocalPostgres, free_port
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.statedir import init_state_dir
from regiond.store import migrate as migrations
from regiond.store.pool import create_pool
from replication.peers import ensure_cluster_ca, ensure_region_cert, topology_document

ACCOUNT_ID = "111122223333"
ADMIN_USER = "admin"
ADMIN_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Admin", "Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}],
    }
)
DATABASE = "regionkms"
READY_TIMEOUT_S = 60


async def _ensure_database(admin_url: str, name: str) -> str:
    import asyncpg

    con = await asyncpg.connect(admin_url)
    try:
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def _bootstrap(region_dbs: dict[str, str], state_dir: Path, saved: dict[str, Any]) -> dict[str, str]:
    """Create the account, admin user, policy and access key in every region (idempotent)."""
    creds: dict[str, str] = dict(saved.get("credentials") or {})
    arn = principal_arn(ACCOUNT_ID, PrincipalKind.USER, ADMIN_USER)
    for region, url in region_dbs.items():
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await migrations.migrate(pool)
            iam = IamService(pool, load_file_keyring(state_dir / region / "root.key"))
            await iam.ensure_account(ACCOUNT_ID)
            if not any(p.name == ADMIN_USER for p in await iam.list_principals(ACCOUNT_ID, PrincipalKind.USER)):
                await iam.create_principal(ACCOUNT_ID, PrincipalKind.USER, ADMIN_USER)
            await iam.put_identity_policy(arn, "admin", ADMIN_POLICY)
            if not creds:
                new = await iam.create_access_key(arn)
                creds = {"access_key_id": new.access_key_id, "secret_access_key": new.secret_access_key}
            else:
                await iam.import_access_key(arn, creds["access_key_id"], creds["secret_access_key"])
        finally:
            await pool.close()
    return creds


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node for {endpoint} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(endpoint + "/readyz", timeout=1) as r:  # noqa: S310
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"node at {endpoint} not ready after {READY_TIMEOUT_S}s")


def run_dev(
    *, regions: list[str], state_dir: Path, database_urls: dict[str, str | None], base_port: int, workers: int
) -> int:
    private_files.restrict_umask()  # PostgreSQL's files, the nodes' logs: nothing readable by others
    private_files.make_dir(state_dir)
    cluster_file = state_dir / "cluster.json"
    saved: dict[str, Any] = json.loads(cluster_file.read_text()) if cluster_file.exists() else {}
    servers: list[LocalPostgres] = []
    nodes: list[subprocess.Popen[bytes]] = []
    region_info: dict[str, dict[str, Any]] = {}
    try:
        dbs: dict[str, str] = {}
        ca_cert, ca_key = ensure_cluster_ca(state_dir / "cluster-ca")
        for i, region in enumerate(regions):
            rdir = state_dir / region
            init_state_dir(rdir, region=region)
            ensure_region_cert(rdir, load_file_keyring(rdir / "root.key"), ca_cert, ca_key, region)
            url = database_urls.get(region)
            if not url:
                pg = LocalPostgres(rdir / "postgres", private_root=state_dir)
                servers.append(pg)
                url = asyncio.run(_ensure_database(pg.start(), DATABASE))
            dbs[region] = url
            old_port = saved.get("regions", {}).get(region, {}).get("endpoint", "").rsplit(":", 1)[-1]
            port = base_port + i if base_port else int(old_port) if old_port.isdigit() else free_port()
            old_repl = saved.get("regions", {}).get(region, {}).get("replication_endpoint", "").rsplit(":", 1)[-1]
            repl_port = base_port + 100 + i if base_port else int(old_repl) if old_repl.isdigit() else free_port()
            region_info[region] = {
                "endpoint": f"http://127.0.0.1:{port}",
                "database_url": url,
                "state_dir": str(rdir.resolve()),
                "replication_endpoint": f"https://127.0.0.1:{repl_port}",
            }
        peers_file = _write_peers_file(state_dir, regions, region_info, ca_cert)
        creds = asyncio.run(_bootstrap(dbs, state_dir, saved))
        for region, info in region_info.items():
            port = info["endpoint"].rsplit(":", 1)[1]
            cmd = [
                sys.executable,
                "-m",
                "regiond",
                "serve",
                "--plain-http",
                "--region",
                region,
                "--database-url",
                info["database_url"],
                "--listen",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--state-dir",
                info["state_dir"],
                "--peers-file",
                str(peers_file),
                "--replication-listen",
                "127.0.0.1:" + info["replication_endpoint"].rsplit(":", 1)[1],
            ]
            with private_files.open_append(state_dir / region / "regiond.log") as log:
                nodes.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        for proc, info in zip(nodes, region_info.values(), strict=True):
            _wait_ready(info["endpoint"], proc)
        cluster = {"account_id": ACCOUNT_ID, "regions": region_info, "credentials": creds,
                   "peers_file": str(peers_file.resolve())}  # fmt: skip
        private_files.write_file(cluster_file, json.dumps(cluster, indent=2).encode())
        _print_welcome(cluster, cluster_file)
        stop = {"now": False}

        def on_signal(_signum: int, _frame: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop["now"] and all(p.poll() is None for p in nodes):
            time.sleep(0.2)
        return 0
    finally:
        for p in nodes:
            if p.poll() is None:
                p.terminate()
        for p in nodes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        for pg in servers:
            pg.stop()
        print("regionkms dev cluster stopped", flush=True)


def _write_peers_file(
    state_dir: Path, regions: list[str], region_info: dict[str, dict[str, Any]], ca_cert: bytes
) -> Path:
    """DIR/peers.json: every region's replication endpoint and public keys; IAM home = first region."""
    public = {
        region: (
            info["replication_endpoint"],
            (Path(info["state_dir"]) / "identity.ed25519.pub").read_bytes(),
            (Path(info["state_dir"]) / "encryption.hpke.pub").read_bytes(),
        )
        for region, info in region_info.items()
    }
    document = topology_document(iam_home_region=regions[0], ca_cert_pem=ca_cert, regions=public)
    path = state_dir / "peers.json"
    private_files.write_file(path, json.dumps(document, indent=2).encode() + b"\n")
    return path


def _print_welcome(cluster: dict[str, Any], cluster_file: Path) -> None:
    creds = cluster["credentials"]
    first_region, first = next(iter(cluster["regions"].items()))
    lines = ["", "regionkms dev cluster is up:"]
    for region, info in cluster["regions"].items():
        lines.append(f"  {region:<16} {info['endpoint']}")
    lines += [
        "",
        f"cluster file: {cluster_file}",
        "",
        "export AWS_ACCESS_KEY_ID=" + creds["access_key_id"],
        "export AWS_SECRET_ACCESS_KEY=" + creds["secret_access_key"],
        f"export AWS_DEFAULT_REGION={first_region}",
        "",
        f"aws kms list-keys --endpoint-url {first['endpoint']} --region {first_region}",
        "",
        "Ctrl-C stops the cluster; `make run` again resumes it with its keys.",
    ]
    print("\n".join(lines), flush=True)
