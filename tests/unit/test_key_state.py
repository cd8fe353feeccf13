"""The key state machine: every event in every state, the operation table, and the Key model."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest

from regiond.domain import key as k
from regiond.domain.key import (
    ALLOWED_STATES,
    BackingKeyVersion,
    Key,
    KeyEvent,
    KeyState,
    MultiRegionConfiguration,
    MultiRegionKey,
    MultiRegionKeyType,
    Origin,
)
from regiond.errors import DisabledException, KMSInvalidStateException, ValidationException

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "111122223333"
REGION = "us-east-1"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"
ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"

E, D, PI, PD, PRD, U, C, UP = (
    KeyState.ENABLED,
    KeyState.DISABLED,
    KeyState.PENDING_IMPORT,
    KeyState.PENDING_DELETION,
    KeyState.PENDING_REPLICA_DELETION,
    KeyState.UNAVAILABLE,
    KeyState.CREATING,
    KeyState.UPDATING,
)


def make_key(state: KeyState, **changes: Any) -> Key:
    """A valid key in ``state``, with the fields that state requires."""
    fields: dict[str, Any] = {
        "key_id": KEY_ID,
        "account": ACCOUNT,
        "region": REGION,
        "creation_date": NOW - timedelta(days=100),
        "key_state": state,
    }
    if state is PD:
        fields["deletion_date"] = NOW + timedelta(days=10)
    if state is PRD:
        fields["pending_deletion_window_in_days"] = 14
    fields.update(changes)
    return Key(**fields)


def mrk_config(key_type: MultiRegionKeyType, replicas: int) -> MultiRegionConfiguration:
    primary = MultiRegionKey(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{MRK_ID}", REGION)
    replica_keys = tuple(
        MultiRegionKey(f"arn:aws:kms:{region}:{ACCOUNT}:key/{MRK_ID}", region)
        for region in ("eu-west-1", "ap-southeast-2")[:replicas]
    )
    return MultiRegionConfiguration(key_type, primary, replica_keys)


# --- the transition table, restated by hand from the AWS documentation -------------------------------

# (event, state) -> next state, for every legal pair. Everything absent is illegal.
LEGAL: dict[tuple[KeyEvent, KeyState], KeyState] = {
    (KeyEvent.ENABLE, E): E,
    (KeyEvent.ENABLE, D): E,
    (KeyEvent.ENABLE, U): U,
    (KeyEvent.DISABLE, E): D,
    (KeyEvent.DISABLE, D): D,
    (KeyEvent.DISABLE, U): U,
    (KeyEvent.SCHEDULE_DELETION, E): PD,
    (KeyEvent.SCHEDULE_DELETION, D): PD,
    (KeyEvent.SCHEDULE_DELETION, PI): PD,
    (KeyEvent.SCHEDULE_DELETION, U): PD,
    (KeyEvent.CANCEL_DELETION, PD): D,
    (KeyEvent.CANCEL_DELETION, PRD): D,
    (KeyEvent.IMPORT_MATERIAL, PI): E,
    (KeyEvent.IMPORT_MATERIAL, E): E,
    (KeyEvent.IMPORT_MATERIAL, D): D,
    (KeyEvent.DELETE_IMPORTED_MATERIAL, E): PI,
    (KeyEvent.DELETE_IMPORTED_MATERIAL, D): PI,
    (KeyEvent.DELETE_IMPORTED_MATERIAL, PI): PI,
    (KeyEvent.DELETE_IMPORTED_MATERIAL, PD): PD,
    (KeyEvent.DELETE_IMPORTED_MATERIAL, PRD): PRD,
    (KeyEvent.MATERIAL_EXPIRED, E): PI,
    (KeyEvent.MATERIAL_EXPIRED, D): PI,
    (KeyEvent.MATERIAL_EXPIRED, PI): PI,
    (KeyEvent.MATERIAL_EXPIRED, PD): PD,
    (KeyEvent.MATERIAL_EXPIRED, PRD): PRD,
    (KeyEvent.REPLICA_CREATED, C): E,
    (KeyEvent.PRIMARY_UPDATE_START, E): UP,
    (KeyEvent.PRIMARY_UPDATE_END, UP): E,
    (KeyEvent.LAST_REPLICA_DELETED, PRD): PD,
    (KeyEvent.DESTROY, PD): PD,
}

PHRASE = {
    E: "enabled",
    D: "disabled",
    PI: "pending import",
    PD: "pending deletion",
    PRD: "pending replica deletion",
    U: "unavailable",
    C: "creating",
    UP: "updating",
}


def expected_refusal(event: KeyEvent, state: KeyState) -> tuple[type[Exception], str]:
    if event is KeyEvent.PRIMARY_UPDATE_START and state is D:
        return DisabledException, f"{ARN} is disabled."  # UpdatePrimaryRegion lists DisabledException
    if event in (KeyEvent.CANCEL_DELETION, KeyEvent.DESTROY):
        return KMSInvalidStateException, f"{ARN} is not pending deletion."
    return KMSInvalidStateException, f"{ARN} is {PHRASE[state]}."


@pytest.mark.parametrize(
    ("event", "state"),
    list(itertools.product(KeyEvent, KeyState)),
    ids=lambda value: str(value),
)
def test_every_event_in_every_state(event: KeyEvent, state: KeyState) -> None:
    key = make_key(state)
    if (event, state) in LEGAL:
        assert k.transition(key, event) is LEGAL[(event, state)]
    else:
        error, message = expected_refusal(event, state)
        with pytest.raises(error) as caught:
            k.transition(key, event)
        assert type(caught.value) is error
        assert str(caught.value) == message


def test_the_module_table_is_exactly_the_documented_one() -> None:
    actual = {(event, state): target for event, row in k.TRANSITIONS.items() for state, target in row.items()}
    assert actual == LEGAL


def test_operation_events_are_allowed_by_the_operation_table() -> None:
    operations = {
        KeyEvent.ENABLE: "EnableKey",
        KeyEvent.DISABLE: "DisableKey",
        KeyEvent.SCHEDULE_DELETION: "ScheduleKeyDeletion",
        KeyEvent.CANCEL_DELETION: "CancelKeyDeletion",
        KeyEvent.IMPORT_MATERIAL: "ImportKeyMaterial",
        KeyEvent.DELETE_IMPORTED_MATERIAL: "DeleteImportedKeyMaterial",
        KeyEvent.PRIMARY_UPDATE_START: "UpdatePrimaryRegion",
    }
    for event, operation in operations.items():
        assert set(k.TRANSITIONS[event]) == set(ALLOWED_STATES[operation]), event


def test_scheduling_a_primary_with_replicas_waits_for_them() -> None:
    primary = make_key(E, key_id=MRK_ID, multi_region_configuration=mrk_config(MultiRegionKeyType.PRIMARY, 2))
    assert k.transition(primary, KeyEvent.SCHEDULE_DELETION) is PRD


@pytest.mark.parametrize(
    ("key_type", "replicas"), [(MultiRegionKeyType.PRIMARY, 0), (MultiRegionKeyType.REPLICA, 1)]
)
def test_scheduling_other_multi_region_keys_starts_the_wait_at_once(
    key_type: MultiRegionKeyType, replicas: int
) -> None:
    key = make_key(D, key_id=MRK_ID, multi_region_configuration=mrk_config(key_type, replicas))
    assert k.transition(key, KeyEvent.SCHEDULE_DELETION) is PD


def test_a_replica_of_an_imported_key_is_created_pending_import() -> None:
    replica = make_key(
        C,
        key_id=MRK_ID,
        origin=Origin.EXTERNAL,
        multi_region_configuration=mrk_config(MultiRegionKeyType.REPLICA, 1),
    )
    assert k.transition(replica, KeyEvent.REPLICA_CREATED) is PI


# --- apply(): the fields that move with the state --------------------------------------------------


def test_schedule_deletion_sets_the_deletion_date() -> None:
    scheduled = k.apply(make_key(E), KeyEvent.SCHEDULE_DELETION, now=NOW, pending_window=7)
    assert scheduled.key_state is PD
    assert scheduled.deletion_date == NOW + timedelta(days=7)
    assert not scheduled.enabled


def test_schedule_deletion_defaults_to_30_days() -> None:
    scheduled = k.apply(make_key(D), KeyEvent.SCHEDULE_DELETION, now=NOW)
    assert scheduled.deletion_date == NOW + timedelta(days=30)


def test_schedule_deletion_needs_now() -> None:
    with pytest.raises(ValueError):
        k.apply(make_key(E), KeyEvent.SCHEDULE_DELETION)


def test_a_primary_with_replicas_keeps_its_window_until_the_last_replica_goes() -> None:
    primary = make_key(E, key_id=MRK_ID, multi_region_configuration=mrk_config(MultiRegionKeyType.PRIMARY, 1))
    waiting = k.apply(primary, KeyEvent.SCHEDULE_DELETION, now=NOW, pending_window=10)
    assert (waiting.key_state, waiting.deletion_date, waiting.pending_deletion_window_in_days) == (
        PRD,
        None,
        10,
    )
    later = NOW + timedelta(days=3)
    pending = k.apply(waiting, KeyEvent.LAST_REPLICA_DELETED, now=later)
    assert (pending.key_state, pending.deletion_date, pending.pending_deletion_window_in_days) == (
        PD,
        later + timedelta(days=10),
        None,
    )


@pytest.mark.parametrize("state", [PD, PRD])
def test_cancel_deletion_leaves_the_key_disabled_without_dates(state: KeyState) -> None:
    cancelled = k.apply(make_key(state), KeyEvent.CANCEL_DELETION)
    assert (cancelled.key_state, cancelled.deletion_date, cancelled.pending_deletion_window_in_days) == (
        D,
        None,
        None,
    )


def test_events_that_keep_pending_deletion_keep_its_date() -> None:
    key = make_key(PD)
    for event in (KeyEvent.DELETE_IMPORTED_MATERIAL, KeyEvent.MATERIAL_EXPIRED, KeyEvent.DESTROY):
        assert k.apply(key, event).deletion_date == key.deletion_date


def test_apply_refuses_what_transition_refuses() -> None:
    with pytest.raises(KMSInvalidStateException):
        k.apply(make_key(PD), KeyEvent.SCHEDULE_DELETION, now=NOW)


@pytest.mark.parametrize("days", [0, 6, 31, 365])
def test_pending_window_must_be_7_to_30_days(days: int) -> None:
    with pytest.raises(ValidationException) as caught:
        k.deletion_date(NOW, days)
    assert caught.value.message == f"PendingWindowInDays should be between 7 and 30, but it is {days}"


@pytest.mark.parametrize("days", [7, 30])
def test_pending_window_bounds_are_inclusive(days: int) -> None:
    assert k.deletion_date(NOW, days) == NOW + timedelta(days=days)


def test_deletion_date_needs_an_aware_now() -> None:
    with pytest.raises(ValueError):
        k.deletion_date(datetime(2025, 1, 1), 7)


# --- the operation table ------------------------------------------------------------------------------


def _kms_model() -> dict[str, Any]:
    path = resources.files("botocore") / "data" / "kms" / "2014-11-01" / "service-2.json.gz"
    model: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return model


def test_every_operation_on_an_existing_key_has_a_row() -> None:
    model = _kms_model()
    shapes = model["shapes"]
    on_keys = set()
    for name, operation in model["operations"].items():
        members = shapes[operation["input"]["shape"]]["members"] if "input" in operation else {}
        if {"KeyId", "TargetKeyId", "SourceKeyId", "DestinationKeyId"} & set(members):
            on_keys.add(name)
    # ListRetirableGrants and the custom key store operations name no KMS key; CreateKey and
    # GenerateRandom have none yet.
    assert on_keys <= set(ALLOWED_STATES)
    assert set(ALLOWED_STATES) <= set(model["operations"])


def test_disabled_exception_operations_are_those_the_model_lists() -> None:
    model = _kms_model()
    listed = {
        name
        for name, operation in model["operations"].items()
        if any(error["shape"] == "DisabledException" for error in operation.get("errors", []))
    }
    assert listed == k.DISABLED_EXCEPTION_OPERATIONS


@pytest.mark.parametrize("state", list(KeyState))
def test_describe_key_works_in_every_state(state: KeyState) -> None:
    k.require_state("DescribeKey", make_key(state))


@pytest.mark.parametrize(
    ("operation", "state", "error", "message"),
    [
        ("Encrypt", D, DisabledException, f"{ARN} is disabled."),
        ("Decrypt", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("GenerateDataKey", PI, KMSInvalidStateException, f"{ARN} is pending import."),
        ("ReEncrypt", U, KMSInvalidStateException, f"{ARN} is unavailable."),
        ("Encrypt", C, KMSInvalidStateException, f"{ARN} is creating."),
        ("Sign", PRD, KMSInvalidStateException, f"{ARN} is pending replica deletion."),
        ("CreateGrant", D, DisabledException, f"{ARN} is disabled."),
        ("CreateGrant", PI, KMSInvalidStateException, f"{ARN} is pending import."),
        ("CancelKeyDeletion", E, KMSInvalidStateException, f"{ARN} is not pending deletion."),
        ("CancelKeyDeletion", D, KMSInvalidStateException, f"{ARN} is not pending deletion."),
        ("TagResource", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("UntagResource", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("CreateAlias", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("UpdateKeyDescription", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("EnableKey", PI, KMSInvalidStateException, f"{ARN} is pending import."),
        ("EnableKey", UP, KMSInvalidStateException, f"{ARN} is updating."),
        ("DisableKey", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("ScheduleKeyDeletion", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("ImportKeyMaterial", PD, KMSInvalidStateException, f"{ARN} is pending deletion."),
        ("EnableKeyRotation", D, DisabledException, f"{ARN} is disabled."),
        ("ReplicateKey", UP, KMSInvalidStateException, f"{ARN} is updating."),
    ],
)
def test_refusals_use_the_aws_exception_and_words(
    operation: str, state: KeyState, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        k.require_state(operation, make_key(state))
    assert type(caught.value) is error
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("operation", "state"),
    [
        ("Encrypt", E),
        ("Decrypt", UP),  # "you can use the keys in cryptographic operations" while Updating
        ("TagResource", D),
        ("TagResource", C),  # "While the key state is Creating, you can manage key"
        ("PutKeyPolicy", PD),
        ("DeleteAlias", PD),
        ("RevokeGrant", PD),
        ("CreateGrant", U),
        ("ScheduleKeyDeletion", PI),
        ("DeleteImportedKeyMaterial", PD),
        ("GetPublicKey", D),
    ],
)
def test_allowed_operations_pass(operation: str, state: KeyState) -> None:
    k.require_state(operation, make_key(state))


def test_an_unknown_operation_is_a_bug() -> None:
    with pytest.raises(KeyError):
        k.require_state("Frobnicate", make_key(E))


@pytest.mark.parametrize("state", list(KeyState))
def test_require_usable_for_crypto_allows_only_enabled_and_updating(state: KeyState) -> None:
    key = make_key(state)
    if state in (E, UP):
        k.require_usable_for_crypto(key)
    else:
        with pytest.raises((DisabledException, KMSInvalidStateException)):
            k.require_usable_for_crypto(key, "Decrypt")


def test_require_usable_for_crypto_takes_only_cryptographic_operations() -> None:
    with pytest.raises(ValueError):
        k.require_usable_for_crypto(make_key(E), "DescribeKey")


# --- the Key model ------------------------------------------------------------------------------------


def test_key_derives_arn_enabled_and_multi_region() -> None:
    key = make_key(E)
    assert key.arn == ARN
    assert key.enabled
    assert not key.multi_region
    assert not make_key(D).enabled
    mrk = make_key(E, key_id=MRK_ID, multi_region_configuration=mrk_config(MultiRegionKeyType.PRIMARY, 0))
    assert mrk.multi_region
    assert not mrk.is_primary_with_replicas


@pytest.mark.parametrize(
    "changes",
    [
        {"key_state": E, "deletion_date": NOW},  # DeletionDate only in PendingDeletion
        {"key_state": PD, "deletion_date": None},
        {"key_state": E, "pending_deletion_window_in_days": 7},
        {"key_state": PRD, "pending_deletion_window_in_days": 31},
        {"key_id": MRK_ID},  # multi-Region key without its configuration
        {"multi_region_configuration": mrk_config(MultiRegionKeyType.PRIMARY, 0)},
        {"key_id": KEY_ID.upper()},
        {"account": "1234"},
        {"region": "Nowhere"},
        {"creation_date": datetime(2025, 1, 1)},
    ],
)
def test_inconsistent_keys_cannot_be_built(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(make_key(E), **changes)


@pytest.mark.parametrize(
    ("spec", "usage", "encryption", "signing", "mac"),
    [
        (k.KeySpec.SYMMETRIC_DEFAULT, k.KeyUsage.ENCRYPT_DECRYPT, ("SYMMETRIC_DEFAULT",), (), ()),
        (k.KeySpec.RSA_2048, k.KeyUsage.ENCRYPT_DECRYPT, ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"), (), ()),
        (
            k.KeySpec.RSA_4096,
            k.KeyUsage.SIGN_VERIFY,
            (),
            (
                "RSASSA_PSS_SHA_256",
                "RSASSA_PSS_SHA_384",
                "RSASSA_PSS_SHA_512",
                "RSASSA_PKCS1_V1_5_SHA_256",
                "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
            ),
            (),
        ),
        (k.KeySpec.ECC_NIST_P384, k.KeyUsage.SIGN_VERIFY, (), ("ECDSA_SHA_384",), ()),
        (k.KeySpec.HMAC_256, k.KeyUsage.GENERATE_VERIFY_MAC, (), (), ("HMAC_SHA_256",)),
        (k.KeySpec.ECC_NIST_P256, k.KeyUsage.KEY_AGREEMENT, (), (), ()),
    ],
)
def test_algorithm_lists_follow_key_spec_and_usage(
    spec: k.KeySpec,
    usage: k.KeyUsage,
    encryption: tuple[str, ...],
    signing: tuple[str, ...],
    mac: tuple[str, ...],
) -> None:
    key = make_key(E, key_spec=spec, key_usage=usage)
    assert (key.encryption_algorithms, key.signing_algorithms, key.mac_algorithms) == (
        encryption,
        signing,
        mac,
    )


def test_enums_are_the_model_enums() -> None:
    shapes = _kms_model()["shapes"]
    for enum_type, shape in [
        (KeyState, "KeyState"),
        (k.KeyUsage, "KeyUsageType"),
        (k.KeySpec, "KeySpec"),
        (k.Origin, "OriginType"),
        (k.KeyManager, "KeyManagerType"),
        (k.EncryptionAlgorithm, "EncryptionAlgorithmSpec"),
        (k.SigningAlgorithm, "SigningAlgorithmSpec"),
        (k.MacAlgorithm, "MacAlgorithmSpec"),
        (MultiRegionKeyType, "MultiRegionKeyType"),
        (k.ExpirationModel, "ExpirationModelType"),
    ]:
        assert {member.value for member in enum_type} == set(shapes[shape]["enum"]), shape


def test_backing_key_version_is_a_numbered_aware_reference() -> None:
    version = BackingKeyVersion(1, NOW)
    assert (version.version, version.created_at) == (1, NOW)
    for bad in (0, 2**32):
        with pytest.raises(ValueError):
            BackingKeyVersion(bad, NOW)
    with pytest.raises(ValueError):
        BackingKeyVersion(1, datetime(2025, 1, 1))
