"""GetKeyPolicy, PutKeyPolicy, ListKeyPolicies: parse -> call ``KeyPolicyService`` -> render."""

from __future__ import annotations

from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester
from regiond.service.policies import DEFAULT_POLICY_NAME

__all__ = ["HANDLERS"]


async def get_key_policy(ctx: OpContext, params: Params) -> Result:
    key, document = await ctx.services.policies.get_key_policy(
        requester(ctx), params["KeyId"], params.get("PolicyName")
    )
    ctx.record.resources.append(key.arn)
    return {"Policy": document, "PolicyName": DEFAULT_POLICY_NAME}


async def put_key_policy(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.policies.put_key_policy(
        requester(ctx), params["KeyId"], params.get("PolicyName"), params["Policy"],
        bypass_lockout_check=params.get("BypassPolicyLockoutSafetyCheck"), now=ctx.now,
    )  # fmt: skip
    ctx.record.resources.append(key.arn)
    return {}


async def list_key_policies(ctx: OpContext, params: Params) -> Result:
    key, page = await ctx.services.policies.list_key_policies(
        requester(ctx), params["KeyId"], limit=params.get("Limit"), marker=params.get("Marker")
    )
    ctx.record.resources.append(key.arn)
    return {"PolicyNames": page.items, "NextMarker": page.next_marker, "Truncated": page.truncated}


HANDLERS: dict[str, OpHandler] = {
    "GetKeyPolicy": get_key_policy,
    "PutKeyPolicy": put_key_policy,
    "ListKeyPolicies": list_key_policies,
}
