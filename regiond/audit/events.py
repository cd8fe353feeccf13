"""CallRecord -> CloudTrail record: what one API call looks like in the audit trail.

The shape is CloudTrail's (eventVersion 1.08, as AWS KMS writes it): ``userIdentity``,
``eventTime``, ``eventSource``, ``eventName``, ``awsRegion``, ``sourceIPAddress``,
``userAgent``, ``errorCode``/``errorMessage``, ``requestParameters``, ``responseElements``,
``additionalEventData``, ``requestID``, ``eventID``, ``readOnly``, ``resources``,
``eventType``, ``managementEvent``, ``recipientAccountId``, ``eventCategory``. Member names
are lowerCamel as in CloudTrail (``KeyId`` -> ``keyId``, ``AWSAccountId`` -> ``aWSAccountId``);
the keys of encryption-context maps are data and keep their spelling.

What may be recorded is an **allow-list per operation** (``REQUEST_MEMBERS``,
``RESPONSE_MEMBERS``): a member that is not listed is not recorded, so a new operation or a
new model member is silent until someone decides it is safe. Behind the allow-list, a deny
list of member names (plaintext, ciphertext blobs, key material, data keys, import tokens,
wrapping/public keys, secrets, grant tokens, key store passwords) and a type rule (``bytes``
never reach an event) hold even inside allowed structures. As in CloudTrail, read-only KMS
calls record no ``responseElements``.

This runs on the hot path once per request: one dict walk over a handful of members and
one ``orjson.dumps``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from regiond.audit.calls import CallRecord
from regiond.cache import remember
from regiond.clock import utc_second_text
from regiond.domain.ciphertext import BACKING_VERSION_BYTES, FORMAT_VERSION_1, HEADER_BYTES
from regiond.domain.principal import Principal, PrincipalKind
from regiond.randomids import uuid4_str

__all__ = [
    "EVENT_VERSION",
    "OPERATOR_REQUEST_MEMBERS",
    "OPERATOR_RESPONSE_MEMBERS",
    "OPERATOR_SOURCE",
    "REQUEST_MEMBERS",
    "RESPONSE_MEMBERS",
    "SECRET_MEMBERS",
    "build_event",
    "encode",
    "is_read_only",
]

EVENT_VERSION = "1.08"
KMS_SOURCE = "kms.amazonaws.com"
MAX_TEXT_CHARS = 32768  # unvalidated (IAM admin API) strings are cut here

# Members that never appear in an event, whatever an allow-list says (defence in depth).
SECRET_MEMBERS = frozenset(
    {
        "Plaintext", "CiphertextBlob", "CiphertextForRecipient", "PrivateKeyPlaintext",
        "PrivateKeyCiphertextBlob", "PublicKey", "SharedSecret", "SharedSecretCiphertextBlob",
        "KeyMaterial", "EncryptedKeyMaterial", "ImportToken", "WrappingKey", "Message", "Signature", "Mac",
        "GrantToken", "GrantTokens", "KeyStorePassword", "XksProxyAuthenticationCredential",
        "SecretAccessKey", "Secret", "Password", "DataKey", "Recipient", "AttestationDocument",
    }
)  # fmt: skip

# Map members: their keys are caller data (encryption context), never renamed.
_MAP_MEMBERS = frozenset(
    {
        "EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext",
        "EncryptionContextSubset", "EncryptionContextEquals", "encryptionContext",
    }
)  # fmt: skip

_CTX = "EncryptionContext"
_DRY = "DryRun"

# Request members recorded per operation (KMS model names). Everything else is dropped.
REQUEST_MEMBERS: dict[str, tuple[str, ...]] = {
    # KMS: keys
    "CancelKeyDeletion": ("KeyId",),
    "CreateKey": ("Policy", "Description", "KeyUsage", "CustomerMasterKeySpec", "KeySpec", "Origin",
                  "CustomKeyStoreId", "BypassPolicyLockoutSafetyCheck", "Tags", "MultiRegion", "XksKeyId"),
    "DescribeKey": ("KeyId",),
    "DisableKey": ("KeyId",),
    "EnableKey": ("KeyId",),
    "GetKeyLastUsage": ("KeyId",),
    "ListKeys": ("Limit", "Marker", "ResourceOwners"),
    "ListResourceTags": ("KeyId", "Limit", "Marker"),
    "ScheduleKeyDeletion": ("KeyId", "PendingWindowInDays"),
    "TagResource": ("KeyId", "Tags"),
    "UntagResource": ("KeyId", "TagKeys"),
    "UpdateKeyDescription": ("KeyId", "Description"),
    # KMS: cryptographic operations (never the plaintext, blobs, messages, MACs or signatures)
    "Encrypt": ("KeyId", _CTX, "EncryptionAlgorithm", _DRY),
    "Decrypt": ("KeyId", _CTX, "EncryptionAlgorithm", _DRY, "DryRunModifiers"),
    "ReEncrypt": ("SourceKeyId", "DestinationKeyId", "SourceEncryptionContext", "DestinationEncryptionContext",
                  "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm", _DRY, "DryRunModifiers"),
    "GenerateDataKey": ("KeyId", _CTX, "NumberOfBytes", "KeySpec", _DRY),
    "GenerateDataKeyWithoutPlaintext": ("KeyId", _CTX, "NumberOfBytes", "KeySpec", _DRY),
    "GenerateDataKeyPair": ("KeyId", _CTX, "KeyPairSpec", _DRY),
    "GenerateDataKeyPairWithoutPlaintext": ("KeyId", _CTX, "KeyPairSpec", _DRY),
    "GenerateRandom": ("NumberOfBytes", "CustomKeyStoreId"),
    "GenerateMac": ("KeyId", "MacAlgorithm", _DRY),
    "VerifyMac": ("KeyId", "MacAlgorithm", _DRY),
    "Sign": ("KeyId", "MessageType", "SigningAlgorithm", _DRY),
    "Verify": ("KeyId", "MessageType", "SigningAlgorithm", _DRY),
    "GetPublicKey": ("KeyId",),
    "DeriveSharedSecret": ("KeyId", "KeyAgreementAlgorithm", _DRY),
    "Encapsulate": ("KeyId", "EncapsulationAlgorithm", _DRY),
    "Decapsulate": ("KeyId", "EncapsulationAlgorithm", _DRY),
    # KMS: policies, rotation, import
    "GetKeyPolicy": ("KeyId", "PolicyName"),
    "PutKeyPolicy": ("KeyId", "PolicyName", "Policy", "BypassPolicyLockoutSafetyCheck"),
    "ListKeyPolicies": ("KeyId", "Limit", "Marker"),
    "EnableKeyRotation": ("KeyId", "RotationPeriodInDays"),
    "DisableKeyRotation": ("KeyId",),
    "GetKeyRotationStatus": ("KeyId",),
    "RotateKeyOnDemand": ("KeyId",),
    "ListKeyRotations": ("KeyId", "IncludeKeyMaterial", "Limit", "Marker"),
    "GetParametersForImport": ("KeyId", "WrappingAlgorithm", "WrappingKeySpec"),
    "ImportKeyMaterial": ("KeyId", "ValidTo", "ExpirationModel", "ImportType", "KeyMaterialDescription",
                          "KeyMaterialId"),
    "DeleteImportedKeyMaterial": ("KeyId", "KeyMaterialId"),
    # KMS: aliases and grants
    "CreateAlias": ("AliasName", "TargetKeyId"),
    "UpdateAlias": ("AliasName", "TargetKeyId"),
    "DeleteAlias": ("AliasName",),
    "ListAliases": ("KeyId", "Limit", "Marker"),
    "CreateGrant": ("KeyId", "GranteePrincipal", "RetiringPrincipal", "Operations", "Constraints", "Name", _DRY,
                    "GranteeServicePrincipal", "RetiringServicePrincipal"),
    "ListGrants": ("KeyId", "GrantId", "GranteePrincipal", "GranteeServicePrincipal", "Limit", "Marker"),
    "ListRetirableGrants": ("RetiringPrincipal", "RetiringServicePrincipal", "Limit", "Marker"),
    "RetireGrant": ("KeyId", "GrantId", _DRY),
    "RevokeGrant": ("KeyId", "GrantId", _DRY),
    # KMS: multi-Region keys
    "ReplicateKey": ("KeyId", "ReplicaRegion", "Policy", "BypassPolicyLockoutSafetyCheck", "Description", "Tags"),
    "UpdatePrimaryRegion": ("KeyId", "PrimaryRegion"),
    # KMS: custom key stores (never the password or XKS credential)
    "CreateCustomKeyStore": ("CustomKeyStoreName", "CloudHsmClusterId", "CustomKeyStoreType", "XksProxyUriEndpoint",
                             "XksProxyUriPath", "XksProxyVpcEndpointServiceName", "XksProxyVpcEndpointServiceOwner",
                             "XksProxyConnectivity"),
    "UpdateCustomKeyStore": ("CustomKeyStoreId", "NewCustomKeyStoreName", "CloudHsmClusterId", "XksProxyUriEndpoint",
                             "XksProxyUriPath", "XksProxyVpcEndpointServiceName", "XksProxyVpcEndpointServiceOwner",
                             "XksProxyConnectivity"),
    "ConnectCustomKeyStore": ("CustomKeyStoreId",),
    "DisconnectCustomKeyStore": ("CustomKeyStoreId",),
    "DeleteCustomKeyStore": ("CustomKeyStoreId",),
    "DescribeCustomKeyStores": ("CustomKeyStoreId", "CustomKeyStoreName", "Limit", "Marker"),
}  # fmt: skip

# IAM admin API (iam.amazonaws.com events): names as IAM spells them.
IAM_REQUEST_MEMBERS: dict[str, tuple[str, ...]] = {
    "CreateUser": ("UserName",),
    "CreateRole": ("RoleName",),
    "ListUsers": (),
    "ListRoles": (),
    "CreateAccessKey": ("UserName", "RoleName"),
    "ListAccessKeys": ("UserName", "RoleName"),
    "UpdateAccessKey": ("UserName", "RoleName", "AccessKeyId", "Status"),
    "DeleteAccessKey": ("UserName", "RoleName", "AccessKeyId"),
    "PutUserPolicy": ("UserName", "PolicyName", "PolicyDocument"),
    "PutRolePolicy": ("RoleName", "PolicyName", "PolicyDocument"),
    "GetUserPolicy": ("UserName", "PolicyName"),
    "GetRolePolicy": ("RoleName", "PolicyName"),
    "DeleteUserPolicy": ("UserName", "PolicyName"),
    "DeleteRolePolicy": ("RoleName", "PolicyName"),
    "GetCallerIdentity": (),
}

# Response members recorded (mutating operations only, as CloudTrail does for KMS).
RESPONSE_MEMBERS: dict[str, tuple[str, ...]] = {
    "CancelKeyDeletion": ("KeyId",),
    "CreateKey": ("KeyMetadata",),
    "ScheduleKeyDeletion": ("KeyId", "DeletionDate", "KeyState", "PendingWindowInDays"),
    "CreateGrant": ("GrantId",),
    "RotateKeyOnDemand": ("KeyId",),
    "ImportKeyMaterial": ("KeyId", "KeyMaterialId"),
    "DeleteImportedKeyMaterial": ("KeyId", "KeyMaterialId"),
    "ReplicateKey": ("ReplicaKeyMetadata", "ReplicaPolicy", "ReplicaTags"),
    "CreateCustomKeyStore": ("CustomKeyStoreId",),
}

IAM_RESPONSE_MEMBERS: dict[str, tuple[str, ...]] = {
    "CreateUser": ("User",),
    "CreateRole": ("Role",),
    "CreateAccessKey": ("AccessKey",),  # SecretAccessKey is a SECRET_MEMBERS name: dropped inside
}

OPERATOR_SOURCE = "regionkms.operator"
"""Operator commands that change what the API serves without an API call (``regiond replication promote``):
no caller identity (``userIdentity`` null), the host as ``sourceIPAddress``, the command as ``userAgent``."""
OPERATOR_REQUEST_MEMBERS: dict[str, tuple[str, ...]] = {
    "PromoteReplica": ("KeyId", "PreviousPrimaryRegion", "Forced"),
}
OPERATOR_RESPONSE_MEMBERS: dict[str, tuple[str, ...]] = {
    "PromoteReplica": ("PrimaryRegion", "ReplicaRegions", "Epoch"),
}
_OTHER_REQUEST_MEMBERS = {OPERATOR_SOURCE: OPERATOR_REQUEST_MEMBERS}
_OTHER_RESPONSE_MEMBERS = {OPERATOR_SOURCE: OPERATOR_RESPONSE_MEMBERS}

_READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Generate", "Encrypt", "Decrypt", "ReEncrypt", "Sign",
                       "Verify", "Derive", "Encapsulate", "Decapsulate")  # fmt: skip

_ADDITIONAL_TOP = frozenset({"keyId", "encryptionContext", "keyMaterialId", "backingKeyVersion",
                             "sourceBackingKeyVersion", "grantId", "dryRun", "customKeyStoreId",
                             "forwardedFromRegion"})  # fmt: skip
"""``forwardedFromRegion``: the region whose node relayed the call here (regiond.protocol.forwarding)."""

# Where the backing key version used by a successful call can be read: (source, blob member, event name).
# Only the authenticated header of the blob is read; the blob itself never reaches the event.
_VERSION_SOURCES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "Encrypt": (("result", "CiphertextBlob", "backingKeyVersion"),),
    "GenerateDataKey": (("result", "CiphertextBlob", "backingKeyVersion"),),
    "GenerateDataKeyWithoutPlaintext": (("result", "CiphertextBlob", "backingKeyVersion"),),
    "Decrypt": (("params", "CiphertextBlob", "backingKeyVersion"),),
    "ReEncrypt": (("params", "CiphertextBlob", "sourceBackingKeyVersion"),
                  ("result", "CiphertextBlob", "backingKeyVersion")),
}  # fmt: skip


# The key material a successful call used, as its response names it (response member, event name):
# CloudTrail records it in ``additionalEventData`` for these operations. An identifier
# (``regiond.crypto.import_wrap.key_material_id``), never the material.
_MATERIAL_IDS: dict[str, tuple[tuple[str, str], ...]] = {
    **{op: (("KeyMaterialId", "keyMaterialId"),) for op in (
        "Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext")},
    "ReEncrypt": (("SourceKeyMaterialId", "sourceKeyMaterialId"),
                  ("DestinationKeyMaterialId", "destinationKeyMaterialId")),
}  # fmt: skip


def is_read_only(operation: str) -> bool:
    return operation.startswith(_READ_ONLY_PREFIXES)


def _aws_time(value: dt.datetime) -> str:
    """CloudTrail's rendering of timestamps inside responseElements (``Jan 4, 2022, 5:01:08 PM``)."""
    v = value.astimezone(dt.UTC)
    hour = v.hour % 12 or 12
    return f"{v:%b} {v.day}, {v.year}, {hour}:{v:%M:%S} {'AM' if v.hour < 12 else 'PM'}"


