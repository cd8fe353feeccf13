"""Test support: a session PostgreSQL, per-test databases, and in-process regiond nodes.

A node here is the real application (``regiond.app.create_app``) served by aiohttp on a
loopback port, so boto3 talks real HTTP with real SigV4 to it. Each node gets its own
database; several nodes may share one (two nodes of a region) or use different ones
(several regions).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import boto3
from aiohttp import web
from botocore.config import Config

from regiond.app import create_app
from regiond.clock import ManualClock
from regiond.config import Settings
from regiond.crypto.keyring import AesRootKeyring, load_file_keyring
from regiond.devtools.postgres import LocalPostgres
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.runtime.client_tls import ServerCertificate
from regiond.runtime.listener import HttpLimits, Listener, listen
from regiond.service.iam import IamService
from regiond.statedir import init_state_dir
from regiond.store import migrate as migrations
from regiond.store.pool import create_pool

ACCOUNT_ID = "111122223333"
OTHER_ACCOUNT_ID = "444455556666"
TEMPLATE = "regionkms_template"
_counter = itertools.count()


@dataclass
class PgServer:
    server: LocalPostgres
    admin_url: str

    def url_for(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    async def fresh_database(self) -> str:
        name = f"t{next(_counter)}_{id(self) % 10000}"
        con = await asyncpg.connect(self.admin_url)
        try:
            await con.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        finally:
            await con.close()
        return self.url_for(name)

    async def drop_database(self, url: str) -> None:
        from tests.support.secret_scan import RECORDER  # conftest imports this module before its plugins

        await RECORDER.collect_database(url)  # what the test left, scanned at the end of the run
        name = url.rsplit("/", 1)[1]
        con = await asyncpg.connect(self.admin_url)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await con.close()

    def stop(self) -> None:
        self.server.stop()


def start_pg_server(base: Path) -> PgServer:
    server = LocalPostgres(base, durable=False)
    admin_url = server.start()

    async def make_template() -> None:
        con = await asyncpg.connect(admin_url)
        try:
            await con.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await con.close()
        pool = await create_pool(admin_url.rsplit("/", 1)[0] + "/" + TEMPLATE, min_size=1, max_size=1)
        try:
            await migrations.migrate(pool)
        finally:
            await pool.close()

    asyncio.run(make_template())
    return PgServer(server, admin_url)


@dataclass
class Identity:
    arn: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass
class Node:
    region: str
    endpoint: str
    database_url: str
    keyring: AesRootKeyring
    clock: ManualClock
    listener: Listener
    app: web.Application
    state_dir: Path
    certificate: ServerCertificate | None = None  # the client endpoint's, when it serves TLS
    ca_bundle: str | None = None  # what clients verify it with

    def client(self, identity: Identity, service: str = "kms", region: str | None = None) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region or self.region,
            aws_access_key_id=identity.access_key_id,
            aws_secret_access_key=identity.secret_access_key,
            verify=self.ca_bundle,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )


class NodeFactory:
    """Starts nodes for one test and tears them down; bootstraps accounts and principals."""

    def __init__(self, pg: PgServer, tmp: Path) -> None:
        self.pg = pg
        self.tmp = tmp
        self.nodes: list[Node] = []
        self._databases: list[str] = []

    async def database(self) -> str:
        url = await self.pg.fresh_database()
        self._databases.append(url)
        return url

    async def start(
        self,
        region: str = "us-east-1",
        *,
        database_url: str | None = None,
        state_dir: Path | None = None,
        audit: bool = True,
        replication_transport: Any = None,
        ca_bundle: str | None = None,
        **settings: Any,
    ) -> Node:
        """A node; with ``tls_cert_file`` and ``tls_key_file`` in ``settings`` its client endpoint is TLS
        (clients verify it with ``ca_bundle``)."""
        url = database_url or await self.database()
        sdir = state_dir or self.tmp / f"{region}-{len(self.nodes)}"
        init_state_dir(sdir, region=region)
        keyring = load_file_keyring(sdir / "root.key")
        clock = ManualClock()
        cfg = Settings(region=region, database_url=url, state_dir=sdir, listen_port=0, **settings)
        audit_factory = None
        if audit:
            try:
                from regiond.audit import make_audit_sink

                audit_factory = make_audit_sink
            except ImportError:
                audit_factory = None
        app = create_app(
            cfg, keyring, clock=clock, audit_factory=audit_factory, replication_transport=replication_transport
        )
        certificate = None
        if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
            certificate = ServerCertificate(cfg.tls_cert_file, cfg.tls_key_file)
        listener = await listen(  # as regiond serve does
            app, "127.0.0.1", 0, HttpLimits.from_settings(cfg),
            tls_context=certificate.context if certificate is not None else None,
        )  # fmt: skip
        scheme = "https" if certificate is not None else "http"
        node = Node(
            region, f"{scheme}://127.0.0.1:{listener.port}", url, keyring, clock, listener, app, sdir, certificate,
            ca_bundle,
        )  # fmt: skip
        self.nodes.append(node)
        return node

    async def stop(self, node: Node) -> None:
        await node.listener.close()
        self.nodes.remove(node)

    async def close(self) -> None:
        for node in list(self.nodes):
            await node.listener.close()
        self.nodes.clear()
        for url in self._databases:
            await self.pg.drop_database(url)

    async def identity(
        self,
        node: Node,
        account_id: str = ACCOUNT_ID,
        user: str | None = "admin",
        policy: dict[str, Any] | None = None,
        role: bool = False,
    ) -> Identity:
        """Ensure the account (and user/role) exist in ``node``'s database and make an access key."""
        pool = await create_pool(node.database_url, min_size=1, max_size=1)
        try:
            iam = IamService(pool, node.keyring)
            await iam.ensure_account(account_id)
            if user is None:
                arn = principal_arn(account_id, PrincipalKind.ROOT, "")
            else:
                kind = PrincipalKind.ROLE if role else PrincipalKind.USER
                arn = principal_arn(account_id, kind, user)
                existing = await iam.list_principals(account_id, kind)
                if not any(p.arn == arn for p in existing):
                    await iam.create_principal(account_id, kind, user)
                if policy is None and user == "admin":
                    policy = {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": ["kms:*", "iam:*"], "Resource": "*"}],
                    }
                if policy is not None:
                    await iam.put_identity_policy(arn, "inline", json.dumps(policy))
            new = await iam.create_access_key(arn)
        finally:
            await pool.close()
        return Identity(arn, new.access_key_id, new.secret_access_key)

    async def copy_identity(self, node: Node, identity: Identity, account_id: str = ACCOUNT_ID) -> None:
        """Make ``identity`` valid on another node (another region's database)."""
        pool = await create_pool(node.database_url, min_size=1, max_size=1)
        try:
            iam = IamService(pool, node.keyring)
            await iam.ensure_account(account_id)
            kind_name = identity.arn.split(":")[5]
            if kind_name != "root":
                kind, name = kind_name.split("/", 1)
                pk = PrincipalKind(kind)
                if not any(p.arn == identity.arn for p in await iam.list_principals(account_id, pk)):
                    await iam.create_principal(account_id, pk, name)
            await iam.import_access_key(identity.arn, identity.access_key_id, identity.secret_access_key)
        finally:
            await pool.close()
