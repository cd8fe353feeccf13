"""audit.events: the identity memo hands out fresh dicts."""

from __future__ import annotations

import datetime as dt
import uuid

from regiond.audit import events
from regiond.audit.calls import CallRecord
from regiond.domain.principal import Principal, PrincipalKind


def test_event_identity_memo_hands_out_fresh_dicts() -> None:
    principal = Principal("arn:aws:iam::111122223333:user/a", "111122223333", PrincipalKind.USER, "a", "AIDA")
    record = CallRecord("DescribeKey", "kms.amazonaws.com", "r", dt.datetime.now(dt.UTC), "us-east-1", "ip", "ua",
                        principal, "AKIA1")  # fmt: skip
    first = events.build_event(record, uuid.uuid4())
    first["userIdentity"]["arn"] = "changed"
    second = events.build_event(record, uuid.uuid4())
    assert second["userIdentity"]["arn"] == principal.arn
    record.access_key_id = "AKIA2"
    assert events.build_event(record, uuid.uuid4())["userIdentity"]["accessKeyId"] == "AKIA2"
