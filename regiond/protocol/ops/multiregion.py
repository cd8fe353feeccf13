"""ReplicateKey and UpdatePrimaryRegion: parse -> call ``MultiRegionService`` -> render."""

from __future__ import annotations

from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import key_metadata, requester

__all__ = ["HANDLERS"]


async def replicate_key(ctx: OpContext, params: Params) -> Result:
    done = await ctx.services.multiregion.replicate_key(
        requester(ctx),
        params["KeyId"],
        params["ReplicaRegion"],
        policy=params.get("Policy"),
        bypass_policy_lockout_safety_check=params.get("BypassPolicyLockoutSafetyCheck"),
        description=params.get("Description", ""),
        tags=[(t["TagKey"], t["TagValue"]) for t in params.get("Tags", ())],
        now=ctx.now,
    )
    config = done.replica.multi_region_configuration
    if config is not None:
        ctx.record.resources.append(config.primary_key.arn)
    ctx.record.resources.append(done.replica.arn)
    return {
        "ReplicaKeyMetadata": key_metadata(done.replica),
        "ReplicaPolicy": done.policy,
        "ReplicaTags": [{"TagKey": k, "TagValue": v} for k, v in done.tags],
    }


async def update_primary_region(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.multiregion.update_primary_region(
        requester(ctx), params["KeyId"], params["PrimaryRegion"], ctx.now
    )
    ctx.record.resources.append(key.arn)
    return {}


HANDLERS: dict[str, OpHandler] = {
    "ReplicateKey": replicate_key,
    "UpdatePrimaryRegion": update_primary_region,
}
