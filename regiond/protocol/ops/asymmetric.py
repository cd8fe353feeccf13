"""Sign, Verify, GetPublicKey, DeriveSharedSecret, Encapsulate, Decapsulate, GenerateDataKeyPair(+WithoutPlaintext).

Parse -> call ``AsymmetricService`` / ``DataKeyPairService`` -> render. ``KeyId`` in every
response is the key ARN, as AWS returns it. The call record gets the key ARN (and, for data key
pairs, the encryption context); the audit allow-list records the members CloudTrail records for
these operations, never a message, signature, public or private key, shared secret or blob.
"""

from __future__ import annotations

from typing import Any

from regiond.domain.key import EncapsulationAlgorithm, Key, KeyAgreementAlgorithm
from regiond.domain.keyspec import LEGACY_CUSTOMER_MASTER_KEY_SPECS
from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester
from regiond.service.recipient import refuse_recipient

__all__ = ["HANDLERS"]

ECDH = KeyAgreementAlgorithm.ECDH.value
ML_KEM = EncapsulationAlgorithm.ML_KEM.value


def _dry_run(params: Params) -> bool:
    return bool(params.get("DryRun", False))


async def sign(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.asymmetric.sign(
        requester(ctx), params["KeyId"], params["Message"], params["SigningAlgorithm"], params.get("MessageType"),
        dry_run=_dry_run(params),
    )  # fmt: skip
    ctx.record.resources.append(result.key_arn)
    return {"KeyId": result.key_arn, "Signature": result.signature, "SigningAlgorithm": result.algorithm.value}


async def verify(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.asymmetric.verify(
        requester(ctx), params["KeyId"], params["Message"], params["Signature"], params["SigningAlgorithm"],
        params.get("MessageType"), dry_run=_dry_run(params),
    )  # fmt: skip
    ctx.record.resources.append(result.key_arn)
    return {"KeyId": result.key_arn, "SignatureValid": True, "SigningAlgorithm": result.algorithm.value}


def _algorithms(key: Key) -> dict[str, Any]:
    return {
        "EncryptionAlgorithms": [a.value for a in key.encryption_algorithms] or None,
        "SigningAlgorithms": [a.value for a in key.signing_algorithms] or None,
        "KeyAgreementAlgorithms": [a.value for a in key.key_agreement_algorithms] or None,
        "EncapsulationAlgorithms": [a.value for a in key.encapsulation_algorithms] or None,
    }


async def get_public_key(ctx: OpContext, params: Params) -> Result:
    info = await ctx.services.asymmetric.get_public_key(requester(ctx), params["KeyId"])
    ctx.record.resources.append(info.key_arn)
    key = info.key
    legacy = key.key_spec.value if key.key_spec in LEGACY_CUSTOMER_MASTER_KEY_SPECS else None
    return {
        "KeyId": info.key_arn, "PublicKey": info.public_key, "CustomerMasterKeySpec": legacy,
        "KeySpec": key.key_spec.value, "KeyUsage": key.key_usage.value, **_algorithms(key),
    }  # fmt: skip


async def derive_shared_secret(ctx: OpContext, params: Params) -> Result:
    refuse_recipient(params.get("Recipient"))
    result = await ctx.services.asymmetric.derive_shared_secret(
        requester(ctx), params["KeyId"], params["KeyAgreementAlgorithm"], params["PublicKey"],
        dry_run=_dry_run(params),
    )  # fmt: skip
    ctx.record.resources.append(result.key_arn)
    return {
        "KeyId": result.key_arn, "SharedSecret": result.shared_secret, "KeyAgreementAlgorithm": ECDH,
        "KeyOrigin": result.key.origin.value,
    }  # fmt: skip


async def encapsulate(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.asymmetric.encapsulate(requester(ctx), params["KeyId"], dry_run=_dry_run(params))
    ctx.record.resources.append(result.key_arn)
    return {
        "KeyId": result.key_arn, "SharedSecret": result.shared_secret,
        "SharedSecretCiphertextBlob": result.ciphertext, "EncapsulationAlgorithm": ML_KEM,
    }  # fmt: skip


async def decapsulate(ctx: OpContext, params: Params) -> Result:
    result = await ctx.services.asymmetric.decapsulate(
        requester(ctx), params["KeyId"], params["SharedSecretCiphertextBlob"], dry_run=_dry_run(params)
    )
    ctx.record.resources.append(result.key_arn)
    return {"KeyId": result.key_arn, "SharedSecret": result.shared_secret, "EncapsulationAlgorithm": ML_KEM}


async def _data_key_pair(ctx: OpContext, params: Params, *, with_plaintext: bool) -> Result:
    refuse_recipient(params.get("Recipient"))
    context = params.get("EncryptionContext")
    pair = await ctx.services.data_key_pairs.generate(
        requester(ctx), params["KeyId"], params["KeyPairSpec"], context,
        with_plaintext=with_plaintext, dry_run=_dry_run(params),
    )  # fmt: skip
    ctx.record.resources.append(pair.sealed.key_arn)
    ctx.record.additional.setdefault("keyId", pair.sealed.key_arn)
    if context:
        ctx.record.additional.setdefault("encryptionContext", dict(context))
    out: Result = {
        "PrivateKeyCiphertextBlob": pair.sealed.blob, "PublicKey": pair.public_key, "KeyId": pair.sealed.key_arn,
        "KeyPairSpec": pair.spec.value, "KeyMaterialId": pair.sealed.key_material_id,
    }  # fmt: skip
    if with_plaintext:
        out["PrivateKeyPlaintext"] = pair.private_plaintext
    return out


async def generate_data_key_pair(ctx: OpContext, params: Params) -> Result:
    return await _data_key_pair(ctx, params, with_plaintext=True)


async def generate_data_key_pair_without_plaintext(ctx: OpContext, params: Params) -> Result:
    return await _data_key_pair(ctx, params, with_plaintext=False)


HANDLERS: dict[str, OpHandler] = {
    "Sign": sign,
    "Verify": verify,
    "GetPublicKey": get_public_key,
    "DeriveSharedSecret": derive_shared_secret,
    "Encapsulate": encapsulate,
    "Decapsulate": decapsulate,
    "GenerateDataKeyPair": generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": generate_data_key_pair_without_plaintext,
}
