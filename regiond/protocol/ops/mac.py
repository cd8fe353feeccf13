"""GenerateMac and VerifyMac: parse -> call ``MacService`` -> render.

``KeyId`` in the response is the key ARN, as AWS returns it. The call record gets the key ARN;
the audit allow-list records KeyId and MacAlgorithm, never the message or the MAC.
"""

from __future__ import annotations

from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester

__all__ = ["HANDLERS"]


async def generate_mac(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.macs.generate_mac(
        requester(ctx), params["KeyId"], params["Message"], params["MacAlgorithm"],
        dry_run=bool(params.get("DryRun", False)),
    )  # fmt: skip
    ctx.record.resources.append(result.key_arn)
    return {"Mac": result.mac, "MacAlgorithm": result.algorithm.value, "KeyId": result.key_arn}


async def verify_mac(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.macs.verify_mac(
        requester(ctx), params["KeyId"], params["Message"], params["MacAlgorithm"], params["Mac"],
        dry_run=bool(params.get("DryRun", False)),
    )  # fmt: skip
    ctx.record.resources.append(result.key_arn)
    return {"KeyId": result.key_arn, "MacValid": True, "MacAlgorithm": result.algorithm.value}


HANDLERS: dict[str, OpHandler] = {"GenerateMac": generate_mac, "VerifyMac": verify_mac}