_CAMEL: dict[str, str] = {}


def _lower_camel(name: str) -> str:
    camel = _CAMEL.get(name)
    if camel is None:
        camel = name[:1].lower() + name[1:]
        if len(_CAMEL) < 4096:  # member names are a small, fixed set; never grow without bound
            _CAMEL[name] = camel
    return camel


def _clean(value: Any, *, keep_keys: bool = False) -> Any:
    """A JSON-safe copy of an allowed value: structure members renamed and filtered, no bytes.

    Exact type checks come first: this runs for every member of every event, and an
    ``isinstance`` against an ABC such as ``Mapping`` costs several times a ``type() is``.
    """
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_TEXT_CHARS else value[:MAX_TEXT_CHARS] + "...(truncated)"
    if kind is bool or kind is int or kind is float or value is None:
        return value
    if kind is dict or (kind is not bytes and kind is not list and isinstance(value, Mapping)):
        if keep_keys:  # a map (encryption context): keys are data, values strings
            return {str(k): _clean(v) for k, v in value.items() if type(v) is str}
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str or k in SECRET_MEMBERS or v is None:
                continue
            cleaned = _clean(v, keep_keys=k in _MAP_MEMBERS)
            if cleaned is not _DROP:
                out[_lower_camel(k)] = cleaned
        return out
    if kind is list or kind is tuple:
        return [c for c in (_clean(v) for v in value) if c is not _DROP]
    if isinstance(value, dt.datetime):
        return _aws_time(value)
    return _DROP  # bytes, and anything else we do not know to be safe


