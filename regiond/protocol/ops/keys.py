"""Key lifecycle and tag operations: parse -> call ``KeyService`` -> render (Vault path_*.go).

Parameters arrive validated against botocore's model (``shapes.validate_request``); the
service enforces the semantics. ``key_metadata`` renders the full ``KeyMetadata`` shape, and
the shapes renderer drops members whose value is ``None``.
"""

from __future__ import annotations

from typing import Any

from regiond.clock import utc_second_text
from regiond.domain.key import Key, pending_window_in_days
from regiond.domain.keyspec import LEGACY_CUSTOMER_MASTER_KEY_SPECS
from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.service.authz import Requester
from regiond.service.keys import CreateKeyRequest

__all__ = ["HANDLERS", "key_metadata", "requester"]


_TRUE, _FALSE = ("true",), ("false",)


def requester(ctx: OpContext) -> Requester:
    """The caller plus the global condition keys a policy may test (``aws:SourceIp``, ``aws:SecureTransport``,
    ``aws:CurrentTime``, ``aws:RequestedRegion``)."""
    values = {
        "aws:SourceIp": (ctx.record.source_ip,),
        "aws:SecureTransport": _TRUE if ctx.record.secure_transport else _FALSE,
        "aws:CurrentTime": (utc_second_text(ctx.now),),  # ctx.now is UTC; the text is kept per second
        "aws:RequestedRegion": (ctx.services.settings.region,),
    }
    tokens = tuple(ctx.record.params.get("GrantTokens") or ())  # grants usable before they are cached
    return Requester(ctx.caller.principal, values, ctx.record.request_id, tokens)


def key_metadata(key: Key, current_key_material_id: str | None = None) -> dict[str, Any]:
    config = key.multi_region_configuration
    return {
        "AWSAccountId": key.account,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.creation_date,
        "Enabled": key.enabled,
        "Description": key.description,
        "KeyUsage": key.key_usage.value,
        "KeyState": key.key_state.value,
        "DeletionDate": key.deletion_date,
        "ValidTo": key.valid_to,
        "Origin": key.origin.value,
        "ExpirationModel": key.expiration_model.value if key.expiration_model else None,
        "KeyManager": key.key_manager.value,
        "CustomerMasterKeySpec": key.key_spec.value if key.key_spec in LEGACY_CUSTOMER_MASTER_KEY_SPECS else None,
        "KeySpec": key.key_spec.value,
        "EncryptionAlgorithms": [a.value for a in key.encryption_algorithms] or None,
        "SigningAlgorithms": [a.value for a in key.signing_algorithms] or None,
        "MacAlgorithms": [a.value for a in key.mac_algorithms] or None,
        "KeyAgreementAlgorithms": [a.value for a in key.key_agreement_algorithms] or None,
        "EncapsulationAlgorithms": [a.value for a in key.encapsulation_algorithms] or None,
        "MultiRegion": key.multi_region,
        "MultiRegionConfiguration": None
        if config is None
        else {
            "MultiRegionKeyType": config.key_type.value,
            "PrimaryKey": {"Arn": config.primary_key.arn, "Region": config.primary_key.region},
            "ReplicaKeys": [{"Arn": r.arn, "Region": r.region} for r in config.replica_keys],
        },
        "PendingDeletionWindowInDays": key.pending_deletion_window_in_days,
        "CurrentKeyMaterialId": current_key_material_id,
    }


def _touched(ctx: OpContext, key: Key) -> None:
    ctx.record.resources.append(key.arn)


async def create_key(ctx: OpContext, params: Params) -> Result:
    request = CreateKeyRequest(
        description=params.get("Description", ""),
        key_usage=params.get("KeyUsage"),
        key_spec=params.get("KeySpec"),
        customer_master_key_spec=params.get("CustomerMasterKeySpec"),
        origin=params.get("Origin", "AWS_KMS"),
        policy=params.get("Policy"),
        bypass_policy_lockout_safety_check=params.get("BypassPolicyLockoutSafetyCheck"),
        tags=tuple((t["TagKey"], t["TagValue"]) for t in params.get("Tags", ())),
        multi_region=bool(params.get("MultiRegion", False)),
        custom_key_store_id=params.get("CustomKeyStoreId"),
        xks_key_id=params.get("XksKeyId"),
    )
    key, material_id = await ctx.services.keys.create_key(requester(ctx), request, ctx.now)
    _touched(ctx, key)
    return {"KeyMetadata": key_metadata(key, material_id)}


