"""``regiond``: the composition root. Parses arguments, builds Settings, calls the parts.

regiond init     --state-dir DIR                       root key and region identity material
regiond migrate  (--database-url URL | --config FILE)  apply schema migrations
regiond serve    --region R --database-url URL --listen HOST:PORT --workers N --state-dir DIR
                 (--tls-cert F --tls-key F | --plain-http)     the client endpoint
                 [--peers-file F --replication-listen HOST:PORT --home-region R]   replication
regiond replication status|make-ca|issue-cert|peers-file                  (cli/replication.py)
regiond cluster  init --dir DIR --region R=REPLICATION_ENDPOINT ...         every file of a cluster (cli/cluster.py)
regiond iam      (--cluster FILE | --database-url URL --state-dir DIR) <command> ...
regiond audit    verify|query|export (--cluster FILE --region R | --database-url URL)
regiond policy   simulate --principal ARN --action A --key K [--context k=v] (--cluster FILE --region R | ...)
regiond dev      --regions a,b,c --state-dir DIR       local multi-region cluster
regiond import-material --key KEY --material FILE (--cluster FILE --region R | --endpoint URL)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from regiond import config, private_files
from regiond import logging as regiond_logging
from regiond.config import Settings, client_endpoint_problem, env
from regiond.crypto.keyring import KeyringError


def _settings_from_args(args: argparse.Namespace) -> Settings:
    """The node's settings: its flags over its environment over its file (``--config``) over defaults."""
    return config.load(_config_file(args), os.environ, config.flags_from(args)).settings


def _config_file(args: argparse.Namespace) -> Path | None:
    name = getattr(args, "config", None) or os.environ.get(config.CONFIG_ENV) or None
    return Path(name) if name else None


def cmd_serve(args: argparse.Namespace) -> int:
    from regiond.app import build_app, load_keyring
    from regiond.runtime.serve import serve

    try:
        settings = _settings_from_args(args)
    except config.ConfigError as exc:
        print(f"regiond serve: {exc}", file=sys.stderr)
        return 2
    regiond_logging.configure(settings.log_level, json=settings.log_json)
    problem = _endpoint_problem(settings)
    if problem is not None:
        print(f"regiond serve: {problem}", file=sys.stderr)
        return 2
    load_keyring(settings)  # fail fast, before forking workers
    problem = _schema_problem(settings.database_url)
    if problem is not None:
        print(f"regiond serve: {problem}", file=sys.stderr)
        return 2
    return serve(settings, build_app)


def _schema_problem(database_url: str) -> str | None:
    """Why this release must not serve the database's schema (a migration of a later release that older
    ones cannot run against), or None; an unreachable database is left to the workers' start, as before."""
    from regiond.store import migrate as migrations
    from regiond.store.pool import create_pool

    async def check() -> list[str]:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            return await migrations.unservable(pool)
        finally:
            await pool.close()

    try:
        found = asyncio.run(asyncio.wait_for(check(), timeout=5))
    except Exception:  # reachability is the workers' to report, with their own message and exit status
        return None
    return migrations.unservable_message(found) if found else None


def _endpoint_problem(settings: Settings) -> str | None:
    """Why the client endpoint of ``settings`` cannot start (its TLS files included), or None."""
    from regiond.runtime.client_tls import ServerCertificate, TlsConfigError

    problem = client_endpoint_problem(settings)
    if problem is None and settings.tls_cert_file is not None and settings.tls_key_file is not None:
        try:
            ServerCertificate(settings.tls_cert_file, settings.tls_key_file)
        except TlsConfigError as exc:
            problem = str(exc)
    return problem


def cmd_init(args: argparse.Namespace) -> int:
    from regiond.statedir import init_state_dir

    created = init_state_dir(Path(args.state_dir), region=args.region)
    print(f"initialised {args.state_dir}: {', '.join(created) or 'nothing new'}")
    return 0


def _migrate_database_url(args: argparse.Namespace) -> str:
    """The database ``regiond migrate`` works on: its flag, else the node's (``--config`` and ``REGIOND_*``
    as ``serve`` resolves them), so a unit file gives the same ``--config`` to both commands."""
    if args.database_url:
        return str(args.database_url)
    file = _config_file(args)
    if file is None:
        url = env("DATABASE_URL")
        if not url:
            raise config.ConfigError("give --database-url, REGIOND_DATABASE_URL or --config FILE")
        return url
    return config.load(file, os.environ).settings.database_url


def cmd_migrate(args: argparse.Namespace) -> int:
    from regiond.store import migrate as migrations
    from regiond.store.pool import create_pool

    try:
        database_url = _migrate_database_url(args)
    except config.ConfigError as exc:
        print(f"regiond migrate: {exc}", file=sys.stderr)
        return 2

    async def run() -> list[int]:
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            return await migrations.migrate(pool)
        finally:
            await pool.close()

    try:
        applied = asyncio.run(run())
    except migrations.UnservableSchema as exc:
        print(f"regiond migrate: {exc}", file=sys.stderr)
        return 2
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


def cmd_config_check(args: argparse.Namespace) -> int:
    """Print the effective configuration of FILE (with this environment), secrets redacted; exit 2 if unusable."""
    try:
        effective = config.load(Path(args.file), os.environ)
    except config.ConfigError as exc:
        print(f"regiond config check: {exc}", file=sys.stderr)
        return 2
    problem = _endpoint_problem(effective.settings)  # the TLS files as serve would load them
    if problem is not None:
        print(f"regiond config check: {problem}", file=sys.stderr)
        return 2
    sys.stdout.write(config.render(effective))
    return 0


def cmd_config_table(_args: argparse.Namespace) -> int:
    sys.stdout.write(config.markdown_table())
    return 0


def _add_node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"the node's TOML configuration file (or {config.CONFIG_ENV});"
                   " variables and flags override it (docs/CONFIGURATION.md)")  # fmt: skip
    config.add_flags(p)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="regiond", description="regionkms region node")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP node")
    _add_node_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("config", help="the node's configuration file")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="print FILE's effective configuration (secrets redacted)")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    table = config_sub.add_parser("table", help="print the settings table of docs/CONFIGURATION.md")
    table.set_defaults(func=cmd_config_table)

    p = sub.add_parser("init", help="create the region's root key and identity material")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--region", default=env("REGION", "us-east-1"))
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--database-url", help="the database (default: REGIOND_DATABASE_URL, or the --config file's)")
    p.add_argument("--config", help=f"the node's TOML configuration file (or {config.CONFIG_ENV}): its database_url")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("dev", help="run a local multi-region cluster")
    p.add_argument("--regions", default="us-east-1,eu-west-1,ap-southeast-2")
    p.add_argument("--state-dir", default=".state")
    p.add_argument("--base-port", type=int, default=0, help="first HTTP port (0: reuse saved or pick free ports)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve the client endpoints over TLS with certificates from the cluster CA (AWS_CA_BUNDLE)",
    )
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

    from regiond.cli.cluster import add_cluster_parser

    add_cluster_parser(sub)

    from regiond.cli.import_material import add_import_parser

    add_import_parser(sub)

    from regiond.cli.root_key import add_root_key_parser

    add_root_key_parser(sub)
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
    except Exception as exc:
        # A database that is down or failing over, met by a command that has no handler of its own
        # (e.g. ``replication status``): one line and exit 1, as for every other operator error.
        from regiond.store.pool import DATABASE_ERRORS

        if not isinstance(exc, DATABASE_ERRORS):
            raise
        print(f"regiond {args.command}: database error: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
