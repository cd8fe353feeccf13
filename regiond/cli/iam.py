"""``regiond iam``: operator commands for accounts, users, roles, access keys and identity policies.

Where it writes:
  --cluster DIR/cluster.json   the cluster's IAM home region (the first region listed), from which
                               replication carries IAM to the others; until a region has received
                               IAM over replication, the command also writes it there directly
  --database-url URL           one region's database (root key from --state-dir or REGIOND_ROOT_KEY)
  --endpoint URL               the admin JSON API over SigV4, with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
Each command prints one JSON object on stdout and exits non-zero with a message on error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsclient.errors import KmsClientError
from regiond.config import env
from regiond.crypto.keyring import AesRootKeyring, env_keyring
from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.errors import KmsError
from regiond.service.iam import IamService
from regiond.statedir import load_root_keyring
from regiond.store import migrate as migrations
from regiond.store.pool import create_pool


@dataclass(frozen=True)
class Target:
    database_url: str
    keyring: AesRootKeyring


def _targets(args: argparse.Namespace) -> list[Target]:
    if args.cluster:
        cluster = json.loads(Path(args.cluster).read_text())
        base = Path(args.cluster).parent
        out = []
        for region, info in cluster["regions"].items():
            state_dir = Path(info.get("state_dir") or base / region)
            out.append(Target(info["database_url"], load_root_keyring(state_dir)))
        return out
    if args.database_url:
        root_key = env("ROOT_KEY")
        if root_key:
            return [Target(args.database_url, env_keyring(root_key))]
        if not args.state_dir:
            raise SystemExit("regiond iam: --database-url needs --state-dir (or REGIOND_ROOT_KEY) for the root key")
        return [Target(args.database_url, load_root_keyring(Path(args.state_dir)))]
    raise SystemExit("regiond iam: give --cluster, --database-url or --endpoint")


def _kind_and_name(args: argparse.Namespace) -> tuple[PrincipalKind, str]:
    if getattr(args, "user_name", None):
        return PrincipalKind.USER, args.user_name
    if getattr(args, "role_name", None):
        return PrincipalKind.ROLE, args.role_name
    return PrincipalKind.ROOT, ""


async def _run_db(args: argparse.Namespace) -> dict[str, Any]:
    targets = _targets(args)
    services = []
    pools = []
    try:
        for t in targets:
            pool = await create_pool(t.database_url, min_size=1, max_size=2)
            pools.append(pool)
            await migrations.migrate(pool)
            services.append(IamService(pool, t.keyring))
        return await _apply(args, services)
    finally:
        for pool in pools:
            await pool.close()


async def _apply(args: argparse.Namespace, services: list[IamService]) -> dict[str, Any]:
    first, rest = services[0], services[1:]
    cmd = args.iam_command
    account = args.account_id
    if cmd == "create-account":
        root = await first.create_account(account)
        for s in rest:
            await s.ensure_account(account)
        return {"arn": root.arn, "account_id": account}
    if cmd in ("create-user", "create-role"):
        kind = PrincipalKind.USER if cmd == "create-user" else PrincipalKind.ROLE
        name = args.user_name if kind is PrincipalKind.USER else args.role_name
        p = await first.create_principal(account, kind, name)
        for s in rest:
            await s.ensure_account(account)
            await s.create_principal(account, kind, name)
        return {"arn": p.arn, "principal_id": p.principal_id}
    if cmd == "create-access-key":
        kind, name = _kind_and_name(args)
        arn = principal_arn(account, kind, name)
        new = await first.create_access_key(arn)
        for s in rest:
            await s.import_access_key(arn, new.access_key_id, new.secret_access_key)
        return {"access_key_id": new.access_key_id, "secret_access_key": new.secret_access_key, "arn": arn}
    if cmd in ("put-user-policy", "put-role-policy"):
        kind, name = _kind_and_name(args)
        arn = principal_arn(account, kind, name)
        for s in services:
            await s.put_identity_policy(arn, args.policy_name, args.policy_document)
        return {"arn": arn, "policy_name": args.policy_name}
    if cmd in ("list-users", "list-roles"):
        kind = PrincipalKind.USER if cmd == "list-users" else PrincipalKind.ROLE
        found = await first.list_principals(account, kind)
        return {
            "arn": principal_arn(account, PrincipalKind.ROOT, ""),
            "principals": [{"arn": p.arn, "name": p.name} for p in found],
        }
    raise SystemExit(f"regiond iam: unknown command {cmd}")


def _run_endpoint(args: argparse.Namespace) -> dict[str, Any]:
    from kmsclient.admin import call_iam

    kind, name = _kind_and_name(args)
    cmd = args.iam_command
    params: dict[str, Any] = {}
    if kind is PrincipalKind.USER:
        params["UserName"] = name
    elif kind is PrincipalKind.ROLE:
        params["RoleName"] = name
    operation = {
        "create-user": "CreateUser",
        "create-role": "CreateRole",
        "create-access-key": "CreateAccessKey",
        "put-user-policy": "PutUserPolicy",
        "put-role-policy": "PutRolePolicy",
        "list-users": "ListUsers",
        "list-roles": "ListRoles",
    }.get(cmd)
    if operation is None:
        raise SystemExit(f"regiond iam: {cmd} is an operator command: use --cluster or --database-url")
    if cmd.startswith("put-"):
        params["PolicyName"] = args.policy_name
        params["PolicyDocument"] = args.policy_document
    result = call_iam(args.endpoint, args.region, operation, params)
    if cmd == "create-access-key":
        key = result["AccessKey"]
        if kind is PrincipalKind.ROOT and key.get("UserName"):  # no name given: the key is the caller's (a user)
            kind, name = PrincipalKind.USER, key["UserName"]
        return {
            "access_key_id": key["AccessKeyId"],
            "secret_access_key": key["SecretAccessKey"],
            "arn": principal_arn(args.account_id, kind, name),
        }
    entity = result.get("User") or result.get("Role") or {}
    return {"arn": entity.get("Arn", principal_arn(args.account_id, kind, name)), **result}


def cmd_iam(args: argparse.Namespace) -> int:
    try:
        out = _run_endpoint(args) if args.endpoint else asyncio.run(_run_db(args))
    except KmsError as exc:
        print(f"regiond iam: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KmsClientError as exc:
        print(f"regiond iam: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"regiond iam: cannot reach the cluster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def add_iam_parser(sub: Any) -> None:
    p = sub.add_parser("iam", help="manage accounts, users, roles, access keys and identity policies")
    p.add_argument("--cluster", help="cluster.json written by `regiond dev`")
    p.add_argument("--database-url", default=None)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--endpoint", default=None)
    p.add_argument("--region", default=env("REGION", "us-east-1"))
    p.set_defaults(func=cmd_iam)
    cmds = p.add_subparsers(dest="iam_command", required=True)

    c = cmds.add_parser("create-account")
    c.add_argument("--account-id", required=True)
    for name, flag in (("create-user", "--user-name"), ("create-role", "--role-name")):
        c = cmds.add_parser(name)
        c.add_argument("--account-id", required=True)
        c.add_argument(flag, required=True)
    c = cmds.add_parser("create-access-key")
    c.add_argument("--account-id", required=True)
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-name")
    who.add_argument("--role-name")
    who.add_argument("--root", action="store_true")
    for name, flag in (("put-user-policy", "--user-name"), ("put-role-policy", "--role-name")):
        c = cmds.add_parser(name)
        c.add_argument("--account-id", required=True)
        c.add_argument(flag, required=True)
        c.add_argument("--policy-name", required=True)
        c.add_argument("--policy-document", required=True)
    for name in ("list-users", "list-roles"):
        c = cmds.add_parser(name)
        c.add_argument("--account-id", required=True)