_DROP: Any = object()


def _members(source: Mapping[str, Any] | None, allowed: tuple[str, ...] | None) -> dict[str, Any] | None:
    if not source or not allowed:
        return None
    out: dict[str, Any] = {}
    for name in allowed:
        value = source.get(name)
        if value is None or name in SECRET_MEMBERS:
            continue
        cleaned = _clean(value, keep_keys=name in _MAP_MEMBERS)
        if cleaned is not _DROP:
            out[_lower_camel(name)] = cleaned
    return out or None


def _additional(values: Mapping[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _ADDITIONAL_TOP or value is None:
            continue
        cleaned = _clean(value, keep_keys=name in _MAP_MEMBERS)
        if cleaned is not _DROP:
            out[name] = cleaned
    return out or None


_VERSION_OFFSET = HEADER_BYTES - BACKING_VERSION_BYTES  # the header ends with the backing version


def _backing_versions(record: CallRecord, into: dict[str, Any]) -> None:
    """Only on success, so the header was authenticated by the AEAD tag: its last field is the version."""
    for source, member, name in _VERSION_SOURCES.get(record.operation, ()):
        values = record.params if source == "params" else record.result
        blob = values.get(member) if values else None
        if type(blob) is bytes and len(blob) >= HEADER_BYTES and blob[0] == FORMAT_VERSION_1:
            into[name] = int.from_bytes(blob[_VERSION_OFFSET:HEADER_BYTES], "big")


_RESOURCES: dict[str, tuple[str, str]] = {}  # key ARN -> (account, resource type); bounded below
_IDENTITIES: dict[int, tuple[Principal, str | None, dict[str, Any]]] = {}  # id(principal) -> userIdentity
_MEMO_MAX = 4096


def _resource(arn: str) -> dict[str, str]:
    known = _RESOURCES.get(arn)
    if known is None:
        parts = arn.split(":", 5)
        account = parts[4] if len(parts) > 4 else ""
        kind = "AWS::KMS::Alias" if len(parts) > 5 and parts[5].startswith("alias/") else "AWS::KMS::Key"
        known = remember(_RESOURCES, arn, (account, kind), _MEMO_MAX)
    return {"accountId": known[0], "type": known[1], "ARN": arn}


def _identity(principal: Principal, access_key_id: str | None) -> dict[str, Any]:
    """CloudTrail's ``userIdentity``, a fresh dict built from one kept per principal object.

    Authentication hands out the same ``Principal`` object for every call signed with one access
    key (until its cache entry goes), so the entry is found by the object's id and checked by
    identity: an id reused by a later object is never mistaken for it.
    """
    known = _IDENTITIES.get(id(principal))
    if known is None or known[0] is not principal or known[1] != access_key_id:
        identity: dict[str, Any] = {
            "type": principal.identity_type,
            "principalId": principal.principal_id,
            "arn": principal.arn,
            "accountId": principal.account_id,
            "accessKeyId": access_key_id,
        }
        if principal.kind is PrincipalKind.USER:
            identity["userName"] = principal.name
        known = remember(_IDENTITIES, id(principal), (principal, access_key_id, identity), _MEMO_MAX)
    return dict(known[2])


def build_event(record: CallRecord, event_id: uuid.UUID) -> dict[str, Any]:
    """The CloudTrail record of one call (a plain dict in CloudTrail's member order)."""
    return _build_event(record, str(event_id), list(dict.fromkeys(record.resources)), is_read_only(record.operation))


def _build_event(record: CallRecord, event_id: str, resources: list[str], read_only: bool) -> dict[str, Any]:
    kms = record.event_source == KMS_SOURCE
    operation = record.operation
    principal = record.principal
    event: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": _identity(principal, record.access_key_id) if principal is not None else None,
        "eventTime": utc_second_text(record.event_time),
        "eventSource": record.event_source,
        "eventName": operation,
        "awsRegion": record.region,
        "sourceIPAddress": record.source_ip,
        "userAgent": record.user_agent,
    }
    error = record.error
    if error is not None:
        event["errorCode"] = error.code
        event["errorMessage"] = error.message
    if kms:
        request_allowed, response_allowed = REQUEST_MEMBERS.get(operation), RESPONSE_MEMBERS.get(operation)
    else:
        source = record.event_source
        request_allowed = _OTHER_REQUEST_MEMBERS.get(source, IAM_REQUEST_MEMBERS).get(operation)
        response_allowed = _OTHER_RESPONSE_MEMBERS.get(source, IAM_RESPONSE_MEMBERS).get(operation)
    event["requestParameters"] = _members(record.params, request_allowed)
    event["responseElements"] = _members(record.result, response_allowed) if error is None else None
    additional = _additional(record.additional) if record.additional else None
    if error is None and operation in _VERSION_SOURCES:
        additional = additional or {}
        _backing_versions(record, additional)
    result = record.result if error is None else None
    if result and operation in _MATERIAL_IDS:
        additional = additional or {}
        for member, name in _MATERIAL_IDS[operation]:
            value = result.get(member)
            if type(value) is str:
                additional[name] = value
    if additional:
        event["additionalEventData"] = additional
    event["requestID"] = record.request_id
    event["eventID"] = event_id
    event["readOnly"] = read_only
    if resources:
        event["resources"] = described = [_resource(arn) for arn in resources]
    event["eventType"] = "AwsApiCall"
    event["managementEvent"] = True
    recipient = described[0]["accountId"] if resources else (principal.account_id if principal else "")
    event["recipientAccountId"] = recipient
    event["eventCategory"] = "Management"
    return event


def encode(record: CallRecord) -> bytes:
    """The event of ``record`` as its canonical JSON bytes: what a segment holds (``regiond.audit.writer``)."""
    resources = list(dict.fromkeys(record.resources))
    return orjson.dumps(_build_event(record, uuid4_str(), resources, is_read_only(record.operation)))
