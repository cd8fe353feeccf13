"""Condition keys that describe a KMS key: of the key a request uses, and of one it creates.

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

For an operation on an existing key the same keys describe that key (``key_values``): AWS
"Conditions for KMS keys used in API operations" -- kms:KeySpec, kms:KeyUsage, kms:KeyOrigin,
kms:MultiRegion and kms:MultiRegionKeyType "control access to ... any operation that uses an
existing KMS key, such as Encrypt or EnableKey".

The AWS documentation's own examples depend on these: an IAM ``Deny`` of ``kms:CreateKey``
with ``"Bool": {"kms:MultiRegion": true}``, or with
``"Bool": {"kms:BypassPolicyLockoutSafetyCheck": true}``, must refuse the request; without
the values such a Deny would see a missing key and never apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from regiond.domain.key import Key, KeySpec, KeyUsage, MultiRegionKeyType, Origin

__all__ = ["KEY_CONDITION_KEYS", "REQUEST_TAG_PREFIX", "bypass_values", "key_values", "new_key_values", "tag_values"]

KEY_CONDITION_KEYS = frozenset(
    {"kms:keyspec", "kms:customermasterkeyspec", "kms:keyusage", "kms:customermasterkeyusage", "kms:keyorigin",
     "kms:multiregion", "kms:multiregionkeytype"}
)  # fmt: skip
"""The condition keys ``key_values`` supplies, lower-cased as the evaluator compares them."""

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


def key_values(key: Key) -> Values:
    """The condition values describing an existing ``key`` (lower-cased names, ``KEY_CONDITION_KEYS``)."""
    config = key.multi_region_configuration
    values = new_key_values(
        spec=key.key_spec, usage=key.key_usage, origin=key.origin,
        key_type=None if config is None else config.key_type, bypass_lockout=None,
    )  # fmt: skip
    if config is None and key.multi_region:  # an mrk- key before its configuration is known: still multi-Region
        values["kms:MultiRegion"] = ("true",)
    return {k.lower(): v for k, v in values.items()}


REQUEST_TAG_PREFIX = "aws:requesttag/"


def tag_values(tags: Sequence[tuple[str, str]] = (), *, tag_keys: Sequence[str] = ()) -> Values:
    """``aws:RequestTag/<key>`` per tag and ``aws:TagKeys`` (the tag keys, case kept) of a request that
    tags (CreateKey, ReplicateKey, TagResource: ``tags``) or untags (UntagResource: ``tag_keys``).

    AWS's global tagging condition keys, which KMS supports for these operations ("ABAC for AWS
    KMS"); absent when the request has no tags. Condition key names are case-insensitive and tag
    keys are not, so ``Env`` and ``env`` give ``aws:requesttag/env`` two values: the evaluator
    treats such a single-valued key as ambiguous and fails closed (``policy.RequestContext``)."""
    values: dict[str, list[str]] = {}
    for key, value in tags:
        values.setdefault(REQUEST_TAG_PREFIX + key.lower(), []).append(value)
    out: Values = {name: tuple(vs) for name, vs in values.items()}
    keys = tuple(tag_keys) or tuple(key for key, _ in tags)
    if keys:
        out["aws:tagkeys"] = keys
    return out
