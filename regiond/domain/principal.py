"""IAM principals: who is calling.

ARNs follow AWS: ``arn:aws:iam::<account>:root``, ``...:user/<name>``, ``...:role/<name>``.
Names follow IAM's rules (1-64 characters of ``[\\w+=,.@-]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from regiond.errors import ValidationException

ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
IAM_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")


class PrincipalKind(StrEnum):
    ROOT = "root"
    USER = "user"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class Principal:
    arn: str
    account_id: str
    kind: PrincipalKind
    name: str
    principal_id: str

    @property
    def is_root(self) -> bool:
        return self.kind is PrincipalKind.ROOT

    @property
    def identity_type(self) -> str:
        """The CloudTrail ``userIdentity.type`` of this principal."""
        return {PrincipalKind.ROOT: "Root", PrincipalKind.USER: "IAMUser", PrincipalKind.ROLE: "AssumedRole"}[self.kind]


def require_account_id(value: str) -> str:
    if not ACCOUNT_ID.match(value):
        raise ValidationException(f"account id must be 12 digits, got {value[:20]!r}")
    return value


def require_name(value: str, what: str = "name") -> str:
    if not IAM_NAME.match(value):
        raise ValidationException(f"{what} must be 1-64 characters of letters, digits and +=,.@_-")
    return value


def root_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:root"


def principal_arn(account_id: str, kind: PrincipalKind, name: str) -> str:
    if kind is PrincipalKind.ROOT:
        return root_arn(account_id)
    return f"arn:aws:iam::{account_id}:{kind.value}/{name}"
