"""The authorization differential table end to end: the rows marked ``e2e`` through boto3 against a
real node (real HTTP, SigV4, PostgreSQL, caches), expecting AWS's decision (tests/support/authz_cases.py).

One node serves every row; each row gets its own key and its own users (the table's alice,
bob and carol become ``alice-<n>`` ..., its key ARN the row's key's), so rows cannot see each
other's policies or grants. A row's key starts with the default key policy: the admin encrypts
under it (for Decrypt) and makes the row's grants, then puts the row's key policy (bypassing
the lockout check, as a row may lock everyone out) and the row's caller makes its one call.
Allowed means the call succeeds; denied means ``AccessDeniedException``; any other answer
fails the row.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import botocore.exceptions

from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.protocol.routes import SERVICES
from tests.support import authz_cases as t
from tests.support.cluster import Identity, Node, NodeFactory

E2E = [c for c in t.CASES if c.e2e]
QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600"}
ADMIN = f"arn:aws:iam::{t.ACCOUNT}:user/admin"
ADMIN_IAM = ({"Effect": "Allow", "Action": "kms:*", "Resource": "*"},)


def document(statements: Any) -> str:
    cleaned = [{k: v for k, v in s.items() if v is not None} for s in statements]
    return json.dumps({"Version": "2012-10-17", "Statement": cleaned})


def rename(value: Any, names: dict[str, str]) -> Any:
    """``value`` (policy statements) with the table's principals replaced by this row's users."""
    text = json.dumps(value)
    for old, new in names.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    return json.loads(text)


class World:
    """The node and its IAM; identities are made in the node's own IAM service (no cache delay)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.iam = node.app[SERVICES].iam
        self.roots: dict[str, Identity] = {}

    async def identity(self, arn: str, statements: Any = ()) -> Identity:
        account, rest = arn.split(":")[4], arn.split(":")[5]
        await self.iam.ensure_account(account)
        if rest != "root":
            kind, name = rest.split("/", 1)
            await self.iam.create_principal(account, PrincipalKind(kind), name)
        if statements:
            await self.iam.put_identity_policy(arn, "inline", document(statements))
        new = await self.iam.create_access_key(arn)
        return Identity(arn, new.access_key_id, new.secret_access_key)

    async def root(self, account: str) -> Identity:
        if account not in self.roots:
            self.roots[account] = await self.identity(principal_arn(account, PrincipalKind.ROOT, ""))
        return self.roots[account]


async def allowed(fn: Any, **kwargs: Any) -> bool:
    try:
        await asyncio.to_thread(fn, **kwargs)
    except botocore.exceptions.ClientError as exc:
        error = exc.response["Error"]
        assert error["Code"] == "AccessDeniedException", error
        return False
    return True


