"""Grants: the record of one grant, its AWS rendering, and which of a caller's grants apply.

Pure (no I/O): the store builds ``GrantRecord`` from its rows, the protocol renders it, and
authorization (``service/authz.py``) asks ``applicable_grants`` which grants count for a call.
What authorization sees of a grant is its ``GrantView`` (``domain/decision.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from regiond.domain.decision import GrantConstraints, GrantView

__all__ = [
    "CONSTRAINT_FREE_ACTIONS",
    "ConstraintsJson",
    "GrantRecord",
    "NewGrant",
    "applicable_grants",
    "constraints_from_json",
    "constraints_to_json",
    "grant_admits",
]

CONSTRAINT_FREE_ACTIONS = frozenset({"kms:describekey", "kms:retiregrant"})
"""AWS: a grant's encryption-context constraint does not apply to DescribeKey and RetireGrant
(its SourceArn constraint still applies to DescribeKey)."""

ConstraintsJson = dict[str, dict[str, str] | str]
"""The ``Constraints`` member: ``EncryptionContextEquals``/``Subset`` maps, ``SourceArn``."""


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """One grant as CreateGrant made it (immutable; one row in the store).

    Exactly one of ``grantee_principal`` (an IAM principal ARN) and
    ``grantee_service_principal`` (an AWS service principal) is set; at most one of
    ``retiring_principal`` and ``retiring_service_principal``.
    """

    grant_id: str
    key_id: str
    account: str  # the issuing account: the key's account
    name: str | None
    grantee_principal: str | None
    retiring_principal: str | None
    issuing_principal: str
    operations: tuple[str, ...]
    constraints: GrantConstraints | None
    creation_date: dt.datetime
    seq: int = 0
    grantee_service_principal: str | None = None
    retiring_service_principal: str | None = None

    def view(self) -> GrantView:
        """What the authorizer needs of this grant."""
        return GrantView(self.grant_id, self.grantee_principal, frozenset(self.operations), self.constraints)


def constraints_to_json(constraints: GrantConstraints | None) -> ConstraintsJson | None:
    """The ``Constraints`` member as AWS renders it (and as the row stores it)."""
    if constraints is None:
        return None
    out: ConstraintsJson = {}
    if constraints.encryption_context_equals is not None:
        out["EncryptionContextEquals"] = dict(constraints.encryption_context_equals)
    if constraints.encryption_context_subset is not None:
        out["EncryptionContextSubset"] = dict(constraints.encryption_context_subset)
    if constraints.source_arn is not None:
        out["SourceArn"] = constraints.source_arn
    return out


def _pairs(raw: object) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("a grant constraint's encryption context must map strings to strings")
    return dict(raw)


def constraints_from_json(raw: Mapping[str, object] | None) -> GrantConstraints | None:
    """Inverse of ``constraints_to_json`` (a stored row); raises ``ValueError`` on a malformed one."""
    if not raw:
        return None
    source_arn = raw.get("SourceArn")
    if source_arn is not None and not isinstance(source_arn, str):
        raise ValueError("a grant's SourceArn constraint must be a string")
    return GrantConstraints(
        encryption_context_equals=_pairs(raw.get("EncryptionContextEquals")),
        encryption_context_subset=_pairs(raw.get("EncryptionContextSubset")),
        source_arn=source_arn,
    )


@dataclass(frozen=True, slots=True)
class NewGrant:
    """The grant a CreateGrant call would make: what a parent grant must admit."""

    operations: frozenset[str]
    constraints: GrantConstraints | None


def _holds_within(pairs: Mapping[str, str] | None, required: Mapping[str, str]) -> bool:
    return pairs is not None and all(pairs.get(k) == v for k, v in required.items())


def grant_admits(parent: GrantConstraints | None, child: GrantConstraints | None) -> bool:
    """May a grantee whose grant has ``parent`` constraints create a grant with ``child`` ones?

    AWS: only with an equally strict or stricter encryption-context constraint, i.e. every
    context the child grant accepts must be accepted by the parent. A parent with a SourceArn
    constraint admits nothing: the CreateGrant call itself would have to be made on behalf of
    that resource, which no request to regionkms is (``GrantConstraints``).
    """
    if parent is None:
        return True
    if parent.source_arn is not None:
        return False
    if child is None:
        return False
    if parent.encryption_context_equals is not None and (
        child.encryption_context_equals is None
        or dict(child.encryption_context_equals) != dict(parent.encryption_context_equals)
    ):
        return False
    required = parent.encryption_context_subset
    if required is not None:
        # Every context the child accepts holds its Equals pairs (if any), else its Subset pairs.
        narrowest = child.encryption_context_equals
        if narrowest is None:
            narrowest = child.encryption_context_subset
        return _holds_within(narrowest, required)
    return True


def _unconstrained(grant: GrantView, action_key: str) -> GrantView:
    """``grant`` without the constraints AWS does not apply to ``action_key``.

    Encryption-context constraints apply to neither DescribeKey, RetireGrant nor (once the
    parent admitted the new grant) CreateGrant; a SourceArn constraint applies to everything
    but RetireGrant.
    """
    if grant.constraints is None:
        return grant
    kept = None if action_key == "kms:retiregrant" else grant.constraints.without_encryption_context()
    return GrantView(grant.grant_id, grant.grantee_principal, grant.operations, kept)


def applicable_grants(
    grants: Sequence[GrantView], principal_arn: str, action_key: str, new_grant: NewGrant | None = None
) -> tuple[GrantView, ...]:
    """The caller's grants as they apply to this action (``action_key`` lower-cased).

    DescribeKey and RetireGrant ignore encryption-context constraints. For CreateGrant, a grant
    counts only if the new grant asks for no operation it lacks and a constraint at least as
    strict as its own (a grant can never be used to widen itself).
    """
    mine = [g for g in grants if g.grantee_principal is not None and g.grantee_principal == principal_arn]
    if not mine:
        return ()
    if action_key in CONSTRAINT_FREE_ACTIONS:
        return tuple(_unconstrained(g, action_key) for g in mine)
    if action_key == "kms:creategrant":
        if new_grant is None:
            return ()
        wanted = {op.lower() for op in new_grant.operations}
        return tuple(
            _unconstrained(g, action_key)
            for g in mine
            if wanted <= {op.lower() for op in g.operations} and grant_admits(g.constraints, new_grant.constraints)
        )
    return tuple(mine)
