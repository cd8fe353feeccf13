"""The audit chain, digests and event records, without a database (issue 7)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import orjson
import pytest

from regiond.audit import chain, events
from regiond.audit.calls import CallRecord
from regiond.audit.verify import walk_events
from regiond.crypto.sign import RegionIdentityKey
from regiond.domain.ciphertext import Header
from regiond.domain.principal import Principal, PrincipalKind
from regiond.errors import AccessDeniedException, DisabledException
from regiond.protocol import shapes
from regiond.store.audit import EventRow

REGION = "us-east-1"
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
ALICE = Principal("arn:aws:iam::111122223333:user/alice", "111122223333", PrincipalKind.USER, "alice", "AIDAALICE")
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _chain(n: int) -> list[EventRow]:
    rows, prev = [], chain.genesis_hash(REGION)
    for seq in range(1, n + 1):
        record = orjson.dumps({"eventName": "Encrypt", "n": seq})
        h = chain.event_hash(prev, record)
        rows.append(EventRow(REGION, seq, uuid.uuid4(), T0, "Encrypt", None, [], None, record, prev, h,
                             "kms.amazonaws.com", False))  # fmt: skip
        prev = h
    return rows


def _kinds(rows: list[EventRow]) -> list[tuple[str, int | None]]:
    report = walk_events(rows, REGION, anchor=chain.genesis_hash(REGION), first_seq=1)
    return [(f.kind, f.seq) for f in report.findings]


def test_untouched_chain_has_no_findings() -> None:
    assert _kinds(_chain(50)) == []


def test_edited_event_is_reported_as_changed_and_nothing_else() -> None:
    rows = _chain(10)
    rows[4] = dataclasses.replace(rows[4], record=rows[4].record.replace(b"Encrypt", b"Decrypt"))
    assert _kinds(rows) == [("changed", 5)]


def test_deleted_event_is_reported_with_its_seq() -> None:
    rows = _chain(10)
    del rows[6]
    assert _kinds(rows) == [("deleted", 7)]


def test_swapped_pair_is_one_reorder_finding() -> None:
    rows = _chain(10)
    a, b = rows[3], rows[4]
    rows[3], rows[4] = dataclasses.replace(b, seq=a.seq), dataclasses.replace(a, seq=b.seq)
    assert _kinds(rows) == [("reordered", 4)]


def test_inserted_event_that_links_correctly_is_still_reported() -> None:
    rows = _chain(10)
    forged_record = orjson.dumps({"eventName": "Decrypt", "forged": True})
    forged = EventRow(REGION, 6, uuid.uuid4(), T0, "Decrypt", None, [], None, forged_record, rows[4].hash,
                      chain.event_hash(rows[4].hash, forged_record), "kms.amazonaws.com", False)  # fmt: skip
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in rows[5:]]
    assert _kinds([*rows[:5], forged, *shifted]) == [("inserted", 6)]


def test_edit_with_rewritten_hash_breaks_the_next_link() -> None:
    rows = _chain(10)
    record = rows[2].record.replace(b"Encrypt", b"Decrypt")
    rows[2] = dataclasses.replace(rows[2], record=record, hash=chain.event_hash(rows[2].prev_hash, record))
    assert _kinds(rows) == [("broken", 4)]


def test_chain_of_another_region_does_not_verify_here() -> None:
    report = walk_events(_chain(3), "eu-west-1", anchor=chain.genesis_hash("eu-west-1"), first_seq=1)
    assert [f.kind for f in report.findings] == ["broken"]


def test_digest_signature_covers_every_field() -> None:
    key = RegionIdentityKey.generate()
    d = chain.Digest(REGION, 1, 100, b"\x01" * 32, None, T0).signed(key)
    assert d.signature_valid(key.public_bytes())
    for change in ({"last_seq": 101}, {"last_hash": b"\x02" * 32}, {"region": "eu-west-1"},
                   {"prev_digest": b"\x00" * 32}, {"digest_time": T0 + dt.timedelta(seconds=1)}):  # fmt: skip
        assert not dataclasses.replace(d, **change).signature_valid(key.public_bytes())
    assert not d.signature_valid(RegionIdentityKey.generate().public_bytes())


def test_digest_hash_links_digests_in_order() -> None:
    key = RegionIdentityKey.generate()
    first = chain.Digest(REGION, 1, 10, b"\x01" * 32, None, T0).signed(key)
    second = chain.Digest(REGION, 11, 20, b"\x02" * 32, chain.digest_hash(first), T0).signed(key)
    assert second.prev_digest == chain.digest_hash(first) != chain.digest_hash(second)


# --- event records ------------------------------------------------------------------------

SECRET_PLAINTEXT = b"attack at dawn, the password is hunter2"
SECRET_BLOB = Header("1234abcd-12ab-34cd-56ef-1234567890ab", 3).to_bytes() + b"\xaa" * 40


def _record(operation: str, params: dict, result: dict | None = None, **kw: object) -> CallRecord:  # type: ignore[type-arg]
    return CallRecord(
        operation=operation, event_source=kw.pop("source", "kms.amazonaws.com"), request_id="req-1",  # type: ignore[arg-type]
        event_time=T0, region=REGION, source_ip="198.51.100.7", user_agent="test/1.0", principal=ALICE,
        access_key_id="AKIAEXAMPLE", params=params, result=result, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _event(record: CallRecord) -> dict:  # type: ignore[type-arg]
    encoded = events.encode(record)
    assert SECRET_PLAINTEXT not in encoded and b"hunter2" not in encoded
    assert SECRET_BLOB not in encoded
    return orjson.loads(encoded)  # type: ignore[no-any-return]


def test_encrypt_event_has_cloudtrail_fields_and_no_plaintext() -> None:
    params = {"KeyId": "alias/app", "Plaintext": SECRET_PLAINTEXT, "EncryptionContext": {"Dept": "IT"}}
    record = _record("Encrypt", params, {"CiphertextBlob": SECRET_BLOB, "KeyId": KEY_ARN}, resources=[KEY_ARN])
    e = _event(record)
    assert e["eventVersion"] == events.EVENT_VERSION
    assert e["eventTime"] == "2024-05-01T12:00:00Z"
    assert (e["eventSource"], e["eventName"], e["awsRegion"]) == ("kms.amazonaws.com", "Encrypt", REGION)
    assert e["userIdentity"] == {
        "type": "IAMUser", "principalId": "AIDAALICE", "arn": ALICE.arn, "accountId": "111122223333",
        "accessKeyId": "AKIAEXAMPLE", "userName": "alice",
    }  # fmt: skip
    assert e["requestParameters"] == {"keyId": "alias/app", "encryptionContext": {"Dept": "IT"}}
    assert e["responseElements"] is None
    assert e["readOnly"] is True
    assert e["resources"] == [{"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": KEY_ARN}]
    assert e["additionalEventData"]["backingKeyVersion"] == 3
    assert e["requestID"] == "req-1" and uuid.UUID(e["eventID"])
    assert "errorCode" not in e


def test_events_name_the_key_material_the_call_used_as_cloudtrail_does() -> None:
    """CloudTrail's additionalEventData.keyMaterialId (source/destination for ReEncrypt), read from the
    response; not on failure, and not for a response without one (an RSA key's Decrypt)."""
    first, second = "a" * 64, "b" * 64
    for operation in ("Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
                      "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"):  # fmt: skip
        e = _event(_record(operation, {"KeyId": KEY_ARN}, {"KeyId": KEY_ARN, "KeyMaterialId": first}))
        assert e["additionalEventData"]["keyMaterialId"] == first, operation
        failed = _record(operation, {"KeyId": KEY_ARN}, {"KeyMaterialId": first}, error=DisabledException("off"))
        assert "additionalEventData" not in _event(failed), operation
    moved = _event(_record("ReEncrypt", {"CiphertextBlob": SECRET_BLOB},
                           {"SourceKeyMaterialId": first, "DestinationKeyMaterialId": second}))  # fmt: skip
    assert moved["additionalEventData"]["sourceKeyMaterialId"] == first
    assert moved["additionalEventData"]["destinationKeyMaterialId"] == second
    assert "additionalEventData" not in _event(_record("Decrypt", {"KeyId": KEY_ARN}, {"KeyId": KEY_ARN}))
    assert "additionalEventData" not in _event(_record("Sign", {"KeyId": KEY_ARN}, {"KeyMaterialId": first}))


def test_denied_call_records_error_and_no_response() -> None:
    denied = AccessDeniedException(
        f"User: {ALICE.arn} is not authorized to perform: kms:Decrypt on resource: {KEY_ARN}"
    )
    e = _event(_record("Decrypt", {"CiphertextBlob": SECRET_BLOB}, {"Plaintext": SECRET_PLAINTEXT}, error=denied))
    assert e["errorCode"] == "AccessDeniedException"
    assert e["errorMessage"].startswith("User: arn:aws:iam::111122223333:user/alice is not authorized")
    assert e["responseElements"] is None and e["requestParameters"] is None
    assert "additionalEventData" not in e


def test_create_access_key_event_never_holds_the_secret() -> None:
    result = {"AccessKey": {"UserName": "bob", "AccessKeyId": "AKIABOB", "Status": "Active",
                            "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}  # fmt: skip
    encoded = events.encode(_record("CreateAccessKey", {"UserName": "bob"}, result, source="iam.amazonaws.com"))
    e = orjson.loads(encoded)
    assert b"wJalrXUtnFEMI" not in encoded
    assert e["responseElements"] == {"accessKey": {"userName": "bob", "accessKeyId": "AKIABOB", "status": "Active"}}
    assert e["readOnly"] is False


def test_unlisted_members_and_bytes_never_reach_an_event() -> None:
    params = {"KeyId": "k", "Unmodelled": "x", "EncryptionContext": {"a": "b"}, "GrantTokens": ["tok"]}
    e = _event(_record("GenerateDataKey", params, {"Plaintext": SECRET_PLAINTEXT, "CiphertextBlob": SECRET_BLOB}))
    assert e["requestParameters"] == {"keyId": "k", "encryptionContext": {"a": "b"}}
    sneaky = {"KeyMetadata": {"KeyId": "k", "KeyMaterial": b"\x01" * 32, "Plaintext": "p", "Nested": [b"\x02"]}}
    e = _event(_record("CreateKey", {}, sneaky))
    assert e["responseElements"] == {"keyMetadata": {"keyId": "k", "nested": []}}


def test_timestamps_in_response_elements_use_cloudtrail_wording() -> None:
    result = {
        "KeyId": "k",
        "DeletionDate": dt.datetime(2024, 5, 8, 17, 1, 8, tzinfo=dt.UTC),
        "KeyState": "PendingDeletion",
    }
    e = _event(_record("ScheduleKeyDeletion", {"KeyId": "k", "PendingWindowInDays": 7}, result))
    assert e["responseElements"]["deletionDate"] == "May 8, 2024, 5:01:08 PM"
    assert e["readOnly"] is False


def test_allow_lists_name_only_modelled_non_secret_members() -> None:
    """Guard for whoever edits the tables: every listed KMS member exists and is neither a blob nor sensitive."""
    model = shapes._load_model()
    table = model["shapes"]
    assert set(events.REQUEST_MEMBERS) == set(model["operations"])
    for table_of, side in ((events.REQUEST_MEMBERS, "input"), (events.RESPONSE_MEMBERS, "output")):
        for operation, members in table_of.items():
            shape = table[model["operations"][operation][side]["shape"]]
            for member in members:
                ref = shape["members"][member]
                target = table[ref["shape"]]
                assert target["type"] != "blob" and not target.get("sensitive"), (operation, member)
                assert member not in events.SECRET_MEMBERS, (operation, member)


@pytest.mark.parametrize(
    ("operation", "read_only"),
    [
        ("Decrypt", True),
        ("ListKeys", True),
        ("CreateKey", False),
        ("ScheduleKeyDeletion", False),
        ("GetKeyPolicy", True),
    ],
)
def test_read_only_follows_cloudtrail(operation: str, read_only: bool) -> None:
    assert events.is_read_only(operation) is read_only
