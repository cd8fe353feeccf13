"""What a handler gets besides its parameters: the services, the caller and the call record."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from regiond.audit.calls import CallRecord
from regiond.auth.authn import Caller
from regiond.service.container import Services


@dataclass(slots=True)
class OpContext:
    services: Services
    caller: Caller
    record: CallRecord
    now: dt.datetime

    @property
    def account_id(self) -> str:
        return self.caller.principal.account_id


Params = dict[str, Any]
Result = dict[str, Any]
OpHandler = Callable[[OpContext, Params], Awaitable[Result]]
