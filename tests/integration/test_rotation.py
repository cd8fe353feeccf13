"""Key rotation over boto3: eras of ciphertexts, the automatic schedule, on-demand limits,
ListKeyRotations, AWS managed keys, and rotations interrupted between their steps (issue 5)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
import boto3
from botocore.config import Config

from regiond.app import POOL, ROTATION_SCHEDULER
from regiond.crypto import import_wrap, wrap
from regiond.domain import ciphertext
from regiond.protocol.routes import SERVICES
from regiond.service.rotation import ON_DEMAND_ROTATION_LIMIT, RotationService
from regiond.store import rotation as rotation_store
from regiond.store.pool import transaction
from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import Identity, Node, NodeFactory
from tests.support.raw import signed_post

DAY = dt.timedelta(days=1)


def _version(blob: bytes) -> int:
    header, _ = ciphertext.unpack(blob)
    return header.backing_version


def _rotation(node: Node) -> RotationService:
    service = node.app[SERVICES].rotation
    assert service is not None
    return service


async def _encrypt(kms: Any, key: str, text: bytes) -> bytes:
    return bytes(
        (await aws_call(kms.encrypt, KeyId=key, Plaintext=text, EncryptionContext={"era": text.decode()}))[
            "CiphertextBlob"
        ]
    )


async def _decrypts(kms: Any, blob: bytes, text: bytes) -> None:
    out = await aws_call(kms.decrypt, CiphertextBlob=blob, EncryptionContext={"era": text.decode()})
    assert out["Plaintext"] == text


async def test_ciphertexts_of_three_rotation_eras_all_decrypt_and_the_key_keeps_its_identity(
    nodes: NodeFactory,
) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    md = (await aws_call(kms.create_key, Description="rotating"))["KeyMetadata"]
    key_id = md["KeyId"]
    await aws_call(kms.create_alias, AliasName="alias/rotating", TargetKeyId=key_id)
    policy = (await aws_call(kms.get_key_policy, KeyId=key_id, PolicyName="default"))["Policy"]
    first = await _encrypt(kms, "alias/rotating", b"first")

    assert (await aws_call(kms.rotate_key_on_demand, KeyId=key_id))["KeyId"] == key_id
    second = await _encrypt(kms, "alias/rotating", b"second")

    await aws_call(kms.enable_key_rotation, KeyId=key_id, RotationPeriodInDays=90)
    due = (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["NextRotationDate"]
    rotated = await node.app[ROTATION_SCHEDULER].run_once(due + dt.timedelta(seconds=1))
    assert [(r.key_id, r.version, r.rotation_type.value) for r in rotated] == [(key_id, 3, "AUTOMATIC")]
    third = await _encrypt(kms, "alias/rotating", b"third")

    assert [_version(b) for b in (first, second, third)] == [1, 2, 3]
    for blob, text in ((first, b"first"), (second, b"second"), (third, b"third")):
        await _decrypts(kms, blob, text)
    reencrypted = (await aws_call(kms.re_encrypt, CiphertextBlob=first, SourceEncryptionContext={"era": "first"},
                               DestinationKeyId=key_id))["CiphertextBlob"]  # fmt: skip
    assert _version(reencrypted) == 3
    after = (await aws_call(kms.describe_key, KeyId="alias/rotating"))["KeyMetadata"]
    assert (after["KeyId"], after["Arn"], after["CreationDate"], after["KeyState"]) == (
        key_id, md["Arn"], md["CreationDate"], "Enabled",
    )  # fmt: skip
    assert (await aws_call(kms.get_key_policy, KeyId=key_id, PolicyName="default"))["Policy"] == policy


async def test_automatic_rotation_fires_when_the_next_rotation_date_passes_and_not_before(nodes: NodeFactory) -> None:
    node = await nodes.start()
    ident = await nodes.identity(node)
    kms = node.client(ident)
    scheduler = node.app[ROTATION_SCHEDULER]
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status and "RotationPeriodInDays" not in status
    for bad in (89, 2561):  # boto3 checks the range itself, so these go out by hand
        body = json.dumps({"KeyId": key_id, "RotationPeriodInDays": bad}).encode()
        status_code, payload, _ = await signed_post(
            node.endpoint, node.region, ident, "TrentService.EnableKeyRotation", body
        )
        assert (status_code, payload["__type"]) == (400, "ValidationException")

    before = node.clock.now()
    await aws_call(kms.enable_key_rotation, KeyId=key_id)
    status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"], status["KeyId"]) == (True, 365, key_id)
    due = status["NextRotationDate"]
    assert before + 365 * DAY <= due <= node.clock.now() + 365 * DAY
    assert await scheduler.run_once(due - dt.timedelta(minutes=1)) == []

    # A shorter period counts from the same anchor (the enable date), not from now.
    await aws_call(kms.enable_key_rotation, KeyId=key_id, RotationPeriodInDays=180)
    status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
    assert status["RotationPeriodInDays"] == 180
    assert status["NextRotationDate"] == due - 185 * DAY
    due = status["NextRotationDate"]
    assert await scheduler.run_once(due - dt.timedelta(seconds=1)) == []
    rotated_at = due + dt.timedelta(seconds=1)
    assert [r.version for r in await scheduler.run_once(rotated_at)] == [2]
    assert await scheduler.run_once(rotated_at) == []  # done: the schedule moved on
    status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
    assert status["NextRotationDate"] == rotated_at + 180 * DAY

    # A disabled key is not rotated; once enabled again, a passed date makes it due at once.
    await aws_call(kms.disable_key, KeyId=key_id)
    later = rotated_at + 200 * DAY
    assert await scheduler.run_once(later) == []
    assert (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["KeyRotationEnabled"] is True
    await aws_call(kms.enable_key, KeyId=key_id)
    assert [r.version for r in await scheduler.run_once(later)] == [3]

    await aws_call(kms.disable_key_rotation, KeyId=key_id)
    status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
    assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status
    assert await scheduler.run_once(later + 3650 * DAY) == []

    # Pending deletion reads as disabled and is never rotated; cancelling restores the status.
    await aws_call(kms.enable_key_rotation, KeyId=key_id)
    await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
    assert (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["KeyRotationEnabled"] is False
    assert await scheduler.run_once(later + 3650 * DAY) == []
    err = await expect_error(kms.enable_key_rotation, KeyId=key_id)
    assert error_code(err) == "KMSInvalidStateException"
    await aws_call(kms.cancel_key_deletion, KeyId=key_id)
    assert (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["KeyRotationEnabled"] is True
    err = await expect_error(kms.enable_key_rotation, KeyId=key_id)  # cancelled deletion leaves it Disabled
    assert error_code(err) == "DisabledException"


async def test_on_demand_rotation_stops_at_the_limit_and_conflicts_with_an_imminent_automatic_one(
    nodes: NodeFactory,
) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.enable_key_rotation, KeyId=key_id)
    before = (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["NextRotationDate"]
    for _ in range(ON_DEMAND_ROTATION_LIMIT):
        await aws_call(kms.rotate_key_on_demand, KeyId=key_id)
    err = await expect_error(kms.rotate_key_on_demand, KeyId=key_id)
    assert error_code(err) == "LimitExceededException"
    assert str(ON_DEMAND_ROTATION_LIMIT) in err.response["Error"]["Message"]
    # "On-demand rotations do not change existing automatic rotation schedules."
    assert (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["NextRotationDate"] == before
    blob = await _encrypt(kms, key_id, b"last")
    assert _version(blob) == ON_DEMAND_ROTATION_LIMIT + 1

    # An automatic rotation scheduled within the next 20 minutes: ConflictException (AWS's words).
    other = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    await aws_call(kms.enable_key_rotation, KeyId=other)
    con = await asyncpg.connect(node.database_url)
    try:
        await con.execute(
            "UPDATE key_rotation SET next_rotation_date = $2 WHERE key_id = $1",
            other, node.clock.now() + dt.timedelta(minutes=10),
        )  # fmt: skip
    finally:
        await con.close()
    assert error_code(await expect_error(kms.rotate_key_on_demand, KeyId=other)) == "ConflictException"

    # Refusals: a disabled key, an alias (key id or ARN only), an AWS managed key.
    await aws_call(kms.disable_key, KeyId=other)
    assert error_code(await expect_error(kms.rotate_key_on_demand, KeyId=other)) == "DisabledException"
    await aws_call(kms.create_alias, AliasName="alias/not-here", TargetKeyId=key_id)
    assert error_code(await expect_error(kms.rotate_key_on_demand, KeyId="alias/not-here")) in (
        "NotFoundException", "InvalidArnException",
    )  # fmt: skip
    aws_key = (await aws_call(kms.describe_key, KeyId="alias/aws/ebs"))["KeyMetadata"]["KeyId"]
    assert error_code(await expect_error(kms.rotate_key_on_demand, KeyId=aws_key)) == "AccessDeniedException"


async def test_list_key_rotations_shows_each_rotation_and_pages(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    assert (await aws_call(kms.list_key_rotations, KeyId=key_id))["Rotations"] == []
    everything = await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    [first] = everything["Rotations"]
    assert (first["KeyId"], first["KeyMaterialState"]) == (key_id, "CURRENT")
    assert "RotationDate" not in first and "RotationType" not in first and "ImportState" not in first

    await aws_call(kms.rotate_key_on_demand, KeyId=key_id)
    await aws_call(kms.enable_key_rotation, KeyId=key_id, RotationPeriodInDays=90)
    due = (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["NextRotationDate"]
    automatic_at = due + dt.timedelta(seconds=5)
    await node.app[ROTATION_SCHEDULER].run_once(automatic_at)

    rotations = (await aws_call(kms.list_key_rotations, KeyId=key_id))["Rotations"]
    assert [(r["RotationType"], r["KeyMaterialState"]) for r in rotations] == [
        ("ON_DEMAND", "NON_CURRENT"), ("AUTOMATIC", "CURRENT"),
    ]  # fmt: skip
    assert abs((rotations[0]["RotationDate"] - node.clock.now()).total_seconds()) < 60
    assert rotations[1]["RotationDate"] == automatic_at
    ids = [first["KeyMaterialId"], *(r["KeyMaterialId"] for r in rotations)]
    assert len(set(ids)) == 3 and all(len(i) == 64 for i in ids)
    everything = await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    assert [r["KeyMaterialId"] for r in everything["Rotations"]] == ids
    assert [r["KeyMaterialState"] for r in everything["Rotations"]] == ["NON_CURRENT", "NON_CURRENT", "CURRENT"]

    page = await aws_call(kms.list_key_rotations, KeyId=key_id, Limit=1)
    assert (page["Truncated"], [r["RotationType"] for r in page["Rotations"]]) == (True, ["ON_DEMAND"])
    rest = await aws_call(kms.list_key_rotations, KeyId=key_id, Limit=1, Marker=page["NextMarker"])
    assert (rest["Truncated"], [r["RotationType"] for r in rest["Rotations"]]) == (False, ["AUTOMATIC"])
    assert "NextMarker" not in rest
    assert (
        error_code(await expect_error(kms.list_key_rotations, KeyId=key_id, Marker="not-a-marker"))
        == "InvalidMarkerException"
    )


async def test_aws_managed_keys_rotate_every_year_from_creation_and_cannot_be_changed(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    md = (await aws_call(kms.describe_key, KeyId="alias/aws/s3"))["KeyMetadata"]
    status = await aws_call(kms.get_key_rotation_status, KeyId=md["KeyId"])
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 365)
    assert status["NextRotationDate"] == md["CreationDate"] + 365 * DAY
    for call in (kms.enable_key_rotation, kms.disable_key_rotation):
        assert error_code(await expect_error(call, KeyId=md["KeyId"])) == "AccessDeniedException"
    scheduler = node.app[ROTATION_SCHEDULER]
    assert await scheduler.run_once(md["CreationDate"] + 364 * DAY) == []
    rotated = await scheduler.run_once(md["CreationDate"] + 365 * DAY + dt.timedelta(seconds=1))
    assert [(r.key_id, r.rotation_type.value) for r in rotated] == [(md["KeyId"], "AUTOMATIC")]
    rotations = (await aws_call(kms.list_key_rotations, KeyId=md["KeyId"]))["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["AUTOMATIC"]


def _without_retries(node: Node, ident: Identity) -> Any:
    """A client that sends each call once (the default retries a 500 and would hide the fault)."""
    return boto3.client(
        "kms", endpoint_url=node.endpoint, region_name=node.region, aws_access_key_id=ident.access_key_id,
        aws_secret_access_key=ident.secret_access_key, config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip


async def test_rotation_interrupted_between_its_steps_leaves_the_key_usable(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = _without_retries(node, await nodes.identity(node))
    rotation = _rotation(node)
    scheduler = node.app[ROTATION_SCHEDULER]
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    blobs = [await _encrypt(kms, key_id, b"era1")]

    def crash_at(step: str) -> Any:
        def checkpoint(name: str) -> None:
            if name == step:
                raise RuntimeError(f"injected crash at {name}")

        return checkpoint

    expected_version = 1
    for step in ("on_demand_accepted", "version_inserted", "current_flipped"):
        rotation.checkpoint = crash_at(step)
        err = await expect_error(kms.rotate_key_on_demand, KeyId=key_id)
        assert error_code(err) == "KMSInternalException"
        # The request was accepted but not performed: the old version is current and complete.
        status = await aws_call(kms.get_key_rotation_status, KeyId=key_id)
        assert "OnDemandRotationStartDate" in status
        assert error_code(await expect_error(kms.rotate_key_on_demand, KeyId=key_id)) == "ConflictException"
        materials = await aws_call(kms.list_key_rotations, KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
        assert len(materials["Rotations"]) == expected_version  # no half-added version
        blob = await _encrypt(kms, key_id, f"era{expected_version}".encode())
        assert _version(blob) == expected_version
        for i, old in enumerate(blobs, start=1):
            await _decrypts(kms, old, f"era{i}".encode())
        # The scheduler finishes the accepted rotation (the fault hits it too while it is set).
        if step != "on_demand_accepted":
            assert await scheduler.run_once(node.clock.now()) == []
            assert _version(await _encrypt(kms, key_id, b"x")) == expected_version
        rotation.checkpoint = lambda _name: None
        finished = await scheduler.run_once(node.clock.now())
        assert [(r.version, r.rotation_type.value) for r in finished] == [(expected_version + 1, "ON_DEMAND")]
        expected_version += 1
        assert "OnDemandRotationStartDate" not in await aws_call(kms.get_key_rotation_status, KeyId=key_id)
        blobs.append(await _encrypt(kms, key_id, f"era{expected_version}".encode()))
        assert _version(blobs[-1]) == expected_version
    for i, old in enumerate(blobs, start=1):
        await _decrypts(kms, old, f"era{i}".encode())
    rotations = (await aws_call(kms.list_key_rotations, KeyId=key_id))["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"] * 3

    # An automatic rotation that fails inside the scheduler is rolled back and retried next round.
    await aws_call(kms.enable_key_rotation, KeyId=key_id, RotationPeriodInDays=90)
    due = (await aws_call(kms.get_key_rotation_status, KeyId=key_id))["NextRotationDate"]
    rotation.checkpoint = crash_at("current_flipped")
    assert await scheduler.run_once(due) == []
    assert _version(await _encrypt(kms, key_id, b"x")) == expected_version
    rotation.checkpoint = lambda _name: None
    assert [r.version for r in await scheduler.run_once(due)] == [expected_version + 1]


async def test_adding_a_replicated_version_twice_keeps_one_and_makes_it_current(nodes: NodeFactory) -> None:
    """``store.rotation.add_backing_version`` with the primary's version number, as replication
    applies a multi-Region key's new material: a repeated apply is a no-op."""
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    old = await _encrypt(kms, key_id, b"before")
    material = wrap.new_backing_key()
    for _ in range(2):
        async with transaction(node.app[POOL]) as con:
            version = await rotation_store.add_backing_version(
                con, key_id, seal=lambda n: wrap.wrap(node.keyring, key_id, n, material),
                key_material_id=import_wrap.key_material_id(key_id, material), now=node.clock.now(),
                rotation_type=rotation_store.RotationType.AUTOMATIC, version=5,
            )  # fmt: skip
        assert version == 5
    blob = await _encrypt(kms, key_id, b"after")
    assert _version(blob) == 5
    for b, text in ((old, b"before"), (blob, b"after")):
        await _decrypts(kms, b, text)
    rotations = (await aws_call(kms.list_key_rotations, KeyId=key_id))["Rotations"]
    assert [r["KeyMaterialId"] for r in rotations] == [import_wrap.key_material_id(key_id, material)]
