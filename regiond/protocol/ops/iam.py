"""The IAM-style admin operations, on the same JSON protocol under the ``RegionKmsIam`` target prefix.

AWS keeps users, access keys and identity policies in IAM; regionkms serves the subset a
KMS deployment needs. An account's root may manage its own account; any other principal
needs an identity policy allowing ``iam:<Operation>`` on the target's ARN. Parameters
use IAM's names (UserName, RoleName, PolicyName, PolicyDocument, AccessKeyId, Status).
"""

from __future__ import annotations

from typing import Any

from regiond.domain.principal import PrincipalKind, principal_arn, require_name
from regiond.errors import AccessDeniedException, NoSuchEntity, ValidationException
from regiond.protocol.context import OpContext, OpHandler, Params, Result

TARGET_PREFIX = "RegionKmsIam"


def _str(params: Params, name: str, *, required: bool = True) -> str:
    value = params.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise ValidationException(
            f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
            "Member must not be null and must be a non-empty string"
        )
    return value


async def _authorize(ctx: OpContext, action: str, resource_arn: str) -> None:
    caller = ctx.caller.principal
    target_account = resource_arn.split(":")[4]
    allowed = await ctx.services.iam_authz.allows(caller, f"iam:{action}", resource_arn)
    if caller.account_id != target_account or not allowed:
        raise AccessDeniedException(
            f"User: {caller.arn} is not authorized to perform: iam:{action} on resource: {resource_arn}"
        )


def _target(ctx: OpContext, params: Params) -> tuple[PrincipalKind, str, str]:
    """The user or role a call names, or the caller's account root when it names neither."""
    if params.get("UserName"):
        name = require_name(_str(params, "UserName"), "UserName")
        kind = PrincipalKind.USER
    elif params.get("RoleName"):
        name = require_name(_str(params, "RoleName"), "RoleName")
        kind = PrincipalKind.ROLE
    else:
        return PrincipalKind.ROOT, "", principal_arn(ctx.account_id, PrincipalKind.ROOT, "")
    return kind, name, principal_arn(ctx.account_id, kind, name)


def _entity(kind: PrincipalKind, name: str, principal_id: str, arn: str) -> dict[str, Any]:
    label = "User" if kind is PrincipalKind.USER else "Role"
    return {f"{label}Name": name, f"{label}Id": principal_id, "Arn": arn}


async def create_user(ctx: OpContext, params: Params) -> Result:
    name = require_name(_str(params, "UserName"), "UserName")
    await _authorize(ctx, "CreateUser", principal_arn(ctx.account_id, PrincipalKind.USER, name))
    p = await ctx.services.iam.create_principal(ctx.account_id, PrincipalKind.USER, name)
    return {"User": _entity(p.kind, p.name, p.principal_id, p.arn)}


async def create_role(ctx: OpContext, params: Params) -> Result:
    name = require_name(_str(params, "RoleName"), "RoleName")
    await _authorize(ctx, "CreateRole", principal_arn(ctx.account_id, PrincipalKind.ROLE, name))
    p = await ctx.services.iam.create_principal(ctx.account_id, PrincipalKind.ROLE, name)
    return {"Role": _entity(p.kind, p.name, p.principal_id, p.arn)}


async def list_users(ctx: OpContext, params: Params) -> Result:
    await _authorize(ctx, "ListUsers", principal_arn(ctx.account_id, PrincipalKind.USER, "*"))
    users = await ctx.services.iam.list_principals(ctx.account_id, PrincipalKind.USER)
    return {"Users": [_entity(p.kind, p.name, p.principal_id, p.arn) for p in users]}


async def list_roles(ctx: OpContext, params: Params) -> Result:
    await _authorize(ctx, "ListRoles", principal_arn(ctx.account_id, PrincipalKind.ROLE, "*"))
    roles = await ctx.services.iam.list_principals(ctx.account_id, PrincipalKind.ROLE)
    return {"Roles": [_entity(p.kind, p.name, p.principal_id, p.arn) for p in roles]}


async def create_access_key(ctx: OpContext, params: Params) -> Result:
    _kind, name, arn = _target(ctx, params)
    await _authorize(ctx, "CreateAccessKey", arn)
    new = await ctx.services.iam.create_access_key(arn)
    return {
        "AccessKey": {
            "UserName": name,
            "AccessKeyId": new.access_key_id,
            "Status": "Active",
            "SecretAccessKey": new.secret_access_key,
        }
    }


async def list_access_keys(ctx: OpContext, params: Params) -> Result:
    _kind, name, arn = _target(ctx, params)
    await _authorize(ctx, "ListAccessKeys", arn)
    keys = await ctx.services.iam.list_access_keys(arn)
    return {"AccessKeyMetadata": [{"UserName": name, "AccessKeyId": k, "Status": s} for k, s in keys]}


async def update_access_key(ctx: OpContext, params: Params) -> Result:
    _kind, _name, arn = _target(ctx, params)
    await _authorize(ctx, "UpdateAccessKey", arn)
    await ctx.services.iam.set_access_key_status(arn, _str(params, "AccessKeyId"), _str(params, "Status"))
    return {}


async def delete_access_key(ctx: OpContext, params: Params) -> Result:
    _kind, _name, arn = _target(ctx, params)
    await _authorize(ctx, "DeleteAccessKey", arn)
    await ctx.services.iam.delete_access_key(arn, _str(params, "AccessKeyId"))
    return {}


async def put_policy(ctx: OpContext, params: Params) -> Result:
    kind, _name, arn = _target(ctx, params)
    action = "PutUserPolicy" if kind is PrincipalKind.USER else "PutRolePolicy"
    await _authorize(ctx, action, arn)
    await ctx.services.iam.put_identity_policy(arn, _str(params, "PolicyName"), _str(params, "PolicyDocument"))
    return {}


async def get_policy(ctx: OpContext, params: Params) -> Result:
    _kind, _name, arn = _target(ctx, params)
    await _authorize(ctx, "GetUserPolicy", arn)
    policy_name = _str(params, "PolicyName")
    docs = await ctx.services.iam.identity_policies(arn)
    if policy_name not in docs:
        raise NoSuchEntity(f"The policy {policy_name} was not found for {arn}")
    return {"PolicyName": policy_name, "PolicyDocument": docs[policy_name]}


async def delete_policy(ctx: OpContext, params: Params) -> Result:
    _kind, _name, arn = _target(ctx, params)
    await _authorize(ctx, "DeleteUserPolicy", arn)
    await ctx.services.iam.delete_identity_policy(arn, _str(params, "PolicyName"))
    return {}


async def get_caller_identity(ctx: OpContext, params: Params) -> Result:
    p = ctx.caller.principal
    return {"Account": p.account_id, "Arn": p.arn, "UserId": p.principal_id}


HANDLERS: dict[str, OpHandler] = {
    "CreateUser": create_user,
    "CreateRole": create_role,
    "ListUsers": list_users,
    "ListRoles": list_roles,
    "CreateAccessKey": create_access_key,
    "ListAccessKeys": list_access_keys,
    "UpdateAccessKey": update_access_key,
    "DeleteAccessKey": delete_access_key,
    "PutUserPolicy": put_policy,
    "PutRolePolicy": put_policy,
    "GetUserPolicy": get_policy,
    "GetRolePolicy": get_policy,
    "DeleteUserPolicy": delete_policy,
    "DeleteRolePolicy": delete_policy,
    "GetCallerIdentity": get_caller_identity,
}
