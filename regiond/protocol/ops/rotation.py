"""Rotation operations: parse -> call ``RotationService`` -> render (Vault path_*.go).

EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand and
ListKeyRotations; the semantics (origins, limits, conflicts) live in ``service.rotation``.
"""

from __future__ import annotations

from typing import Any

from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester
from regiond.service.rotation import RotationEntry

__all__ = ["HANDLERS"]


def _entry(key_id: str, entry: RotationEntry) -> dict[str, Any]:
    return {
        "KeyId": key_id,
        "KeyMaterialId": entry.key_material_id,
        "KeyMaterialDescription": entry.description,
        "ImportState": entry.import_state,
        "KeyMaterialState": entry.state.value,
        "ExpirationModel": entry.expiration_model,
        "ValidTo": entry.valid_to,
        "RotationDate": entry.rotation_date,
        "RotationType": entry.rotation_type.value if entry.rotation_type else None,
    }


async def enable_key_rotation(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.rotation.enable_key_rotation(
        requester(ctx), params["KeyId"], params.get("RotationPeriodInDays"), ctx.now
    )
    ctx.record.resources.append(key.arn)
    return {}


async def disable_key_rotation(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.rotation.disable_key_rotation(requester(ctx), params["KeyId"], ctx.now)
    ctx.record.resources.append(key.arn)
    return {}


async def get_key_rotation_status(ctx: OpContext, params: Params) -> Result:
    status = await ctx.services.rotation.get_key_rotation_status(requester(ctx), params["KeyId"])
    ctx.record.resources.append(status.key.arn)
    return {
        "KeyRotationEnabled": status.enabled,
        "KeyId": status.key.key_id,
        "RotationPeriodInDays": status.period_days,
        "NextRotationDate": status.next_rotation_date,
        "OnDemandRotationStartDate": status.on_demand_started_at,
    }


async def rotate_key_on_demand(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.rotation.rotate_key_on_demand(requester(ctx), params["KeyId"], ctx.now)
    ctx.record.resources.append(key.arn)
    return {"KeyId": key.key_id}


async def list_key_rotations(ctx: OpContext, params: Params) -> Result:
    key, page = await ctx.services.rotation.list_key_rotations(
        requester(ctx), params["KeyId"], include_key_material=params.get("IncludeKeyMaterial"),
        limit=params.get("Limit"), marker=params.get("Marker"),
    )  # fmt: skip
    ctx.record.resources.append(key.arn)
    return {
        "Rotations": [_entry(key.key_id, e) for e in page.items],
        "NextMarker": page.next_marker,
        "Truncated": page.truncated,
    }


HANDLERS: dict[str, OpHandler] = {
    "EnableKeyRotation": enable_key_rotation,
    "DisableKeyRotation": disable_key_rotation,
    "GetKeyRotationStatus": get_key_rotation_status,
    "RotateKeyOnDemand": rotate_key_on_demand,
    "ListKeyRotations": list_key_rotations,
}
