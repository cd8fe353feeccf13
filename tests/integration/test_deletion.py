"""Scheduled deletion and the sweeper: windows, cancel, refusal while pending, destruction (issue 3)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import botocore.exceptions
import pytest

from regiond.app import SWEEPER
from tests.support.cluster import NodeFactory


def _code(exc: BaseException) -> str:
    assert isinstance(exc, botocore.exceptions.ClientError)
    return str(exc.response["Error"]["Code"])


async def _call(fn: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, **kwargs)


async def _error(fn: Any, **kwargs: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return info.value


async def test_schedule_defaults_to_thirty_days_and_cancel_leaves_the_key_disabled(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    md = (await _call(kms.create_key))["KeyMetadata"]
    scheduled = await _call(kms.schedule_key_deletion, KeyId=md["Arn"])
    assert (scheduled["KeyId"], scheduled["KeyState"], scheduled["PendingWindowInDays"]) == (
        md["Arn"], "PendingDeletion", 30,
    )  # fmt: skip
    expected = node.clock.now() + dt.timedelta(days=30)
    assert abs((scheduled["DeletionDate"] - expected).total_seconds()) < 60
    described = (await _call(kms.describe_key, KeyId=md["KeyId"]))["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["DeletionDate"] == scheduled["DeletionDate"]
    err = await _error(kms.schedule_key_deletion, KeyId=md["KeyId"])
    assert _code(err) == "KMSInvalidStateException"
    assert (await _call(kms.cancel_key_deletion, KeyId=md["KeyId"]))["KeyId"] == md["Arn"]
    described = (await _call(kms.describe_key, KeyId=md["KeyId"]))["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert "DeletionDate" not in described
    err = await _error(kms.cancel_key_deletion, KeyId=md["KeyId"])
    assert (_code(err), err.response["Error"]["Message"]) == (
        "KMSInvalidStateException", f"{md['Arn']} is not pending deletion.",
    )  # fmt: skip


async def test_pending_window_outside_seven_to_thirty_days_is_refused(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    key_id = (await _call(kms.create_key))["KeyMetadata"]["KeyId"]
    for days in (6, 31):
        err = await _error(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=days)
        assert _code(err) == "ValidationException"
    assert (await _call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7))["PendingWindowInDays"] == 7


async def test_key_pending_deletion_refuses_decrypt_and_the_sweeper_destroys_it(nodes: NodeFactory) -> None:
    node = await nodes.start()
    kms = node.client(await nodes.identity(node))
    md = (await _call(kms.create_key))["KeyMetadata"]
    keep = (await _call(kms.create_key))["KeyMetadata"]
    await _call(kms.create_alias, AliasName="alias/doomed", TargetKeyId=md["KeyId"])
    blob = (await _call(kms.encrypt, KeyId=md["KeyId"], Plaintext=b"last words"))["CiphertextBlob"]
    await _call(kms.schedule_key_deletion, KeyId=md["KeyId"], PendingWindowInDays=7)
    err = await _error(kms.decrypt, CiphertextBlob=blob)
    assert (_code(err), err.response["Error"]["Message"]) == (
        "KMSInvalidStateException", f"{md['Arn']} is pending deletion.",
    )  # fmt: skip
    sweeper = node.app[SWEEPER]
    assert await sweeper.run_once(node.clock.now() + dt.timedelta(days=6)) == []  # not due yet
    # the sweeper is handed a time past the deletion date (moving the node's clock a week would
    # also put SigV4 outside its 15-minute skew window for boto3)
    later = node.clock.now() + dt.timedelta(days=7, minutes=1)
    assert await sweeper.run_once(later) == [md["KeyId"]]
    err = await _error(kms.decrypt, CiphertextBlob=blob)
    assert _code(err) == "InvalidCiphertextException"
    assert _code(await _error(kms.describe_key, KeyId=md["KeyId"])) == "NotFoundException"
    assert _code(await _error(kms.describe_key, KeyId="alias/doomed")) == "NotFoundException"
    assert [k["KeyId"] for k in (await _call(kms.list_keys))["Keys"]] == [keep["KeyId"]]
    assert await sweeper.run_once(later) == []


async def test_two_nodes_sweep_a_key_once(nodes: NodeFactory) -> None:
    a = await nodes.start()
    b = await nodes.start(database_url=a.database_url, state_dir=a.state_dir)
    kms = a.client(await nodes.identity(a))
    ids = []
    for _ in range(3):
        key_id = (await _call(kms.create_key))["KeyMetadata"]["KeyId"]
        await _call(kms.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=7)
        ids.append(key_id)
    later = a.clock.now() + dt.timedelta(days=8)
    first, second = await asyncio.gather(a.app[SWEEPER].run_once(later), b.app[SWEEPER].run_once(later))
    assert sorted(first + second) == sorted(ids)
