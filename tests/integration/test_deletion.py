"""Scheduled deletion and the sweeper: windows, cancel, refusal while pending, destruction (issue 3)."""

from __future__ import annotations

import asyncio
import datetime as dt

from regiond.app import SWEEPER
from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import NodeFactory


async def test_schedule_defaults_to_thirty_days_and_cancel_leaves_the_key_disabled(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    md = (await aws_call(kms.create_key))["KeyMetadata"]
    scheduled = await aws_call(kms.schedule_key_deletion, KeyId=md["Arn"])
    assert (scheduled["KeyId"], scheduled["KeyState"], scheduled["PendingWindowInDays"]) == (
        md["Arn"], "PendingDeletion", 30,
    )  # fmt: skip
    expected = node.clock.now() + dt.timedelta(days=30)
    assert abs((scheduled["DeletionDate"] - expected).total_seconds()) < 60
    described = (await aws_call(kms.describe_key, KeyId=md["KeyId"]))["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["DeletionDate"] == scheduled["DeletionDate"]
    err = await expect_error(kms.schedule_key_deletion, KeyId=md["KeyId"])
    assert error_code(err) == "KMSInvalidStateException"
    assert (await aws_call(kms.cancel_key_deletion, KeyId=md["KeyId"]))["KeyId"] == md["Arn"]
    described = (await aws_call(kms.describe_key, KeyId=md["KeyId"]))["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert "DeletionDate" not in described
    err = await expect_error(kms.cancel_key_deletion, KeyId=md["KeyId"])
    assert (error_code(err), err.response["Error"]["Message"]) == (
        "KMSInvalidStateException", f"{md['Arn']} is not pending deletion.",
    )  # fmt: skip


async def test_pending_window_outside_seven_to_thirty_days_is_refused(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
    for days in (6, 31):
        err = await expect_error(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=days)
        assert error_code(err) == "ValidationException"
    assert (await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7))["PendingWindowInDays"] == 7


async def test_key_pending_deletion_refuses_decrypt_and_the_sweeper_destroys_it(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    md = (await aws_call(kms.create_key))["KeyMetadata"]
    keep = (await aws_call(kms.create_key))["KeyMetadata"]
    await aws_call(kms.create_alias, AliasName="alias/doomed", TargetKeyId=md["KeyId"])
    blob = (await aws_call(kms.encrypt, KeyId=md["KeyId"], Plaintext=b"last words"))["CiphertextBlob"]
    await aws_call(kms.schedule_key_deletion, KeyId=md["KeyId"], PendingWindowInDays=7)
    err = await expect_error(kms.decrypt, CiphertextBlob=blob)
    assert (error_code(err), err.response["Error"]["Message"]) == (
        "KMSInvalidStateException", f"{md['Arn']} is pending deletion.",
    )  # fmt: skip
    sweeper = node.app[SWEEPER]
    assert await sweeper.run_once(node.clock.now() + dt.timedelta(days=6)) == []  # not due yet
    # the sweeper is handed a time past the deletion date (moving the node's clock a week would
    # also put SigV4 outside its 15-minute skew window for boto3)
    later = node.clock.now() + dt.timedelta(days=7, minutes=1)
    assert await sweeper.run_once(later) == [md["KeyId"]]
    err = await expect_error(kms.decrypt, CiphertextBlob=blob)
    assert error_code(err) == "AccessDeniedException"  # the blob's key no longer exists (AWS's wording)
    assert "does not exist" in err.response["Error"]["Message"]
    assert error_code(await expect_error(kms.describe_key, KeyId=md["KeyId"])) == "NotFoundException"
    assert error_code(await expect_error(kms.describe_key, KeyId="alias/doomed")) == "NotFoundException"
    assert [k["KeyId"] for k in (await aws_call(kms.list_keys))["Keys"]] == [keep["KeyId"]]
    assert await sweeper.run_once(later) == []


async def test_two_nodes_sweep_a_key_once(nodes: NodeFactory) -> None:
    a = await nodes.start()
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir)
    kms = a.client(await nodes.identity(a))
    ids = []
    for _ in range(3):
        key_id = (await aws_call(kms.create_key))["KeyMetadata"]["KeyId"]
        await aws_call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        ids.append(key_id)
    later = a.clock.now() + dt.timedelta(days=8)
    first, second = await asyncio.gather(a.app[SWEEPER].run_once(later), b.app[SWEEPER].run_once(later))
    assert sorted(first + second) == sorted(ids)
