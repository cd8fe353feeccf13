"""Authorization of the IAM admin operations: identity policies only (there is no key policy).

A principal acts only inside its own account; there an account root may do anything, and any
other principal needs an identity policy that allows ``iam:<Operation>`` on the target's ARN,
with no explicit Deny. Parsed policies are cached per principal and dropped on any IAM change.
The admin handlers (``protocol/ops/iam.py``) call ``authorize`` before anything else, as every
KMS operation goes through ``service/authz.py``: the protocol edge parses, the service decides.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from regiond.cache import TtlCache
from regiond.domain.policy import Policy, PolicyKind, RequestContext, parse_policy
from regiond.domain.principal import Principal
from regiond.errors import AccessDeniedException, KmsError
from regiond.service.iam import IamService

log = structlog.get_logger(__name__)

DENY_EVERYTHING = parse_policy(
    '{"Version": "2012-10-17", "Statement": [{"Sid": "UnreadableStoredPolicy", "Effect": "Deny", '
    '"Action": "*", "Resource": "*"}]}',
    kind=PolicyKind.IDENTITY,
)
"""What an identity policy that can no longer be parsed amounts to."""


class IamAuthorizer:
    def __init__(self, iam: IamService, *, ttl_s: float) -> None:
        self._iam = iam
        self._policies: TtlCache[str, tuple[Policy, ...]] = TtlCache(ttl_s=ttl_s)

    def invalidate(self, _payload: str | None = None) -> None:
        self._policies.invalidate()

    async def identity_policies(self, principal: Principal) -> tuple[Policy, ...]:
        generation = self._policies.generation
        hit = self._policies.get(principal.arn)
        if hit is not None:
            return hit
        parsed = []
        for name, document in (await self._iam.identity_policies(principal.arn)).items():
            try:
                parsed.append(parse_policy(document, kind=PolicyKind.IDENTITY))
            except KmsError:
                # Stored before the grammar tightened (writes are checked now). Skipping it would
                # drop its Deny statements: fail closed, it denies everything until it is replaced.
                log.error("iam.policy_unreadable", principal=principal.arn, policy_name=name)
                parsed.append(DENY_EVERYTHING)
        result = tuple(parsed)
        self._policies.put(principal.arn, result, generation=generation)
        return result

    async def authorize(
        self, principal: Principal, operation: str, resource_arn: str, values: Mapping[str, tuple[str, ...]]
    ) -> None:
        """Raise AccessDeniedException unless ``principal`` may perform ``iam:<operation>`` on
        ``resource_arn``: never across accounts (a root's power stops at its own account), and
        otherwise as ``allows`` decides."""
        action = f"iam:{operation}"
        target_account = resource_arn.split(":")[4]
        if principal.account_id != target_account or not await self.allows(principal, action, resource_arn, values):
            raise AccessDeniedException(
                f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource_arn}"
            )

    async def allows(
        self, principal: Principal, action: str, resource_arn: str, values: Mapping[str, tuple[str, ...]]
    ) -> bool:
        """``values``: the request's global condition keys (``aws:SourceIp``, ``aws:CurrentTime``,
        ``aws:RequestedRegion``), which IAM evaluates for every service: without them a ``Deny`` on
        the caller's address or on a time window would never apply."""
        if principal.is_root:
            return True
        ctx = RequestContext(
            principal_arn=principal.arn,
            principal_account=principal.account_id,
            action=action,
            resource_arn=resource_arn,
            values=values,
        )
        allowed = False
        for policy in await self.identity_policies(principal):
            evaluation = policy.evaluate(ctx)
            if evaluation.explicit_deny:
                return False
            allowed = allowed or evaluation.allow
        return allowed
