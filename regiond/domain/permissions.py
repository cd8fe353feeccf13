"""The permissions an operation needs beyond "the action on the request's key", as AWS lists them.

Most KMS operations need one permission: ``kms:<Operation>`` on the key of the request, decided
by that key's rules in its own region (``decision.decide``: key policy, IAM through the account
root, grants). The operations here need more, and AWS's API reference says exactly what
("Required permissions"). Each is declared once, as data, so the services carry out the same
list that the authorization differential tests evaluate (tests/unit/test_authz_differential.py):

    CreateKey            kms:CreateKey (IAM policy); with Tags, kms:TagResource (IAM policy)
    ReplicateKey         kms:ReplicateKey on the primary key (in the primary key's Region; its key
                         policy); kms:CreateKey in an IAM policy in the replica Region; with Tags,
                         kms:TagResource in an IAM policy in the replica Region
    UpdatePrimaryRegion  kms:UpdatePrimaryRegion on the current primary key (in the primary key's
                         Region) and on the current replica key (in the replica key's Region)
    CreateAlias          kms:CreateAlias on the alias (IAM policy) and on the KMS key (key policy)
    UpdateAlias          kms:UpdateAlias on the alias (IAM policy), on the current KMS key and on the
                         new KMS key (key policies)
    DeleteAlias          kms:DeleteAlias on the alias (IAM policy) and on the KMS key (key policy)

A ``Permission`` says which action, decided how (``DecidedBy.KEY``: the key's own rules;
``DecidedBy.IAM``: the caller's identity policies alone, as for an operation without a key), in
which region (it is decided there, and ``aws:RequestedRegion`` is that region), on which
resource, with which of the operation's own condition values. An operation without a key is
decided on the resource ``arn:aws:kms:<region>:<account>:*`` (``keyless_resource``): AWS lets
such a statement's Resource be "*" or "an account-specific variation, such as
arn:AWS_partition_name:kms:AWS_region:AWS_account_ID:*".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from regiond.domain.ids import alias_arn_text, key_arn
from regiond.domain.key import Key, KeySpec, KeyUsage, MultiRegionKeyType, Origin
from regiond.domain.key_conditions import new_key_values

__all__ = [
    "DecidedBy",
    "Permission",
    "alias_operation",
    "create_key",
    "keyless_resource",
    "replicate_key",
    "update_primary_region",
]

Values = Mapping[str, tuple[str, ...]]


class DecidedBy(StrEnum):
    KEY = "key"  # the key's own rules in its region: key policy, IAM through the account root, grants
    IAM = "iam"  # the caller's identity policies alone ("in an IAM policy")


@dataclass(frozen=True)
class Permission:
    action: str
    decided_by: DecidedBy
    region: str
    resource: str
    values: Values = field(default_factory=dict, hash=False)
    rule: str = ""  # AWS's words, for logs and tests


def keyless_resource(region: str, account: str) -> str:
    """The resource an operation without a key is decided on (module docstring)."""
    return f"arn:aws:kms:{region}:{account}:*"


def create_key(
    *, region: str, account: str, new_key_arn: str, spec: KeySpec, usage: KeyUsage, origin: Origin,
    key_type: MultiRegionKeyType | None, bypass_lockout: bool | None, tags: bool,
) -> tuple[Permission, ...]:  # fmt: skip
    """CreateKey in ``region`` (``key_type``: ``PRIMARY`` for a multi-Region key, else ``None``)."""
    values = new_key_values(spec=spec, usage=usage, origin=origin, key_type=key_type, bypass_lockout=bypass_lockout)
    create = Permission(
        "kms:CreateKey", DecidedBy.IAM, region, keyless_resource(region, account), values,
        "CreateKey: kms:CreateKey (IAM policy)",
    )  # fmt: skip
    if not tags:
        return (create,)
    tag = Permission(
        "kms:TagResource", DecidedBy.IAM, region, new_key_arn, {},
        "CreateKey: to use the Tags parameter, kms:TagResource (IAM policy); "
        "including it in the key policy of the new KMS key isn't sufficient",
    )  # fmt: skip
    return create, tag


def replicate_key(
    primary: Key, replica_region: str, *, tags: bool, bypass_lockout: bool | None
) -> tuple[Permission, ...]:
    """ReplicateKey of ``primary`` into ``replica_region`` (the replica key is created there)."""
    replicate = Permission(
        "kms:ReplicateKey", DecidedBy.KEY, primary.region, primary.arn, {"kms:ReplicaRegion": (replica_region,)},
        "ReplicateKey: kms:ReplicateKey on the primary key (in the primary key's Region)",
    )  # fmt: skip
    creating = create_key(
        region=replica_region, account=primary.account,
        new_key_arn=key_arn(replica_region, primary.account, primary.key_id), spec=primary.key_spec,
        usage=primary.key_usage, origin=primary.origin, key_type=MultiRegionKeyType.REPLICA,
        bypass_lockout=bypass_lockout, tags=tags,
    )  # fmt: skip
    return (replicate, *(_in_replica_region(p) for p in creating))


def _in_replica_region(permission: Permission) -> Permission:
    return Permission(
        permission.action, permission.decided_by, permission.region, permission.resource, permission.values,
        f"ReplicateKey: {permission.action} in an IAM policy in the replica Region",
    )  # fmt: skip


def update_primary_region(key: Key, new_primary_region: str) -> tuple[Permission, ...]:
    """UpdatePrimaryRegion of ``key`` (the current primary) to its replica in ``new_primary_region``."""
    values = {"kms:PrimaryRegion": (new_primary_region,)}
    return (
        Permission(
            "kms:UpdatePrimaryRegion", DecidedBy.KEY, key.region, key.arn, values,
            "UpdatePrimaryRegion: kms:UpdatePrimaryRegion on the current primary key (in the primary key's Region)",
        ),
        Permission(
            "kms:UpdatePrimaryRegion", DecidedBy.KEY, new_primary_region,
            key_arn(new_primary_region, key.account, key.key_id), values,
            "UpdatePrimaryRegion: kms:UpdatePrimaryRegion on the current replica key (in the replica key's Region)",
        ),
    )  # fmt: skip


def alias_operation(operation: str, alias_name: str, *keys: Key) -> tuple[Permission, ...]:
    """CreateAlias / DeleteAlias (``keys``: the alias's key) or UpdateAlias (the current key, then the
    new one) of ``alias_name`` in the keys' account and Region.

    AWS ("Controlling access to aliases"): "principals who manage aliases must have permission to
    call the alias operation on the alias and on all affected KMS keys"; the permission on the
    alias is "in an IAM policy", so a key policy naming the caller is not enough for it, and an
    IAM Deny on the alias's ARN refuses the call whatever the key policies say."""
    if operation not in ("CreateAlias", "UpdateAlias", "DeleteAlias") or not keys:
        raise ValueError(f"not an alias operation: {operation}")
    action = f"kms:{operation}"
    first = keys[0]
    on_alias = Permission(
        action, DecidedBy.IAM, first.region, alias_arn_text(first.region, first.account, alias_name), {},
        f"{operation}: {action} on the alias (IAM policy)",
    )  # fmt: skip
    on_keys = tuple(
        Permission(action, DecidedBy.KEY, key.region, key.arn, {}, f"{operation}: {action} on the KMS key (key policy)")
        for key in keys
    )
    return (on_alias, *on_keys)
