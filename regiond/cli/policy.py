"""``regiond policy simulate``: would this principal be allowed this action on this key, and why?

    regiond policy simulate --principal ARN --action kms:Decrypt --key KEY [--context k=v ...]
        [--source-ip IP] [--format text|json]
        (--cluster DIR/cluster.json --region R | --database-url URL)

KEY is a key id, key ARN, alias name or alias ARN (a bare id or alias name means the
principal's account). The simulator reads the key policy, the principal's identity policies
and the key's grants from the region's database and runs the very function the service
authorizes with (``regiond.service.authz.evaluate``), so its answer is the service's answer
for a request with that encryption context and source IP at the current time. It prints
ALLOW or DENY, the reason, and the statements (or grant) that decided: for a denial, the
explicit Deny statements or the key-policy statements that matched but needed IAM as well.
It reads only; no root key is needed.

Exit status: 0 allowed, 1 denied, 2 bad arguments (unknown principal or key, bad --context).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from regiond.cli import cluster_file
from regiond.cli.cluster_file import UsageError
from regiond.domain import ids
from regiond.domain.decision import Decision, PolicySource
from regiond.domain.key_conditions import key_values
from regiond.domain.policy import Policy, PolicyKind, RequestContext, parse_policy
from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import KmsError
from regiond.service.authz import CROSS_ACCOUNT_ACTIONS, evaluate

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2
_PRINCIPAL = re.compile(r"arn:aws:iam::(\d{12}):(root|user/[\w+=,.@-]{1,64}|role/[\w+=,.@-]{1,64})")


@dataclass(frozen=True)
class Simulation:
    principal: str
    action: str
    key_arn: str
    decision: Decision
    identity_names: tuple[str, ...]  # names of the parsed identity policies, by decision index
    skipped_policies: tuple[str, ...]  # stored identity policies that no longer parse (grant nothing)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        statements = []
        for s in self.decision.statements:
            key_policy = s.source is PolicySource.KEY_POLICY
            statements.append(
                {
                    "source": s.source.value,
                    "policy": "default" if key_policy else self.identity_names[s.policy_index],
                    "index": s.statement.index,
                    "sid": s.statement.sid,
                }
            )
        out: dict[str, Any] = {
            "decision": "allow" if self.decision.allowed else "deny",
            "reason": self.decision.reason.value,
            "principal": self.principal,
            "action": self.action,
            "key": self.key_arn,
            "statements": statements,
            "grant_id": self.decision.grant_id,
        }
        if self.note:
            out["note"] = self.note
        if self.skipped_policies:
            out["unparseable_identity_policies"] = list(self.skipped_policies)
        return out

    def to_text(self) -> str:
        data = self.to_json()
        lines = [
            f"{data['decision'].upper()} {self.action}",
            f"  principal  {self.principal}",
            f"  key        {self.key_arn}",
            f"  reason     {data['reason']}",
        ]
        label = "decided by" if self.decision.allowed or data["reason"] == "explicit-deny" else "matched"
        for s in data["statements"]:
            where = "key policy" if s["source"] == PolicySource.KEY_POLICY.value else f"identity policy {s['policy']!r}"
            sid = f" ({s['sid']})" if s["sid"] else ""
            lines.append(f"  {label:<10} {where} statement {s['index']}{sid}")
            label = ""
        if data["grant_id"]:
            lines.append(f"  decided by grant {data['grant_id']}")
        if self.note:
            lines.append(f"  note       {self.note}")
        for name in self.skipped_policies:
            lines.append(f"  skipped    identity policy {name!r}: it no longer parses and grants nothing")
        return "\n".join(lines)


def _principal(arn: str) -> Principal:
    match = _PRINCIPAL.fullmatch(arn)
    if match is None:
        raise UsageError(f"--principal must be an IAM root, user or role ARN, got {arn[:80]!r}")
    account, rest = match.group(1), match.group(2)
    kind, _, name = rest.partition("/")
    return Principal(arn, account, PrincipalKind(kind), name, "")


def _context(pairs: list[str] | None) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--context takes k=v, got {pair[:80]!r}")
        context[key] = value
    return context


async def simulate(
    database_url: str,
    *,
    region: str | None,
    principal_arn: str,
    action: str,
    key: str,
    context: dict[str, str],
    source_ip: str | None = None,
    now: dt.datetime | None = None,
) -> Simulation:
    """Load the inputs of one decision from ``region``'s database and decide (see module docstring)."""
    from regiond.store import aliases as alias_store
    from regiond.store import grants as grant_store
    from regiond.store import iam as iam_store
    from regiond.store import keys as key_store
    from regiond.store.pool import connection, create_pool

    principal = _principal(principal_arn)
    try:
        ref = ids.parse_key_reference(key)
        if region is not None:
            ref.require_region(region)
    except KmsError as exc:
        raise UsageError(f"--key: {exc.message}") from None
    account = ref.account or principal.account_id
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with connection(pool) as con:
            if not await iam_store.account_exists(con, principal.account_id):
                raise UsageError(f"account {principal.account_id} does not exist in this region")
            try:
                await iam_store.get_principal(con, principal.arn)
            except KmsError:
                raise UsageError(f"principal {principal.arn} does not exist") from None
            key_id = ref.key_id
            if ref.is_alias:
                assert ref.alias_name is not None
                key_id = await alias_store.resolve(con, account, ref.alias_name)
            record = await key_store.get_key(con, key_id) if key_id else None
            if record is None or record.key.account != account:
                raise UsageError(f"key {key} does not exist in {region or 'this database'}")
            documents = await iam_store.identity_policies(con, principal.arn)
            grants = tuple(g.view() for g in await grant_store.for_key(con, record.key.key_id))
    finally:
        await pool.close()

    names: list[str] = []
    identity: list[Policy] = []
    skipped: list[str] = []
    for name, document in documents.items():
        try:
            identity.append(parse_policy(document, PolicyKind.IDENTITY))
            names.append(name)
        except KmsError:
            skipped.append(name)
    moment = now or dt.datetime.now(dt.UTC)
    values = {"aws:CurrentTime": (moment.strftime("%Y-%m-%dT%H:%M:%SZ"),)}
    if source_ip:
        values["aws:SourceIp"] = (source_ip,)
    ctx = RequestContext(
        principal_arn=principal.arn,
        principal_account=principal.account_id,
        action=action,
        resource_arn=record.key.arn,
        values={**values, **key_values(record.key)},
        encryption_context=context,
    )
    decision = evaluate(
        principal=principal, key=record.key, key_policy=parse_policy(record.policy, PolicyKind.KEY),
        identity=identity, grants=grants, ctx=ctx,
    )  # fmt: skip
    note = ""
    if principal.account_id != record.key.account and ctx.action_key not in CROSS_ACCOUNT_ACTIONS:
        note = f"{action} cannot be used on a key of another account"
    return Simulation(principal.arn, action, record.key.arn, decision, tuple(names), tuple(skipped), note)


