"""``regiond``: the composition root. Parses arguments, builds Settings, calls the parts.

regiond init     --state-dir DIR                       root key and region identity material
regiond migrate  --database-url URL                    apply schema migrations
regiond serve    --region R --database-url URL --listen HOST:PORT --workers N --state-dir DIR
                 (--tls-cert F --tls-key F | --plain-http)     the client endpoint
                 [--peers-file F --replication-listen HOST:PORT --home-region R]   replication
regiond replication status|make-ca|issue-cert|peers-file                  (cli/replication.py)
regiond iam      (--cluster FILE | --database-url URL --state-dir DIR) <command> ...
regiond audit    verify|query|export (--cluster FILE --region R | --database-url URL)
regiond policy   simulate --principal ARN --action A --key K [--context k=v] (--cluster FILE --region R | ...)
regiond dev      --regions a,b,c --state-dir DIR       local multi-region cluster
regiond import-material --key KEY --material FILE (--cluster FILE --region R | --endpoint URL)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from regiond import logging as regiond_logging
from regiond import private_files
from regiond.config import DEFAULT_LISTEN, Settings, client_endpoint_problem, env, parse_listen
from regiond.crypto.keyring import AesRootKeyring, KeyringError, env_keyring, load_file_keyring


def load_keyring(settings: Settings) -> AesRootKeyring:
    if settings.root_key_b64:
        return env_keyring(settings.root_key_b64)
    if settings.root_key_path is None:
        raise KeyringError("no root key: give --state-dir (made by `regiond init`) or REGIOND_ROOT_KEY")
    return load_file_keyring(settings.root_key_path)


def build_app(settings: Settings) -> web.Application:
    """The production wiring (module-level so worker processes can import it)."""
    from regiond.app import create_app
    from regiond.audit import make_audit_sink

    audit_factory = make_audit_sink if settings.audit_enabled else None
    return create_app(settings, load_keyring(settings), audit_factory=audit_factory)


def _settings_from_args(args: argparse.Namespace) -> Settings:
    host, port = parse_listen(args.listen)
    state_dir = Path(args.state_dir) if args.state_dir else None
    return Settings(
        region=args.region,
        database_url=args.database_url,
        state_dir=state_dir,
        listen_host=host,
        listen_port=port,
        workers=args.workers,
        root_key_b64=env("ROOT_KEY"),
        log_level=args.log_level,
        trusted_proxies=tuple(p for p in (args.trusted_proxies or "").split(",") if p),
        cache_ttl_s=args.cache_ttl,
        auth_failure_burst=args.auth_failure_burst,
        auth_failure_refill_per_s=args.auth_failure_refill,
        cache_preload_max_keys=args.cache_preload_max_keys,
        http_header_timeout_s=args.http_header_timeout,
        http_body_timeout_s=args.http_body_timeout,
        http_idle_timeout_s=args.http_idle_timeout,
        http_max_connections=int(args.http_max_connections),
        tls_cert_file=Path(args.tls_cert) if args.tls_cert else None,
        tls_key_file=Path(args.tls_key) if args.tls_key else None,
        plain_http=args.plain_http,
        tls_handshake_timeout_s=args.tls_handshake_timeout,
        audit_enabled=not args.no_audit,
        audit_retention_days=args.audit_retention_days,
        peers_file=Path(args.peers_file) if args.peers_file else None,
        replication_listen=args.replication_listen or None,
        home_region=args.home_region or None,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from regiond.runtime.client_tls import ServerCertificate, TlsConfigError
    from regiond.runtime.serve import serve

    settings = _settings_from_args(args)
    problem = client_endpoint_problem(settings)
    if problem is not None:
        print(f"regiond serve: {problem}", file=sys.stderr)
        return 2
    load_keyring(settings)  # fail fast, before forking workers
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        try:
            ServerCertificate(settings.tls_cert_file, settings.tls_key_file)
        except TlsConfigError as exc:
            print(f"regiond serve: {exc}", file=sys.stderr)
            return 2
    return serve(settings, build_app)


def cmd_init(args: argparse.Namespace) -> int:
    from regiond.statedir import init_state_dir

    created = init_state_dir(Path(args.state_dir), region=args.region)
    print(f"initialised {args.state_dir}: {', '.join(created) or 'nothing new'}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from regiond.store import migrate as migrations
    from regiond.store.pool import create_pool

    async def run() -> list[int]:
        pool = await create_pool(args.database_url, min_size=1, max_size=2)
        try:
            return await migrations.migrate(pool)
        finally:
            await pool.close()

    applied = asyncio.run(run())
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from regiond.devtools.dev import run_dev

    urls = {
        region: getattr(args, f"database_url_{region.replace('-', '_')}", None) for region in args.regions.split(",")
    }
    return run_dev(
        regions=args.regions.split(","),
        state_dir=Path(args.state_dir),
        database_urls=urls,
        base_port=args.base_port,
        workers=args.workers,
        tls=args.tls,
    )


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def _add_node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", default=env("REGION", "us-east-1"))
    p.add_argument("--database-url", default=env("DATABASE_URL"), required=env("DATABASE_URL") is None)
    p.add_argument("--state-dir", default=env("STATE_DIR"))
    p.add_argument("--listen", default=env("LISTEN", DEFAULT_LISTEN))
    p.add_argument("--workers", type=int, default=int(env("WORKERS", "1") or 1))
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    p.add_argument("--trusted-proxies", default=env("TRUSTED_PROXIES", ""))
    p.add_argument(
        "--auth-failure-burst",
        type=int,
        default=int(env("AUTH_FAILURE_BURST", "20") or 20),
        help="failed authentications a source may make before further failures are throttled (0: no throttle)",
    )
    p.add_argument(
        "--auth-failure-refill",
        type=float,
        default=float(env("AUTH_FAILURE_REFILL", "0.5") or 0.5),
        help="failed authentications per second a throttled source gets back",
    )
    p.add_argument(
        "--cache-ttl",
        type=float,
        default=float(env("CACHE_TTL", "3600") or 3600),
        help="seconds a cached key, policy or credential may live without a change notification (backstop;"
        " change notifications and a pinged listener connection are what keep caches fresh)",
    )
    p.add_argument(
        "--cache-preload-max-keys",
        type=int,
        default=int(env("CACHE_PRELOAD_MAX_KEYS", "100000") or 100_000),
        help="keys each worker loads into its caches in the background at start and after losing its change"
        " notifications (at most 100,000, the key cache's size; a few KiB per key per worker; 0: off)",
    )
    p.add_argument("--http-header-timeout", type=_positive(float), default=env("HTTP_HEADER_TIMEOUT", "10"),
                   help="seconds a request's header block may take, from its first byte (default 10)")
    p.add_argument("--http-body-timeout", type=_positive(float), default=env("HTTP_BODY_TIMEOUT", "30"),
                   help="seconds a request's whole body may take after its headers; then 408 (default 30)")
    p.add_argument("--http-idle-timeout", type=_positive(float), default=env("HTTP_IDLE_TIMEOUT", "75"),
                   help="seconds a kept-alive connection may wait for its next request (default 75; keep it"
                   " above a load balancer's idle timeout)")
    p.add_argument("--http-max-connections", type=_positive(int), default=env("HTTP_MAX_CONNECTIONS", "1024"),
                   help="open client connections per worker process; more are refused (default 1024)")
    p.add_argument("--tls-cert", default=env("TLS_CERT"),
                   help="client endpoint: PEM certificate chain, leaf first (re-read on SIGHUP)")
    p.add_argument("--tls-key", default=env("TLS_KEY"), help="client endpoint: PEM private key (re-read on SIGHUP)")
    p.add_argument("--plain-http", action="store_true", default=env("PLAIN_HTTP", "") in ("1", "true"),
                   help="serve the client endpoint over plain HTTP (behind a TLS-terminating proxy, or on loopback)")
    p.add_argument("--tls-handshake-timeout", type=_positive(float), default=env("TLS_HANDSHAKE_TIMEOUT", "10"),
                   help="seconds a client's TLS handshake may take from its connection (default 10)")
    p.add_argument("--no-audit", action="store_true", help="benchmarks only: skip the audit trail")
    p.add_argument("--audit-retention-days", type=int, default=int(env("AUDIT_RETENTION_DAYS", "0") or 0),
                   help="delete signed audit events older than this many days (0: keep forever)")  # fmt: skip
    p.add_argument("--peers-file", default=env("PEERS_FILE"), help="replication: the cluster's peers file")
    p.add_argument("--replication-listen", default=env("REPLICATION_LISTEN"),
                   help="replication: HOST:PORT of this region's mTLS receiver")  # fmt: skip
    p.add_argument("--home-region", default=env("HOME_REGION"), help="replication: the IAM home region")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="regiond", description="regionkms region node")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP node")
    _add_node_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("init", help="create the region's root key and identity material")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--region", default=env("REGION", "us-east-1"))
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--database-url", default=env("DATABASE_URL"), required=env("DATABASE_URL") is None)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dev", help="run a local multi-region cluster")
    p.add_argument("--regions", default="us-east-1,eu-west-1,ap-southeast-2")
    p.add_argument("--state-dir", default=".state")
    p.add_argument("--base-port", type=int, default=0, help="first HTTP port (0: reuse saved or pick free ports)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--tls", action="store_true",
                   help="serve the client endpoints over TLS with certificates from the cluster CA (AWS_CA_BUNDLE)")
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "eu-central-1"):
        p.add_argument(f"--database-url-{region}", dest=f"database_url_{region.replace('-', '_')}")
    p.set_defaults(func=cmd_dev)

    from regiond.cli.iam import add_iam_parser

    add_iam_parser(sub)

    from regiond.cli.audit import add_audit_parser

    add_audit_parser(sub)

    from regiond.cli.policy import add_policy_parser

    add_policy_parser(sub)

    from regiond.cli.replication import add_replication_parser

    add_replication_parser(sub)

    from regiond.cli.import_material import add_import_parser

    add_import_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Whatever a command or its children (PostgreSQL, the nodes of `regiond dev`) create is the
    # owner's only; what regiond writes on purpose is 0600/0700 regardless (regiond.private_files).
    private_files.restrict_umask()
    regiond_logging.configure(getattr(args, "log_level", "info"))
    try:
        return int(args.func(args))
    except KeyringError as exc:
        print(f"regiond: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
