"""Request validation for the IAM-style admin operations (target prefix ``RegionKmsIam``).

These operations are not in botocore's KMS model, but their members are IAM's, and
botocore ships IAM's model too: ``UserName`` is ``existingUserNameType`` (``[\\w+=,.@-]+``,
1-128), ``RoleName`` and ``PolicyName`` likewise, ``AccessKeyId`` is ``accessKeyIdType``
(``[\\w]+``, 16-128), ``Status`` an enum, ``PolicyDocument`` ``policyDocumentType``. The input
structures below name those shapes, and ``shapes.RequestValidator`` compiles them once: a
value is checked by the same code, with the same "1 validation error detected: ..." wording
and the same text rule (no U+0000, no unpaired surrogate) as every KMS member.

The structures are ours where regionkms departs from IAM: a role may hold access keys, so
the access-key operations take ``RoleName`` beside ``UserName`` (neither required: naming
neither means the caller itself, as in IAM, ``ops/iam.py``), and CreateRole needs no trust
policy (there is no STS). The inline-policy operations require their user or role, as IAM's.
Members an operation does not use are not declared, so they are dropped before the handler
sees the parameters.
"""

from __future__ import annotations

import os
from typing import Any, Final

import botocore
from botocore.loaders import Loader

from regiond.protocol.shapes import RequestValidator

__all__ = ["TARGET_PREFIX", "input_shapes", "model", "validate_request"]

TARGET_PREFIX: Final = "RegionKmsIam"

_TARGET = {"UserName": "existingUserNameType", "RoleName": "roleNameType"}
_ACCESS_KEY = {"AccessKeyId": "accessKeyIdType"}
_USER_POLICY = {"UserName": "existingUserNameType", "PolicyName": "policyNameType"}
_ROLE_POLICY = {"RoleName": "roleNameType", "PolicyName": "policyNameType"}
_DOCUMENT = {"PolicyDocument": "policyDocumentType"}

# operation -> (members -> IAM model shape, required members)
_INPUTS: Final[dict[str, tuple[dict[str, str], tuple[str, ...]]]] = {
    "CreateUser": ({"UserName": "userNameType"}, ("UserName",)),
    "CreateRole": ({"RoleName": "roleNameType"}, ("RoleName",)),
    "ListUsers": ({}, ()),
    "ListRoles": ({}, ()),
    "CreateAccessKey": (_TARGET, ()),
    "ListAccessKeys": (_TARGET, ()),
    "UpdateAccessKey": ({**_TARGET, **_ACCESS_KEY, "Status": "statusType"}, ("AccessKeyId", "Status")),
    "DeleteAccessKey": ({**_TARGET, **_ACCESS_KEY}, ("AccessKeyId",)),
    "PutUserPolicy": ({**_USER_POLICY, **_DOCUMENT}, ("UserName", "PolicyName", "PolicyDocument")),
    "PutRolePolicy": ({**_ROLE_POLICY, **_DOCUMENT}, ("RoleName", "PolicyName", "PolicyDocument")),
    "GetUserPolicy": (_USER_POLICY, ("UserName", "PolicyName")),
    "GetRolePolicy": (_ROLE_POLICY, ("RoleName", "PolicyName")),
    "DeleteUserPolicy": (_USER_POLICY, ("UserName", "PolicyName")),
    "DeleteRolePolicy": (_ROLE_POLICY, ("RoleName", "PolicyName")),
    "GetCallerIdentity": ({}, ()),
}


def _load_iam_shapes() -> dict[str, Any]:
    """IAM's shapes from botocore's bundled data only, as ``shapes._load_model`` loads KMS's."""
    data_path = os.path.join(os.path.dirname(botocore.__file__), "data")
    loader = Loader(extra_search_paths=[data_path], include_default_search_paths=False, include_default_extras=False)
    shapes: dict[str, Any] = loader.load_service_model("iam", "service-2")["shapes"]
    return shapes


def _build_model() -> dict[str, Any]:
    iam = _load_iam_shapes()
    shapes: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for operation, (members, required) in _INPUTS.items():
        for shape in members.values():
            shapes[shape] = dict(iam[shape])
        name = f"{operation}Input"
        shapes[name] = {
            "type": "structure",
            "required": list(required),
            "members": {member: {"shape": shape} for member, shape in members.items()},
        }
        operations[operation] = {"name": operation, "input": {"shape": name}}
    return {"shapes": shapes, "operations": operations}


_MODEL: Final = _build_model()
_VALIDATOR: Final = RequestValidator(_MODEL)


def model() -> dict[str, Any]:
    """The admin operations' model in botocore's format (shapes and operations), for tests and docs."""
    return _MODEL


def input_shapes() -> dict[str, str | None]:
    """Each admin operation's input shape name."""
    return {name: op["input"]["shape"] for name, op in _MODEL["operations"].items()}


def validate_request(operation: str, body: object) -> dict[str, Any]:
    """Validate an admin request body; see ``shapes.validate_request`` for what it returns and raises."""
    return _VALIDATOR.validate(operation, body)
