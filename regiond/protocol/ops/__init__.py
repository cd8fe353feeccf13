"""The operation tables: one handler per operation, collected from the per-area modules.

Adding an area means adding its module's ``HANDLERS`` here; ``routes`` answers
``UnsupportedOperationException`` for a model operation absent from ``KMS_OPERATIONS``.
"""

from __future__ import annotations

from regiond.protocol.context import OpHandler
from regiond.protocol.ops import iam

KMS_OPERATIONS: dict[str, OpHandler] = {}
for _module_handlers in ():
    KMS_OPERATIONS.update(_module_handlers)

IAM_OPERATIONS: dict[str, OpHandler] = dict(iam.HANDLERS)
