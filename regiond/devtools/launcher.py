"""The one local-cluster launcher: regions prepared, joined and served on this machine.

``regiond dev``, the tests and the benchmarks start their clusters from these parts, so a cluster
is wired the same way wherever it runs:

- ``ClusterCA.ensure(dir)``: the cluster CA that signs every region's replication certificate;
- ``prepare_region(state_dir, region, ca)``: the region's state directory (``regiond init``)
  and its mTLS certificate, with the public keys its peers need (``RegionState``);
- ``ensure_client_tls(state_dir, region, ca)``: the region's client-endpoint certificate and key,
  issued by the cluster CA (``regiond dev --tls``, ``regiond cluster init``);
- ``peers_document(...)`` / ``write_peers_file(...)``: the topology every region reads (a test
  may give each region its own, reaching its peers through fault-injecting proxies);
- ``bootstrap_admin(...)``: an account, an admin user allowed ``kms:*`` and ``iam:*``, and its
  access key, written with ``IamService`` straight into a region's database;
- ``NodeProcess``: one ``regiond serve`` subprocess on loopback: started, waited for
  (``/readyz``), stopped (SIGTERM, then SIGKILL) or killed.

Local only: every endpoint is on 127.0.0.1 and the client endpoint is plain HTTP unless TLS
files are given.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from regiond import private_files, statedir
from regiond.crypto import pki
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.store import migrate as migrations
from regiond.store.pool import create_pool
from replication.peers import ensure_cluster_ca, ensure_region_cert, topology_document

__all__ = [
    "ADMIN_POLICY",
    "HOST",
    "AdminCredentials",
    "ClusterCA",
    "NodeFailed",
    "NodeProcess",
    "RegionState",
    "bootstrap_admin",
    "ensure_client_tls",
    "migrate",
    "peers_document",
    "prepare_region",
    "write_peers_file",
]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
ADMIN_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "Admin", "Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}],
}


class NodeFailed(RuntimeError):
    """A node exited or did not become ready; the message names its log."""


@dataclass(frozen=True)
class ClusterCA:
    """The cluster CA (``ca.crt``, ``ca.key``), made on first use; it signs region certificates only."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @classmethod
    def ensure(cls, ca_dir: Path) -> ClusterCA:
        cert, key = ensure_cluster_ca(ca_dir)
        return cls(cert, key)


@dataclass(frozen=True)
class RegionState:
    """A region's initialised state directory, holding its replication certificate."""

    region: str
    state_dir: Path

    @property
    def identity_public_key(self) -> bytes:
        return statedir.identity_public_key(self.state_dir)

    @property
    def encryption_public_key(self) -> bytes:
        return statedir.encryption_public_key(self.state_dir)


def prepare_region(state_dir: Path, region: str, ca: ClusterCA) -> RegionState:
    """``regiond init`` for ``region`` in ``state_dir``, then its mTLS certificate from ``ca`` (idempotent)."""
    statedir.init_state_dir(state_dir, region=region)
    ensure_region_cert(state_dir, statedir.load_root_keyring(state_dir), ca.cert_pem, ca.key_pem, region)
    return RegionState(region, state_dir)


CLIENT_TLS_DIR = "client-tls"


def ensure_client_tls(
    region_dir: Path, region: str, ca: ClusterCA, hostnames: tuple[str, ...] = pki.DEFAULT_HOSTNAMES
) -> tuple[Path, Path]:
    """The region's client-endpoint certificate and key (``DIR/client-tls/cert.pem``, ``key.pem``).

    Issued by the cluster CA for ``hostnames`` on first use, and again when the CA or the names
    changed; kept otherwise, so that clients holding the CA go on verifying it across restarts.
    """
    tls_dir = region_dir / CLIENT_TLS_DIR
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    current = cert.read_bytes() if cert.exists() and key.exists() else None
    if current is None or not pki.issued_by(current, ca.cert_pem) or pki.cert_hostnames(current) != set(hostnames):
        private_files.make_dir(tls_dir)
        cert_pem, key_pem = pki.issue_server_cert(ca.cert_pem, ca.key_pem, f"regiond {region}", hostnames)
        private_files.write_file(key, key_pem)
        private_files.write_file(cert, cert_pem)
    return cert, key


def peers_document(
    *, home_region: str, ca: ClusterCA, regions: Mapping[str, RegionState], endpoints: Mapping[str, str]
) -> dict[str, Any]:
    """The peers file's document: each region's replication endpoint (as this reader reaches it) and keys."""
    return topology_document(
        iam_home_region=home_region,
        ca_cert_pem=ca.cert_pem,
        regions={
            name: (endpoints[name], state.identity_public_key, state.encryption_public_key)
            for name, state in regions.items()
        },
    )


