"""Replication messages: every message round-trips through a frame; malformed bodies are refused by name.

Strategies are derived from the codecs each field declares, so a message added to
``messages.MESSAGES`` is covered here without a new test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regiond.domain.key import KeySpec, KeyUsage, Origin
from regiond.domain.principal import PrincipalKind
from replication import frames, messages
from replication.frames import Frame, FrameKind
from replication.messages import (
    IAM_MESSAGES,
    MESSAGES,
    RESERVED_KINDS,
    BoolCodec,
    BytesCodec,
    ChoiceCodec,
    Codec,
    EnumCodec,
    FlatCodec,
    IamAccessKey,
    IamChange,
    IntCodec,
    KeyCreated,
    KeyUpdated,
    ListCodec,
    MessageError,
    MissingFieldError,
    MistypedFieldError,
    NullableCodec,
    PairCodec,
    RecordCodec,
    ReplicaProperties,
    Rotation,
    SealedVersion,
    SharedState,
    StrCodec,
    TimeCodec,
    UnknownFieldError,
    VersionRecord,
    from_us,
    to_us,
)

MRK = "mrk-0123456789abcdef0123456789abcdef"
CONCRETE: list[type[messages.Message]] = [m for m in MESSAGES.values() if m is not IamChange] + list(
    IAM_MESSAGES.values()
)
PARTS: list[type[messages.Record]] = [
    VersionRecord, Rotation, SharedState, SealedVersion, ReplicaProperties, messages.SignedDigest,
]  # fmt: skip
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


# --- strategies from codecs ---------------------------------------------------------------------


def strategy(codec: Codec[Any]) -> st.SearchStrategy[Any]:
    if isinstance(codec, StrCodec):
        return TEXT if codec.pattern is None else st.from_regex(codec.pattern, fullmatch=True)
    if isinstance(codec, IntCodec):
        return st.integers(codec.minimum, messages.U63_MAX)
    if isinstance(codec, BoolCodec):
        return st.booleans()
    if isinstance(codec, BytesCodec):
        return st.binary(max_size=40)
    if isinstance(codec, TimeCodec):
        return st.integers(0, messages.MAX_US).map(from_us)
    if isinstance(codec, EnumCodec):
        members: list[Any] = list(codec.enum_type.__members__.values())
        return st.sampled_from(members)
    if isinstance(codec, ChoiceCodec):
        return st.sampled_from(codec.choices)
    if isinstance(codec, ListCodec):
        return st.lists(strategy(codec.item), max_size=3).map(tuple)
    if isinstance(codec, PairCodec):
        return st.tuples(TEXT, TEXT)
    if isinstance(codec, NullableCodec):
        return st.none() | strategy(codec.inner)
    if isinstance(codec, RecordCodec | FlatCodec):
        return record_strategy(codec.record)
    raise AssertionError(f"no strategy for {codec!r}: add one")


def _build(cls: type[Any], values: dict[str, Any]) -> Any:
    try:
        return cls(**values)
    except MessageError:  # a cross-field rule (e.g. rotation type and date go together)
        return None


def record_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        s = strategy(f.metadata["codec"])
        if f.default is not dataclasses.MISSING:
            s = st.just(f.default) | s
        fields[f.name] = s
    return st.fixed_dictionaries(fields).map(lambda v: _build(cls, v)).filter(lambda m: m is not None)


def decoder(cls: type[Any]) -> Callable[[Mapping[str, Any]], Any]:
    if issubclass(cls, messages.Message):
        return lambda body: messages.decode(cls.KIND, body)
    return lambda body: cls.from_body(body)


def _has_bytes(value: object) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list):
        return any(_has_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    return False


# --- round trips --------------------------------------------------------------------------------


def test_every_frame_kind_has_a_message_and_reserved_numbers_stay_free() -> None:
    assert set(MESSAGES) == set(FrameKind)
    assert all(m.KIND is kind for kind, m in MESSAGES.items())
    assert not set(RESERVED_KINDS) & {k.value for k in FrameKind}
    assert all(issubclass(m, IamChange) and op == m.OP for op, m in IAM_MESSAGES.items())


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_message_round_trips_through_a_frame(cls: type[messages.Message], data: st.DataObject) -> None:
    message = data.draw(record_strategy(cls))
    body = message.to_body()
    frame = Frame(frames.FRAME_VERSION, message.KIND, "us-east-1", "eu-west-1", 1, 1, body, 0)
    received = frames.decode(frames.encode(frame))
    assert messages.decode(received.kind, received.body) == message
    if not _has_bytes(body):  # what an outbox entry holds: JSON
        assert messages.decode(cls.KIND, json.loads(json.dumps(body))) == message


# --- strict decoding ----------------------------------------------------------------------------


def _wire_keys(cls: type[Any]) -> tuple[set[str], set[str]]:
    """(required, optional) top-level wire keys of a record class."""
    required: set[str] = set()
    optional: set[str] = set()
    for f in dataclasses.fields(cls):
        codec = f.metadata["codec"]
        has_default = f.default is not dataclasses.MISSING
        if isinstance(codec, FlatCodec):
            if not has_default:
                required.update(codec.wire_keys())
            continue
        (optional if has_default else required).add(f.metadata["name"] or f.name)
    if issubclass(cls, IamChange):
        required.add("op")
    return required, optional


def _mistype(value: object) -> list[object]:
    """Values of another wire type than ``value`` (and out-of-range ones of the same type)."""
    if isinstance(value, bool):
        return [1, "true", None]
    if isinstance(value, int):
        return ["7", True, -1, 2**63, 1.5]
    if isinstance(value, str):
        return [7, b"x", None, "not one of the allowed values \x00"]
    if isinstance(value, bytes):
        return ["x", 7, [1]]
    if isinstance(value, list):
        return ["x", {"a": 1}, [object()]]
    if isinstance(value, dict):
        return ["x", [value]]
    return []


@pytest.mark.parametrize("cls", [*CONCRETE, *PARTS], ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_malformed_bodies_are_refused_by_name(cls: type[Any], data: st.DataObject) -> None:
    record = data.draw(record_strategy(cls))
    body = record.to_body()
    decode = decoder(cls)
    required, optional = _wire_keys(cls)
    assert decode(body) == record

    with pytest.raises(UnknownFieldError, match="zz_unknown"):
        decode({**body, "zz_unknown": 1})
    for key in required:
        with pytest.raises(MissingFieldError, match=key):
            decode({k: v for k, v in body.items() if k != key})
    for key in optional & set(body):
        decode({k: v for k, v in body.items() if k != key})  # absent: the default
    for key, value in body.items():
        for wrong in _mistype(value):
            if wrong is None and key in optional:
                continue  # nil is the absent value of an optional field
            if isinstance(value, str) and isinstance(wrong, str):
                field_codec = _codec_of(cls, key)
                if not isinstance(field_codec, StrCodec | EnumCodec | ChoiceCodec) or (
                    isinstance(field_codec, StrCodec) and field_codec.pattern is None
                ):
                    continue  # any text is a valid free-text value
            if key == "period_days" and wrong == -1:
                continue
            with pytest.raises((MistypedFieldError, UnknownFieldError, MissingFieldError)):
                decode({**body, key: wrong})


def _codec_of(cls: type[Any], key: str) -> Codec[Any] | None:
    if key == "op":
        return ChoiceCodec(tuple(IAM_MESSAGES))
    for f in dataclasses.fields(cls):
        codec = f.metadata["codec"]
        if isinstance(codec, FlatCodec) and key in codec.wire_keys():
            return _codec_of(codec.record, key)
        if (f.metadata["name"] or f.name) == key:
            inner = codec.inner if isinstance(codec, NullableCodec) else codec
            return inner
    return None


def test_errors_name_the_kind_and_the_path() -> None:
    body = created().to_body()
    body["replica"] = {**body["replica"], "tags": [["k"]]}
    with pytest.raises(MistypedFieldError, match=r"KEY_CREATED\.replica\.tags\[0\]"):
        messages.decode(FrameKind.KEY_CREATED, body)
    body = created().to_body()
    body["materials"] = [{"version": 1, "rotation_type": "AUTOMATIC", "rotation_date_us": 5, "extra": 1}]
    with pytest.raises(UnknownFieldError, match="extra"):
        messages.decode(FrameKind.KEY_CREATED, body)
    with pytest.raises(MistypedFieldError, match=r"IAM_CHANGE\.op"):
        messages.decode(FrameKind.IAM_CHANGE, {"op": "frobnicate"})
    with pytest.raises(MissingFieldError, match=r"IAM_CHANGE\.op"):
        messages.decode(FrameKind.IAM_CHANGE, {})
    with pytest.raises(UnknownFieldError):
        messages.decode(FrameKind.HEARTBEAT, {"x": 1})
    with pytest.raises(MistypedFieldError, match="go together"):
        VersionRecord(2, "AUTOMATIC", None)


def test_optional_shared_state_is_all_or_nothing() -> None:
    bare = KeyUpdated(MRK, "us-east-1", ("eu-west-1",))
    assert bare.to_body() == {"key_id": MRK, "primary_region": "us-east-1", "replica_regions": ["eu-west-1"],
                              "current_version": None}  # fmt: skip
    with pytest.raises(MissingFieldError, match="rotation"):
        messages.decode(FrameKind.KEY_UPDATED, {**bare.to_body(), "materials": []})


# --- the bodies of the previous release (rolling upgrades; outbox rows written before) ----------

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def created() -> KeyCreated:
    shared = SharedState((VersionRecord(1, None, None), VersionRecord(2, "ON_DEMAND", T0)),
                         Rotation(True, 90, T0, T0 + dt.timedelta(days=90)))  # fmt: skip
    return KeyCreated(MRK, "111122223333", "us-east-1", ("eu-west-1", "ap-southeast-2"), KeySpec.SYMMETRIC_DEFAULT,
                      KeyUsage.ENCRYPT_DECRYPT, Origin.AWS_KMS, T0, 2, shared,
                      ReplicaProperties("d", '{"Version": "2012-10-17"}', (("k", "v"),)))  # fmt: skip


def test_key_bodies_are_those_of_the_previous_release() -> None:
    us = to_us(T0)
    shared = {
        "materials": [{"version": 1, "rotation_type": None, "rotation_date_us": None},
                      {"version": 2, "rotation_type": "ON_DEMAND", "rotation_date_us": us}],
        "rotation": {"enabled": True, "period_days": 90, "anchor_date_us": us,
                     "next_rotation_date_us": us + 90 * 86_400_000_000},
    }  # fmt: skip
    old = {
        "key_id": MRK, "account": "111122223333", "primary_region": "us-east-1",
        "replica_regions": ["eu-west-1", "ap-southeast-2"], "key_spec": "SYMMETRIC_DEFAULT",
        "key_usage": "ENCRYPT_DECRYPT", "origin": "AWS_KMS", "creation_date_us": us, "current_version": 2,
        **shared, "replica": {"description": "d", "policy": '{"Version": "2012-10-17"}', "tags": [["k", "v"]]},
    }  # fmt: skip
    assert created().to_body() == old
    assert messages.decode(FrameKind.KEY_CREATED, old) == created()
    sealed = [{"version": 1, "sealed": b"\x01", "created_at_us": us}]
    on_wire = messages.decode(FrameKind.KEY_CREATED, {**old, "material": sealed})
    assert on_wire == dataclasses.replace(created(), material=(SealedVersion(1, b"\x01", T0),))
    assert on_wire.to_body() == {**old, "material": sealed}

    update = {"key_id": MRK, "primary_region": "us-east-1", "replica_regions": ["eu-west-1"],
              "current_version": None, **shared}  # fmt: skip
    assert messages.decode(FrameKind.KEY_UPDATED, update).to_body() == update
    material = {"key_id": MRK, "version": 3, "current_version": 3, **shared}
    assert messages.decode(FrameKind.KEY_MATERIAL, material).to_body() == material
    moved = {"key_id": MRK, "primary_region": "eu-west-1", "replica_regions": ["us-east-1"], "previous": "us-east-1"}
    assert messages.decode(FrameKind.PRIMARY_MOVED, moved).to_body() == moved
    deleted = {"key_id": MRK, "region": "eu-west-1"}
    assert messages.decode(FrameKind.KEY_DELETED, deleted).to_body() == deleted
    assert messages.decode(FrameKind.HEARTBEAT, {}).to_body() == {}


@pytest.mark.parametrize(
    "body",
    [
        {"op": "account", "account_id": "111122223333", "root_principal_id": "111122223333"},
        {"op": "principal", "arn": "arn:aws:iam::111122223333:user/alice", "account_id": "111122223333",
         "kind": "user", "name": "alice", "principal_id": "AIDAEXAMPLE"},
        {"op": "access_key", "access_key_id": "AKIAEXAMPLE", "principal_arn": "arn:p", "status": "Active"},
        {"op": "access_key", "access_key_id": "AKIAEXAMPLE", "principal_arn": "arn:p", "status": "Active",
         "sealed_secret": b"\x01\x02"},
        {"op": "access_key_status", "access_key_id": "AKIAEXAMPLE", "status": "Inactive"},
        {"op": "access_key_deleted", "access_key_id": "AKIAEXAMPLE"},
        {"op": "policy", "principal_arn": "arn:p", "policy_name": "n", "document": "{}"},
        {"op": "policy_deleted", "principal_arn": "arn:p", "policy_name": "n"},
    ],
    ids=lambda b: str(b["op"]) + ("+secret" if "sealed_secret" in b else ""),
)  # fmt: skip
def test_iam_bodies_are_those_of_the_previous_release(body: dict[str, Any]) -> None:
    message = messages.decode(FrameKind.IAM_CHANGE, body)
    assert isinstance(message, IamChange) and body["op"] == message.OP
    assert message.to_body() == body


def test_a_deleted_access_key_was_sent_with_a_nil_secret_and_still_decodes() -> None:
    body = {"op": "access_key", "access_key_id": "AKIAEXAMPLE", "principal_arn": "arn:p", "status": "Active",
            "sealed_secret": None}  # fmt: skip
    message = messages.decode(FrameKind.IAM_CHANGE, body)
    assert isinstance(message, IamAccessKey) and message.sealed_secret is None


def test_secrets_stay_out_of_repr() -> None:
    assert "\\x99" not in repr(SealedVersion(1, b"\x99" * 8, T0))
    assert "\\x99" not in repr(IamAccessKey("AKIAEXAMPLE", "arn:p", "Active", b"\x99" * 8))
    assert PrincipalKind.USER.value == "user"  # the wire value of IamPrincipal.kind