def _database(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.cluster:
        entry = cluster_file.region_entry(args.cluster, args.region)
        return entry.database_url, entry.region
    if args.database_url:
        return str(args.database_url), args.region
    raise UsageError("give --cluster DIR/cluster.json --region R, or --database-url URL")


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        url, region = _database(args)
        result = asyncio.run(
            simulate(
                url, region=region, principal_arn=args.principal, action=args.action, key=args.key,
                context=_context(args.context), source_ip=args.source_ip,
            )
        )  # fmt: skip
    except UsageError as exc:
        print(f"regiond policy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result.to_json(), indent=2) if args.format == "json" else result.to_text())
    return EXIT_ALLOWED if result.decision.allowed else EXIT_DENIED


def add_policy_parser(sub: Any) -> None:
    p = sub.add_parser("policy", help="inspect authorization decisions")
    cmds = p.add_subparsers(dest="policy_command", required=True)
    c = cmds.add_parser("simulate", help="would PRINCIPAL be allowed ACTION on KEY, and which statements decide")
    c.add_argument("--principal", required=True, help="IAM user, role or account root ARN")
    c.add_argument("--action", required=True, help="e.g. kms:Decrypt")
    c.add_argument("--key", required=True, help="key id, key ARN, alias name or alias ARN")
    c.add_argument("--context", action="append", metavar="K=V", help="encryption context pair (repeatable)")
    c.add_argument("--source-ip", help="aws:SourceIp of the simulated request")
    c.add_argument("--cluster", help="DIR/cluster.json of a local cluster")
    c.add_argument("--region", help="the region (required with --cluster)")
    c.add_argument("--database-url", help="one region's database")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.set_defaults(func=cmd_simulate)
