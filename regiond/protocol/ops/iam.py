"""The IAM-style admin operations, on the same JSON protocol under the ``RegionKmsIam`` target prefix.

AWS keeps users, access keys and identity policies in IAM; regionkms serves the subset a
KMS deployment needs. An account's root may manage its own account; any other principal
needs an identity policy allowing ``iam:<Operation>`` on the target's ARN, as the service decides
(``service/iam_authz.py``, ``IamAuthorizer.authorize``); handlers only parse and render. Parameters
use IAM's names (UserName, RoleName, PolicyName, PolicyDocument, AccessKeyId, Status).
"""

from __future__ import annotations

from typing import Any

from regiond.domain.principal import PrincipalKind, principal_arn, require_name
from regiond.errors import NoSuchEntity, ValidationException
from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester


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


async def _authorize(ctx: OpContext, operation: str, resource_arn: str) -> None:
    """The service's decision (``IamAuthorizer.authorize``) for this request's caller and condition keys."""
    await ctx.services.iam_authz.authorize(ctx.caller.principal, operation, resource_arn, requester(ctx).values)


def _target(ctx: OpContext, params: Params) -> tuple[PrincipalKind, str, str]:
    """The user or role an access-key call names, or the caller itself when it names neither.

    AWS IAM: "If you do not specify a user name, IAM determines the user name implicitly based
    on the access key ID signing the request" (CreateAccessKey, ListAccessKeys, UpdateAccessKey,
    DeleteAccessKey). Never the account root: a user's unnamed call acts on the user.
    """
    if params.get("UserName"):
        name = require_name(_str(params, "UserName"), "UserName")
        kind = PrincipalKind.USER
    elif params.get("RoleName"):
        name = require_name(_str(params, "RoleName"), "RoleName")
        kind = PrincipalKind.ROLE
    else:
        caller = ctx.caller.principal
        return caller.kind, caller.name, caller.arn
    return kind, name, principal_arn(ctx.account_id, kind, name)


def _policy_target(ctx: OpContext, params: Params, kind: PrincipalKind) -> str:
    """The user or role an inline-policy call names: required, as in AWS (``UserName`` for the
    ``*UserPolicy`` operations, ``RoleName`` for ``*RolePolicy``)."""
    member = "UserName" if kind is PrincipalKind.USER else "RoleName"
    return principal_arn(ctx.account_id, kind, require_name(_str(params, member), member))


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


def _policy_ops(kind: PrincipalKind) -> tuple[OpHandler, OpHandler, OpHandler]:
    """Put, Get and Delete of inline policies of users (``*UserPolicy``) or roles (``*RolePolicy``),
    each authorized as its own IAM action."""
    label = "User" if kind is PrincipalKind.USER else "Role"

    async def put_policy(ctx: OpContext, params: Params) -> Result:
        arn = _policy_target(ctx, params, kind)
        await _authorize(ctx, f"Put{label}Policy", arn)
        await ctx.services.iam.put_identity_policy(arn, _str(params, "PolicyName"), _str(params, "PolicyDocument"))
        return {}

    async def get_policy(ctx: OpContext, params: Params) -> Result:
        arn = _policy_target(ctx, params, kind)
        await _authorize(ctx, f"Get{label}Policy", arn)
        policy_name = _str(params, "PolicyName")
        docs = await ctx.services.iam.identity_policies(arn)
        if policy_name not in docs:
            raise NoSuchEntity(f"The policy {policy_name} was not found for {arn}")
        return {"PolicyName": policy_name, "PolicyDocument": docs[policy_name]}

    async def delete_policy(ctx: OpContext, params: Params) -> Result:
        arn = _policy_target(ctx, params, kind)
        await _authorize(ctx, f"Delete{label}Policy", arn)
        await ctx.services.iam.delete_identity_policy(arn, _str(params, "PolicyName"))
        return {}

    return put_policy, get_policy, delete_policy


_put_user_policy, _get_user_policy, _delete_user_policy = _policy_ops(PrincipalKind.USER)
_put_role_policy, _get_role_policy, _delete_role_policy = _policy_ops(PrincipalKind.ROLE)


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
    "PutUserPolicy": _put_user_policy,
    "PutRolePolicy": _put_role_policy,
    "GetUserPolicy": _get_user_policy,
    "GetRolePolicy": _get_role_policy,
    "DeleteUserPolicy": _delete_user_policy,
    "DeleteRolePolicy": _delete_role_policy,
    "GetCallerIdentity": get_caller_identity,
}