def write_peers_file(path: Path, document: Mapping[str, Any]) -> Path:
    private_files.write_file(path, json.dumps(document, indent=2).encode() + b"\n")
    return path


async def migrate(database_url: str) -> list[int]:
    """Apply the schema migrations to ``database_url`` (what a node does at start)."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        return await migrations.migrate(pool)
    finally:
        await pool.close()


@dataclass(frozen=True)
class AdminCredentials:
    arn: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


async def bootstrap_admin(
    database_url: str,
    state_dir: Path,
    *,
    account_id: str,
    user_name: str = "admin",
    policy: Mapping[str, Any] = ADMIN_POLICY,
    access_key: tuple[str, str] | None = None,
) -> AdminCredentials:
    """The account, its user ``user_name`` with ``policy`` as its identity policy, and an access key,
    written into the migrated ``database_url`` with the root key of ``state_dir`` (idempotent).

    ``access_key`` (id, secret) imports a key made before (in another region, or an earlier run),
    so one credential works everywhere; without it a new key is made. Written straight into the
    database, not through replication: this is how a cluster is bootstrapped.
    """
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        iam = IamService(pool, statedir.load_root_keyring(state_dir))
        await iam.ensure_account(account_id)
        arn = principal_arn(account_id, PrincipalKind.USER, user_name)
        if not any(p.name == user_name for p in await iam.list_principals(account_id, PrincipalKind.USER)):
            await iam.create_principal(account_id, PrincipalKind.USER, user_name)
        await iam.put_identity_policy(arn, user_name, json.dumps(policy))
        if access_key is None:
            new = await iam.create_access_key(arn)
            return AdminCredentials(arn, new.access_key_id, new.secret_access_key)
        await iam.import_access_key(arn, *access_key)
        return AdminCredentials(arn, *access_key)
    finally:
        await pool.close()


@dataclass
class NodeProcess:
    """One ``regiond serve`` subprocess on loopback port ``port``.

    ``peers_file`` and ``replication_port`` join it to a replicated cluster; ``tls`` (certificate,
    key) serves its client endpoint over TLS, else it is plain HTTP on purpose (``--plain-http``).
    The node's output is appended to ``log_path`` (default ``state_dir/regiond.log``). ``env``
    replaces the environment (default: this process's, without ``REGIOND_*`` settings, so a
    caller's shell cannot change what a launcher asks for).
    """

    region: str
    database_url: str
    state_dir: Path
    port: int
    workers: int = 1
    peers_file: Path | None = None
    replication_port: int | None = None
    audit: bool = True
    tls: tuple[Path, Path] | None = None
    log_level: str | None = None
    log_path: Path | None = None
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def replication_endpoint(self) -> str:
        assert self.replication_port is not None
        return f"https://{HOST}:{self.replication_port}"

    @property
    def log(self) -> Path:
        return self.log_path or self.state_dir / "regiond.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "regiond", "serve", "--region", self.region,
               "--database-url", self.database_url, "--listen", f"{HOST}:{self.port}",
               "--workers", str(self.workers), "--state-dir", str(self.state_dir)]  # fmt: skip
        if self.tls is not None:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        else:
            cmd.append("--plain-http")
        if self.peers_file is not None:
            cmd += ["--peers-file", str(self.peers_file)]
        if self.replication_port is not None:
            cmd += ["--replication-listen", f"{HOST}:{self.replication_port}"]
        if not self.audit:
            cmd.append("--no-audit")
        if self.log_level is not None:
            cmd += ["--log-level", self.log_level]
        return cmd

    def start(self) -> Self:
        env = dict(self.env) if self.env is not None else {
            k: v for k, v in os.environ.items() if not k.startswith("REGIOND_")
        }  # fmt: skip
        with private_files.open_append(self.log) as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env, cwd=self.cwd)
        return self

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self, context: ssl.SSLContext | None = None) -> bool:
        """One ``/readyz`` probe; ``NodeFailed`` if the process has exited."""
        assert self.proc is not None, "start() first"
        if self.proc.poll() is not None:
            raise NodeFailed(f"regiond serve for {self.region} exited with {self.proc.returncode}; see {self.log}")
        try:
            with urllib.request.urlopen(self.endpoint + "/readyz", timeout=1, context=context) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, context: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready(context):
            if time.monotonic() > deadline:
                raise NodeFailed(f"regiond serve for {self.region} not ready after {timeout_s:.0f}s; see {self.log}")
            time.sleep(0.1)

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` waits): nodes of a cluster drain at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (a graceful drain), SIGKILL after ``timeout_s``; the exit code (None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
