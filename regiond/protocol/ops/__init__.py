"""The operation tables: one handler per operation, collected from the per-area modules.

Adding an area means adding its module's ``HANDLERS`` here; ``routes`` answers
``UnsupportedOperationException`` for a model operation absent from ``KMS_OPERATIONS``.
"""

from __future__ import annotations

from collections.abc import Mapping

from regiond.protocol.context import OpHandler
from regiond.protocol.ops import (
    aliases,
    asymmetric,
    cryptops,
    grants,
    iam,
    importing,
    keys,
    mac,
    multiregion,
    policies,
    rotation,
)

_KMS_AREAS: tuple[Mapping[str, OpHandler], ...] = (
    keys.HANDLERS, cryptops.HANDLERS, aliases.HANDLERS, multiregion.HANDLERS, grants.HANDLERS, policies.HANDLERS,
    rotation.HANDLERS, importing.HANDLERS, mac.HANDLERS, asymmetric.HANDLERS,
)  # fmt: skip

KMS_OPERATIONS: dict[str, OpHandler] = {name: h for area in _KMS_AREAS for name, h in area.items()}

IAM_OPERATIONS: dict[str, OpHandler] = dict(iam.HANDLERS)
