"""Condition keys that describe a KMS key, for the operations that create one.

AWS KMS lets a policy test the key a request creates: ``kms:KeySpec``, ``kms:KeyUsage``,
``kms:KeyOrigin``, ``kms:MultiRegion``, ``kms:MultiRegionKeyType`` and
``kms:BypassPolicyLockoutSafetyCheck`` on ``CreateKey`` (and so on the ``kms:CreateKey`` that
ReplicateKey needs in the replica Region), with the parameter's default when the request
omits it ("This type of condition works even when the parameter doesn't appear in the
request"). The exception is ``kms:BypassPolicyLockoutSafetyCheck``: it is present only when
the request has the parameter (AWS's example allows PutKeyPolicy "only when the request does
not include the BypassPolicyLockoutSafetyCheck parameter" with ``Null``). The deprecated
``kms:CustomerMasterKeySpec`` / ``kms:CustomerMasterKeyUsage`` carry the same values as their
successors. ``kms:MultiRegionKeyType`` exists only for multi-Region keys.

The AWS documentation's own examples depend on these: an IAM ``Deny`` of ``kms:CreateKey``
with ``"Bool": {"kms:MultiRegion": true}``, or with
``"Bool": {"kms:BypassPolicyLockoutSafetyCheck": true}``, must refuse the request; without
the values such a Deny would see a missing key and never apply.
"""

from __future__ import annotations

from regiond.domain.key import KeySpec, KeyUsage, MultiRegionKeyType, Origin

__all__ = ["bypass_values", "new_key_values"]

Values = dict[str, tuple[str, ...]]


def _bool(value: bool) -> tuple[str, ...]:
    return ("true" if value else "false",)


def new_key_values(
    *,
    spec: KeySpec,
    usage: KeyUsage,
    origin: Origin,
    key_type: MultiRegionKeyType | None,
    bypass_lockout: bool | None,
) -> Values:
    """The condition values of a ``CreateKey`` (``key_type``: ``None`` for a single-Region key;
    ``bypass_lockout``: ``None`` when the request has no BypassPolicyLockoutSafetyCheck)."""
    values: Values = {
        "kms:KeySpec": (spec.value,),
        "kms:CustomerMasterKeySpec": (spec.value,),
        "kms:KeyUsage": (usage.value,),
        "kms:CustomerMasterKeyUsage": (usage.value,),
        "kms:KeyOrigin": (origin.value,),
        "kms:MultiRegion": _bool(key_type is not None),
    }
    values.update(bypass_values(bypass_lockout))
    if key_type is not None:
        values["kms:MultiRegionKeyType"] = (key_type.value,)
    return values


def bypass_values(bypass_lockout: bool | None) -> Values:
    """``kms:BypassPolicyLockoutSafetyCheck`` for CreateKey and PutKeyPolicy: only if the parameter was sent."""
    return {} if bypass_lockout is None else {"kms:BypassPolicyLockoutSafetyCheck": _bool(bypass_lockout)}
