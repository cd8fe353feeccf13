"""What one API call was, for the audit trail: the seam between the protocol edge and audit.

The protocol layer fills a ``CallRecord`` for every request that reaches an operation and
hands it to an ``AuditSink``; the response is sent only after ``submit`` returns (the
event is durable). Handlers add the key ARNs they touched and any additional event data.
Parameters and results are the *validated* dicts: the audit module decides which members
may be recorded (never plaintext, blobs, key material or secrets).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from regiond.domain.principal import Principal
from regiond.errors import KmsError


@dataclass(slots=True)
class CallRecord:
    operation: str
    event_source: str
    request_id: str
    event_time: dt.datetime
    region: str
    source_ip: str
    user_agent: str
    principal: Principal | None = None
    access_key_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: KmsError | None = None
    resources: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)
    secure_transport: bool = False  # the client's connection was TLS (aws:SecureTransport)


class AuditSink(Protocol):
    async def submit(self, record: CallRecord) -> None:
        """Return once the record is durable; raise if it cannot be made durable."""


class NullAuditSink:
    """Records nothing: for benchmarks measuring the cost of audit, never the default."""

    async def submit(self, record: CallRecord) -> None:
        return None
