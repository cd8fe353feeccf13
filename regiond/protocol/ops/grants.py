"""CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant: parse -> call
``GrantService`` -> render.

``KeyId`` in a grant list entry is the key ARN and ``IssuingAccount`` the issuing account's
root ARN, as AWS renders them. The call record gets the key ARN and the grant id; never the
grant token (the audit layer drops ``GrantToken(s)`` members in any case).
"""

from __future__ import annotations

from typing import Any

from regiond.domain import ids
from regiond.domain.grants import GrantRecord, constraints_to_json
from regiond.domain.principal import root_arn
from regiond.protocol.context import OpContext, OpHandler, Params, Result
from regiond.protocol.ops.keys import requester
from regiond.service.grants import CreateGrantRequest

__all__ = ["HANDLERS", "grant_entry"]


def grant_entry(grant: GrantRecord, region: str) -> dict[str, Any]:
    return {
        "KeyId": ids.key_arn(region, grant.account, grant.key_id),
        "GrantId": grant.grant_id,
        "Name": grant.name,
        "CreationDate": grant.creation_date,
        "GranteePrincipal": grant.grantee_principal,
        "RetiringPrincipal": grant.retiring_principal,
        "IssuingAccount": root_arn(grant.account),
        "Operations": list(grant.operations),
        "Constraints": constraints_to_json(grant.constraints),
        "GranteeServicePrincipal": grant.grantee_service_principal,
        "RetiringServicePrincipal": grant.retiring_service_principal,
    }


def _audit(ctx: OpContext, key_arn: str, grant_id: str | None) -> None:
    ctx.record.resources.append(key_arn)
    if grant_id is not None:
        ctx.record.additional.setdefault("grantId", grant_id)


async def create_grant(ctx: OpContext, params: Params) -> Result:
    request = CreateGrantRequest(
        key_id=params["KeyId"],
        operations=tuple(params["Operations"]),
        grantee_principal=params.get("GranteePrincipal"),
        retiring_principal=params.get("RetiringPrincipal"),
        constraints=params.get("Constraints"),
        name=params.get("Name"),
        dry_run=bool(params.get("DryRun", False)),
        grantee_service_principal=params.get("GranteeServicePrincipal"),
        retiring_service_principal=params.get("RetiringServicePrincipal"),
    )
    result = await ctx.services.grants.create_grant(requester(ctx), request, ctx.now)
    _audit(ctx, result.key.arn, result.grant.grant_id)
    return {"GrantToken": result.token, "GrantId": result.grant.grant_id}


async def list_grants(ctx: OpContext, params: Params) -> Result:
    key, page = await ctx.services.grants.list_grants(
        requester(ctx), params["KeyId"], grant_id=params.get("GrantId"),
        grantee_principal=params.get("GranteePrincipal"), limit=params.get("Limit"), marker=params.get("Marker"),
        grantee_service_principal=params.get("GranteeServicePrincipal"),
    )  # fmt: skip
    _audit(ctx, key.arn, None)
    region = ctx.services.settings.region
    return {
        "Grants": [grant_entry(g, region) for g in page.items],
        "NextMarker": page.next_marker,
        "Truncated": page.truncated,
    }


async def list_retirable_grants(ctx: OpContext, params: Params) -> Result:
    page = await ctx.services.grants.list_retirable_grants(
        requester(ctx), params.get("RetiringPrincipal"), limit=params.get("Limit"), marker=params.get("Marker"),
        retiring_service_principal=params.get("RetiringServicePrincipal"),
    )  # fmt: skip
    region = ctx.services.settings.region
    return {
        "Grants": [grant_entry(g, region) for g in page.items],
        "NextMarker": page.next_marker,
        "Truncated": page.truncated,
    }


async def retire_grant(ctx: OpContext, params: Params) -> Result:
    key, grant = await ctx.services.grants.retire_grant(
        requester(ctx), grant_token=params.get("GrantToken"), key_param=params.get("KeyId"),
        grant_id=params.get("GrantId"), dry_run=bool(params.get("DryRun", False)),
    )  # fmt: skip
    _audit(ctx, key.arn, grant.grant_id)
    return {}


async def revoke_grant(ctx: OpContext, params: Params) -> Result:
    key = await ctx.services.grants.revoke_grant(
        requester(ctx), params["KeyId"], params["GrantId"], dry_run=bool(params.get("DryRun", False))
    )
    _audit(ctx, key.arn, params["GrantId"])
    return {}


HANDLERS: dict[str, OpHandler] = {
    "CreateGrant": create_grant,
    "ListGrants": list_grants,
    "ListRetirableGrants": list_retirable_grants,
    "RetireGrant": retire_grant,
    "RevokeGrant": revoke_grant,
}
