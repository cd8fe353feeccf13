"""Imported key material operations: parse -> call ``ImportService`` -> render.

GetParametersForImport, ImportKeyMaterial and DeleteImportedKeyMaterial; the token format,
the wrapping algorithms and the state rules live in ``service.importing`` and
``crypto.import_wrap``. The blobs (``ImportToken``, ``EncryptedKeyMaterial``) arrive decoded
by the shapes layer and are never echoed or audited (audit's deny list).
"""

from __future__ import annotations

from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester
from regiond.service.importing import ImportMaterialRequest

__all__ = ["HANDLERS"]


async def get_parameters_for_import(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.importing.get_parameters_for_import(
        requester(ctx), params["KeyId"], params["WrappingAlgorithm"], params["WrappingKeySpec"], ctx.now
    )
    ctx.record.resources.append(result.key.arn)
    return {
        "KeyId": result.key.arn,
        "ImportToken": result.import_token,
        "PublicKey": result.public_key,
        "ParametersValidTo": result.valid_to,
    }


async def import_key_material(ctx: OpContext, params: Params) -> Result:
    request = ImportMaterialRequest(
        import_token=params["ImportToken"],
        encrypted_key_material=params["EncryptedKeyMaterial"],
        expiration_model=params.get("ExpirationModel"),
        valid_to=params.get("ValidTo"),
        import_type=params.get("ImportType"),
        description=params.get("KeyMaterialDescription"),
        key_material_id=params.get("KeyMaterialId"),
    )
    importing = ctx.services.importing
    key, material_id = await importing.import_key_material(requester(ctx), params["KeyId"], request, ctx.now)
    ctx.record.resources.append(key.arn)
    return {"KeyId": key.arn, "KeyMaterialId": material_id}


async def delete_imported_key_material(ctx: OpContext, params: Params) -> Result:
    key, material_id = await ctx.services.importing.delete_imported_key_material(
        requester(ctx), params["KeyId"], params.get("KeyMaterialId"), ctx.now
    )
    ctx.record.resources.append(key.arn)
    return {"KeyId": key.arn, "KeyMaterialId": material_id}


HANDLERS: dict[str, OpHandler] = {
    "GetParametersForImport": get_parameters_for_import,
    "ImportKeyMaterial": import_key_material,
    "DeleteImportedKeyMaterial": delete_imported_key_material,
}