async def aws(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def run(world: World, admin: Any, n: int, case: t.Case) -> bool:
    names = {t.ALICE: f"{t.ALICE}-{n}", t.BOB: f"{t.BOB}-{n}", t.CAROL: f"{t.CAROL}-{n}"}
    key = ""
    alias = f"alias/row-{n}"
    if case.action not in ("kms:CreateKey", "kms:ListKeys"):
        key = (await aws(admin.create_key, Description=case.name))["KeyMetadata"]["Arn"]
        names[t.KEY_ARN] = key
        names[t.ALIAS_ARN] = f"{key.split(':key/')[0]}:{alias}"
        names[t.ALIAS] = alias
        if case.action in ("kms:UpdateAlias", "kms:DeleteAlias") or case.by_alias:
            await aws(admin.create_alias, AliasName=alias, TargetKeyId=key)
    users = {arn: await world.identity(arn, rename(case.iam, names) if table == case.caller else ())
             for table, arn in names.items() if table not in (t.KEY_ARN, t.ALIAS_ARN, t.ALIAS)}  # fmt: skip
    if case.caller.endswith(":root"):
        assert not case.iam, "a root's own identity policy is not part of this table"
        caller = await world.root(case.caller.split(":")[4])
    else:
        caller = users[names[case.caller]]
    kms = world.node.client(caller)
    if case.action == "kms:CreateKey":
        return await allowed(kms.create_key, **case.create)
    if case.action == "kms:ListKeys":
        return await allowed(kms.list_keys)

    context = {"EncryptionContext": case.context} if case.context else {}
    blob = (await aws(admin.encrypt, KeyId=key, Plaintext=n.to_bytes(4, "big"), **context))["CiphertextBlob"]
    tokens = []
    for grant in case.grants:
        constraints: dict[str, Any] = {}
        if grant.equals is not None:
            constraints["EncryptionContextEquals"] = grant.equals
        if grant.subset is not None:
            constraints["EncryptionContextSubset"] = grant.subset
        made = await aws(admin.create_grant, KeyId=key, GranteePrincipal=names.get(grant.grantee, grant.grantee),
                         Operations=list(grant.operations), **({"Constraints": constraints} if constraints else {}))
        tokens.append(made["GrantToken"])  # fmt: skip
    if case.key_policy is not None:
        await aws(admin.put_key_policy, KeyId=key, Policy=document(rename(case.key_policy, names)),
                  BypassPolicyLockoutSafetyCheck=True)  # fmt: skip
    with_tokens = {"GrantTokens": tokens} if tokens else {}
    if case.by_alias:
        key = alias  # the call names the key by its alias (kms:RequestAlias)
    match case.action:
        case "kms:Decrypt":
            return await allowed(kms.decrypt, CiphertextBlob=blob, KeyId=key, **context, **with_tokens)
        case "kms:Encrypt":
            return await allowed(kms.encrypt, KeyId=key, Plaintext=b"x", **context, **with_tokens)
        case "kms:GenerateDataKey":
            return await allowed(kms.generate_data_key, KeyId=key, NumberOfBytes=32, **context, **with_tokens)
        case "kms:DescribeKey":
            return await allowed(kms.describe_key, KeyId=key, **with_tokens)
        case "kms:ScheduleKeyDeletion":
            return await allowed(kms.schedule_key_deletion, KeyId=key, PendingWindowInDays=7)
        case "kms:TagResource":
            return await allowed(kms.tag_resource, KeyId=key, Tags=case.create["Tags"])
        case "kms:UntagResource":
            return await allowed(kms.untag_resource, KeyId=key, TagKeys=case.create["TagKeys"])
        case "kms:CreateAlias":
            return await allowed(kms.create_alias, AliasName=alias, TargetKeyId=key)
        case "kms:UpdateAlias":
            return await allowed(kms.update_alias, AliasName=alias, TargetKeyId=key)
        case "kms:DeleteAlias":
            return await allowed(kms.delete_alias, AliasName=alias)
        case "kms:ReEncryptFrom":  # onto the same key: kms:ReEncryptOnSameKey is true
            return await allowed(kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=key, **with_tokens,
                                 **({"SourceEncryptionContext": case.context} if case.context else {}))  # fmt: skip
        case "kms:GenerateDataKeyPairWithoutPlaintext":
            return await allowed(kms.generate_data_key_pair_without_plaintext, KeyId=key, KeyPairSpec="ECC_NIST_P256",
                                 **context, **with_tokens)  # fmt: skip
    raise AssertionError(f"{case.name}: no end-to-end call for {case.action}")


async def test_aws_decisions_end_to_end(nodes: NodeFactory) -> None:
    """Every e2e row in one node (a node per row would cost a minute); all rows run, then all failures
    are reported together, each with the AWS rule it breaks."""
    node = await nodes.start(extra=QUIET)
    world = World(node)
    admin = node.client(await world.identity(ADMIN, ADMIN_IAM))
    wrong = []
    for n, case in enumerate(E2E):
        got = await run(world, admin, n, case)
        if got is not case.allowed:
            wrong.append(f"{case.name}: got {got}, AWS says {case.allowed} ({case.rule})")
    assert not wrong, "\n".join(wrong)
    assert len(E2E) >= 40
