"""audit.events: the identity memo hands out fresh dicts; operator events have their own allow-lists."""

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


def test_operator_events_record_only_their_allowed_members() -> None:
    """An operator command's event (``regiond replication promote``) has its own allow-lists: listed
    members are recorded, anything else is dropped, and it is not read-only."""
    record = CallRecord(
        "PromoteReplica", events.OPERATOR_SOURCE, "r", dt.datetime.now(dt.UTC), "eu-west-1", "host",
        "regiond replication promote",
        params={"KeyId": "mrk-1", "PreviousPrimaryRegion": "us-east-1", "Forced": False, "Secret": "s", "Other": 1},
        result={"PrimaryRegion": "eu-west-1", "ReplicaRegions": ["us-east-1"], "Epoch": 2, "Plaintext": "p"},
        resources=["arn:aws:kms:eu-west-1:111122223333:key/mrk-1"],
    )  # fmt: skip
    event = events.build_event(record, uuid.uuid4())
    assert event["eventSource"] == "regionkms.operator" and event["userIdentity"] is None
    assert event["requestParameters"] == {"keyId": "mrk-1", "previousPrimaryRegion": "us-east-1", "forced": False}
    assert event["responseElements"] == {"primaryRegion": "eu-west-1", "replicaRegions": ["us-east-1"], "epoch": 2}
    assert event["readOnly"] is False and event["recipientAccountId"] == "111122223333"
    for table in (events.OPERATOR_REQUEST_MEMBERS, events.OPERATOR_RESPONSE_MEMBERS):
        assert not {m for members in table.values() for m in members} & events.SECRET_MEMBERS
