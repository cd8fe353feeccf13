"""Authorization of every KMS operation: one function, called before any cryptography or write.

``Authorizer.authorize(principal, "kms:Encrypt", key, ...)`` combines, with the pure
``regiond.domain.decision.decide``:

- the key policy (parsed once and cached with the key in ``KeyCache``, so the hot path reads
  no policy from the database);
- the caller's identity policies (``IamAuthorizer.identity_policies``: cached, dropped on any
  IAM change through LISTEN/NOTIFY);
- grants: none yet (issue 4 adds them here, with decision caching and PutKeyPolicy).

Operations that have no key yet (CreateKey, ListKeys, ListAliases, GenerateRandom) are
authorized by identity policies alone, against resource ``*``, as in AWS. A principal of
another account reaching a key by ARN is allowed only if the key policy *and* its own
account's IAM allow it (cross-account rule of ``decide``).

A refusal is ``AccessDeniedException`` in AWS's wording, naming principal, action and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from regiond.domain.decision import decide
from regiond.domain.key import Key
from regiond.domain.policy import Policy, RequestContext
from regiond.domain.principal import Principal
from regiond.errors import AccessDeniedException
from regiond.service.iam_authz import IamAuthorizer

__all__ = ["Authorizer", "KeyPolicySource", "Requester", "access_denied"]

RequestValues = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, plus the request's global condition values (``aws:SourceIp``, ``aws:CurrentTime``)."""

    principal: Principal
    values: RequestValues = field(default_factory=dict)
    request_id: str = ""

    @property
    def account(self) -> str:
        return self.principal.account_id


class KeyPolicySource(Protocol):
    async def key_policy(self, key: Key) -> Policy:
        """The parsed key policy of ``key`` (served from the key cache)."""


def access_denied(principal: Principal, action: str, resource: str) -> AccessDeniedException:
    return AccessDeniedException(
        f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )


class Authorizer:
    def __init__(self, iam_authz: IamAuthorizer, policies: KeyPolicySource) -> None:
        self._iam = iam_authz
        self._policies = policies

    async def authorize(
        self,
        principal: Principal,
        action: str,
        key: Key | None,
        *,
        encryption_context: Mapping[str, str] | None = None,
        request_values: RequestValues | None = None,
    ) -> None:
        """Return if ``principal`` may perform ``action`` on ``key``; else raise AccessDeniedException."""
        identity = await self._iam.identity_policies(principal)
        if key is None:
            ctx = RequestContext(
                principal_arn=principal.arn,
                principal_account=principal.account_id,
                action=action,
                resource_arn="*",
                values=dict(request_values or {}),
                encryption_context=dict(encryption_context or {}),
            )
            denied = allowed = False
            for policy in identity:
                evaluation = policy.evaluate(ctx)
                denied = denied or evaluation.explicit_deny
                allowed = allowed or evaluation.allow
            if denied or not (allowed or ctx.principal_is_root):
                raise access_denied(principal, action, "*")
            return
        ctx = RequestContext(
            principal_arn=principal.arn,
            principal_account=principal.account_id,
            action=action,
            resource_arn=key.arn,
            values=dict(request_values or {}),
            encryption_context=dict(encryption_context or {}),
        )
        decision = decide(
            key_policy=await self._policies.key_policy(key),
            key_account=key.account,
            identity_policies=identity,
            grants=[],
            ctx=ctx,
        )
        if not decision.allowed:
            raise access_denied(principal, action, key.arn)
