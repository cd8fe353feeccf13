"""Permissions decided in another region: asking a peer, and answering one.

AWS requires some permissions "in" another Region. UpdatePrimaryRegion: "kms:UpdatePrimaryRegion
on the current replica key (in the replica key's Region). Include this permission in the replica
key's key policy." Key policies and grants are per region and never replicated, so the region
that holds the replica decides: the operation's region asks it through ``PeerAuthorizer``
(implemented by ``replication.runtime.ReplicationNode`` over the signed, mutual-TLS channel) and
the peer answers with ``PeerAuthorizationAnswerer``, which runs this region's own
``Authorizer`` on its own copy of the key: its key policy, the caller's identity policies
(IAM is replicated everywhere) and its grants.

Only the actions an operation needs are answered (``ANSWERED_ACTIONS``), only for multi-Region
keys of the caller's account; anything that cannot be decided (unknown principal, no such key
here) is a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import structlog

from regiond.domain.ids import KeyIdKind, key_id_kind
from regiond.errors import AccessDeniedException, KmsError
from regiond.service.authz import Authorizer
from regiond.service.iam import IamService
from regiond.service.keycache import KeyCache

log = structlog.get_logger(__name__)

__all__ = ["ANSWERED_ACTIONS", "PeerAuthorizationAnswerer", "PeerAuthorizer"]

ANSWERED_ACTIONS = frozenset({"kms:UpdatePrimaryRegion"})
"""The permissions another region may ask this one to decide."""


class PeerAuthorizer(Protocol):
    async def authorize_remote(
        self, region: str, *, principal_arn: str, action: str, key_id: str, values: Mapping[str, tuple[str, ...]]
    ) -> bool:
        """Would ``region`` allow the call on its copy of ``key_id``? Raises when it gives no authentic
        answer (the caller then refuses the operation)."""


class PeerAuthorizationAnswerer:
    """This region's side: decide a peer's question with this region's own policies and grants."""

    def __init__(self, iam: IamService, *, authz: Authorizer, cache: KeyCache) -> None:
        self._iam = iam
        self._authz = authz
        self._cache = cache

    async def decide(
        self, *, source: str, principal_arn: str, action: str, key_id: str, values: Mapping[str, tuple[str, ...]]
    ) -> bool:
        if action not in ANSWERED_ACTIONS or key_id_kind(key_id) is not KeyIdKind.MULTI_REGION:
            log.warning("peer_authz.refused", source=source, action=action[:64], reason="not answerable")
            return False
        try:
            principal = await self._iam.get_principal(principal_arn)
            entry = await self._cache.get(key_id)
            if entry is None or entry.key.account != principal.account_id:
                return False
            await self._authz.authorize(principal, action, entry.key, request_values=values)
        except AccessDeniedException:
            return False
        except KmsError as exc:  # an unknown principal, a key that cannot be read: not allowed
            log.info("peer_authz.undecidable", source=source, key_id=key_id, error=exc.code)
            return False
        return True