async def describe_key(ctx: OpContext, params: Params) -> Result:
    key, material_id = await ctx.services.keys.describe_key(requester(ctx), params["KeyId"])
    _touched(ctx, key)
    return {"KeyMetadata": key_metadata(key, material_id)}


async def list_keys(ctx: OpContext, params: Params) -> Result:
    page = await ctx.services.keys.list_keys(
        requester(ctx),
        limit=params.get("Limit"),
        marker=params.get("Marker"),
        resource_owners=params.get("ResourceOwners"),
    )
    keys = ctx.services.keys
    return {
        "Keys": [{"KeyId": key_id, "KeyArn": keys.key_arn(ctx.account_id, key_id)} for key_id in page.items],
        "NextMarker": page.next_marker,
        "Truncated": page.truncated,
    }


async def enable_key(ctx: OpContext, params: Params) -> Result:
    _touched(ctx, await ctx.services.keys.enable_key(requester(ctx), params["KeyId"], ctx.now))
    return {}


async def disable_key(ctx: OpContext, params: Params) -> Result:
    _touched(ctx, await ctx.services.keys.disable_key(requester(ctx), params["KeyId"], ctx.now))
    return {}


async def update_key_description(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.keys.update_key_description(
        requester(ctx), params["KeyId"], params["Description"], ctx.now
    )
    _touched(ctx, key)
    return {}


async def schedule_key_deletion(ctx: OpContext, params: Params) -> Result:
    window = params.get("PendingWindowInDays")
    key = await ctx.services.keys.schedule_key_deletion(requester(ctx), params["KeyId"], window, ctx.now)
    _touched(ctx, key)
    return {
        "KeyId": key.arn,
        "DeletionDate": key.deletion_date,
        "KeyState": key.key_state.value,
        "PendingWindowInDays": pending_window_in_days(window),
    }


async def cancel_key_deletion(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.keys.cancel_key_deletion(requester(ctx), params["KeyId"], ctx.now)
    _touched(ctx, key)
    return {"KeyId": key.arn}


async def tag_resource(ctx: OpContext, params: Params) -> Result:
    tags = [(t["TagKey"], t["TagValue"]) for t in params["Tags"]]
    _touched(ctx, await ctx.services.keys.tag_resource(requester(ctx), params["KeyId"], tags))
    return {}


async def untag_resource(ctx: OpContext, params: Params) -> Result:
    _touched(ctx, await ctx.services.keys.untag_resource(requester(ctx), params["KeyId"], params["TagKeys"]))
    return {}


async def list_resource_tags(ctx: OpContext, params: Params) -> Result:
    key, page = await ctx.services.keys.list_resource_tags(
        requester(ctx), params["KeyId"], limit=params.get("Limit"), marker=params.get("Marker")
    )
    _touched(ctx, key)
    return {
        "Tags": [{"TagKey": k, "TagValue": v} for k, v in page.items],
        "NextMarker": page.next_marker,
        "Truncated": page.truncated,
    }


async def get_key_last_usage(ctx: OpContext, params: Params) -> Result:
    key, usage = await ctx.services.keys.get_key_last_usage(requester(ctx), params["KeyId"])
    _touched(ctx, key)
    last: dict[str, Any] = {}
    if usage is not None:
        last = {"Operation": usage.operation, "Timestamp": usage.used_at, "KmsRequestId": usage.request_id}
    return {
        "KeyId": key.arn,
        "KeyLastUsage": last,
        "TrackingStartDate": key.creation_date,
        "KeyCreationDate": key.creation_date,
    }


HANDLERS: dict[str, OpHandler] = {
    "CreateKey": create_key,
    "DescribeKey": describe_key,
    "ListKeys": list_keys,
    "EnableKey": enable_key,
    "DisableKey": disable_key,
    "UpdateKeyDescription": update_key_description,
    "ScheduleKeyDeletion": schedule_key_deletion,
    "CancelKeyDeletion": cancel_key_deletion,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListResourceTags": list_resource_tags,
    "GetKeyLastUsage": get_key_last_usage,
}
