"""CreateAlias, UpdateAlias, DeleteAlias, ListAliases: parse -> call ``AliasService`` -> render."""

from __future__ import annotations

from regiond.domain import ids
from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester

__all__ = ["HANDLERS"]


async def create_alias(ctx: OpContext, params: Params) -> Result:
    key_arn = await ctx.services.aliases.create_alias(
        requester(ctx), params["AliasName"], params["TargetKeyId"], ctx.now
    )
    ctx.record.resources.append(key_arn)
    return {}


async def update_alias(ctx: OpContext, params: Params) -> Result:
    old, new = await ctx.services.aliases.update_alias(
        requester(ctx), params["AliasName"], params["TargetKeyId"], ctx.now
    )
    ctx.record.resources.extend([old, new])
    return {}


async def delete_alias(ctx: OpContext, params: Params) -> Result:
    ctx.record.resources.append(await ctx.services.aliases.delete_alias(requester(ctx), params["AliasName"]))
    return {}


async def list_aliases(ctx: OpContext, params: Params) -> Result:
    page = await ctx.services.aliases.list_aliases(
        requester(ctx), params.get("KeyId"), limit=params.get("Limit"), marker=params.get("Marker")
    )
    region = ctx.services.settings.region
    return {
        "Aliases": [
            {
                "AliasName": a.alias_name,
                "AliasArn": ids.alias_arn(region, a.account, a.alias_name),
                "TargetKeyId": a.key_id,
                "CreationDate": a.creation_date,
                "LastUpdatedDate": a.last_updated_date,
            }
            for a in page.items
        ],
        "NextMarker": page.next_marker,
        "Truncated": page.truncated,
    }


HANDLERS: dict[str, OpHandler] = {
    "CreateAlias": create_alias,
    "UpdateAlias": update_alias,
    "DeleteAlias": delete_alias,
    "ListAliases": list_aliases,
}
