"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, GenerateRandom.

Parse -> call ``CryptoService`` -> render. ``KeyId`` in every response is the key ARN, as AWS
returns it. The call record gets the key ARNs and, where CloudTrail has them, the encryption
context and key id; never plaintext, data keys or blobs.
"""

from __future__ import annotations

from regiond.errors import ValidationException
from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester
from regiond.service.cryptops import IGNORE_CIPHERTEXT
from regiond.service.recipient import refuse_recipient

__all__ = ["HANDLERS"]


def _no_recipient(params: Params) -> None:
    refuse_recipient(params.get("Recipient"))


def _ignores_ciphertext(params: Params) -> bool:
    return IGNORE_CIPHERTEXT in (params.get("DryRunModifiers") or ())


def _blob(params: Params) -> bytes | None:
    # Optional in the model (Recipient flows, IGNORE_CIPHERTEXT dry runs), required otherwise.
    blob = params.get("CiphertextBlob")
    if blob is None:
        if params.get("DryRun") and _ignores_ciphertext(params):
            return None
        raise ValidationException(
            "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: "
            "Member must not be null"
        )
    return bytes(blob)


def _audit(ctx: OpContext, key_arn: str, context: dict[str, str] | None) -> None:
    ctx.record.resources.append(key_arn)
    ctx.record.additional.setdefault("keyId", key_arn)
    if context:
        ctx.record.additional.setdefault("encryptionContext", dict(context))


async def encrypt(ctx: OpContext, params: Params) -> Result:
    context = params.get("EncryptionContext")
    result = await ctx.services.cryptops.encrypt(
        requester(ctx), params["KeyId"], params["Plaintext"], context,
        algorithm=params.get("EncryptionAlgorithm"), dry_run=bool(params.get("DryRun", False)),
    )  # fmt: skip
    _audit(ctx, result.key_arn, context)
    return {"CiphertextBlob": result.blob, "KeyId": result.key_arn, "EncryptionAlgorithm": result.algorithm}


async def decrypt(ctx: OpContext, params: Params) -> Result:
    _no_recipient(params)
    blob = _blob(params)
    context = params.get("EncryptionContext")
    result = await ctx.services.cryptops.decrypt(
        requester(ctx), blob, context, params.get("KeyId"),
        algorithm=params.get("EncryptionAlgorithm"), dry_run=bool(params.get("DryRun", False)),
        ignore_ciphertext=_ignores_ciphertext(params),
    )  # fmt: skip
    _audit(ctx, result.key_arn, context)
    return {
        "KeyId": result.key_arn, "Plaintext": result.plaintext, "EncryptionAlgorithm": result.algorithm,
        "KeyMaterialId": result.key_material_id,
    }  # fmt: skip


async def re_encrypt(ctx: OpContext, params: Params) -> Result:
    blob = _blob(params)
    source, result = await ctx.services.cryptops.re_encrypt(
        requester(ctx), blob,
        source_context=params.get("SourceEncryptionContext"), source_key=params.get("SourceKeyId"),
        destination_key=params["DestinationKeyId"],
        destination_context=params.get("DestinationEncryptionContext"),
        source_algorithm=params.get("SourceEncryptionAlgorithm"),
        destination_algorithm=params.get("DestinationEncryptionAlgorithm"),
        dry_run=bool(params.get("DryRun", False)), ignore_ciphertext=_ignores_ciphertext(params),
    )  # fmt: skip
    ctx.record.resources.extend([source.key_arn, result.key_arn])
    return {
        "CiphertextBlob": result.blob,
        "SourceKeyId": source.key_arn,
        "KeyId": result.key_arn,
        "SourceEncryptionAlgorithm": source.algorithm,
        "DestinationEncryptionAlgorithm": result.algorithm,
        "SourceKeyMaterialId": source.key_material_id,
        "DestinationKeyMaterialId": result.key_material_id,
    }


async def _generate(ctx: OpContext, params: Params, *, with_plaintext: bool) -> Result:
    _no_recipient(params)
    context = params.get("EncryptionContext")
    data_key, result = await ctx.services.cryptops.generate_data_key(
        requester(ctx), params["KeyId"], context,
        key_spec=params.get("KeySpec"), number_of_bytes=params.get("NumberOfBytes"),
        with_plaintext=with_plaintext, dry_run=bool(params.get("DryRun", False)),
    )  # fmt: skip
    _audit(ctx, result.key_arn, context)
    out: Result = {"CiphertextBlob": result.blob, "KeyId": result.key_arn, "KeyMaterialId": result.key_material_id}
    if with_plaintext:
        out["Plaintext"] = data_key
    return out


async def generate_data_key(ctx: OpContext, params: Params) -> Result:
    return await _generate(ctx, params, with_plaintext=True)


async def generate_data_key_without_plaintext(ctx: OpContext, params: Params) -> Result:
    return await _generate(ctx, params, with_plaintext=False)


async def generate_random(ctx: OpContext, params: Params) -> Result:
    _no_recipient(params)
    data = await ctx.services.cryptops.generate_random(
        requester(ctx), params.get("NumberOfBytes"), custom_key_store_id=params.get("CustomKeyStoreId")
    )
    return {"Plaintext": data}


HANDLERS: dict[str, OpHandler] = {
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "ReEncrypt": re_encrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "GenerateRandom": generate_random,
}
