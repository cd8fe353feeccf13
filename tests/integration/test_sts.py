"""STS GetCallerIdentity on the KMS endpoint (issue 18 item 2): boto3, the AWS CLI and raw requests.

Signed for the service ``sts`` with the same access keys; answered in STS's XML (or its JSON
forms) with STS's error names for bad credentials, and audited like every call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest

from kmsclient.sigv4 import Credentials, sign_headers
from regiond.audit.query import EventFilter, find
from regiond.store.pool import create_pool
from tests.support.cluster import ACCOUNT_ID, Identity, Node, NodeFactory

NS = {"sts": "https://sts.amazonaws.com/doc/2011-06-15/"}
TAG = "{https://sts.amazonaws.com/doc/2011-06-15/}"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
QUERY = b"Action=GetCallerIdentity&Version=2011-06-15"


async def _error(fn: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(fn, **kwargs)
    return dict(info.value.response)


async def _post(node: Node, identity: Identity, body: bytes, headers: dict[str, str],
                *, service: str = "sts", secret: str | None = None) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    signed = sign_headers(
        credentials=Credentials(identity.access_key_id, secret or identity.secret_access_key), method="POST",
        url=node.endpoint + "/", headers=headers, body=body, region=node.region, service=service,
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    signed.pop("Host", None)
    async with aiohttp.ClientSession() as session, session.post(node.endpoint + "/", data=body, headers=signed) as r:
        return r.status, await r.read(), dict(r.headers)


def _xml_error(body: bytes) -> tuple[str, str]:
    root = ET.fromstring(body)
    assert root.tag == TAG + "ErrorResponse"
    code = root.findtext("sts:Error/sts:Code", namespaces=NS) or ""
    return code, root.findtext("sts:Error/sts:Type", namespaces=NS) or ""


async def test_boto3_sts_answers_who_signed_with_sts_errors_for_bad_credentials(nodes: NodeFactory) -> None:
    node = await nodes.start()
    user = await nodes.identity(node, user="alice", policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "*", "Resource": "*"}]})
    root = await nodes.identity(node, user=None)
    sts = node.client(user, "sts")
    me = await asyncio.to_thread(sts.get_caller_identity)
    assert me["Account"] == ACCOUNT_ID and me["Arn"] == user.arn == f"arn:aws:iam::{ACCOUNT_ID}:user/alice"
    assert me["UserId"].startswith("AIDA") and len(me["UserId"]) == 21
    assert me["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "text/xml"
    # a user denied everything still learns who it is (AWS: no permission needed)
    them = await asyncio.to_thread(node.client(root, "sts").get_caller_identity)
    assert them == {**them, "Account": ACCOUNT_ID, "Arn": f"arn:aws:iam::{ACCOUNT_ID}:root", "UserId": ACCOUNT_ID}

    wrong_secret = node.client(Identity(user.arn, user.access_key_id, "x" * 40), "sts")
    bad = await _error(wrong_secret.get_caller_identity)
    assert bad["Error"]["Code"] == "SignatureDoesNotMatch" and bad["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = node.client(Identity(user.arn, "AKIA" + "Z" * 16, "x" * 40), "sts")
    nobody = await _error(unknown.get_caller_identity)
    assert nobody["Error"]["Code"] == "InvalidClientTokenId" and nobody["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert nobody["Error"]["Message"] == "The security token included in the request is invalid."

    # every call is audited: the successful one with its identity, as CloudTrail records it
    pool = await create_pool(node.database_url, max_size=2)
    try:
        rows = await find(pool, EventFilter(event_name="GetCallerIdentity"))
    finally:
        await pool.close()
    events = [json.loads(r.record) for r in rows]
    assert {e["userIdentity"]["arn"] for e in events} == {user.arn, f"arn:aws:iam::{ACCOUNT_ID}:root"}
    assert all(e["eventSource"] == "sts.amazonaws.com" and e["readOnly"] is True for e in events)


async def test_query_xml_json_and_errors_on_the_wire(nodes: NodeFactory) -> None:
    node = await nodes.start()
    user = await nodes.identity(node)
    status, body, headers = await _post(node, user, QUERY, {"Content-Type": FORM})
    assert status == 200 and headers["Content-Type"] == "text/xml"
    root = ET.fromstring(body)
    assert root.tag == TAG + "GetCallerIdentityResponse"
    assert root.findtext("sts:GetCallerIdentityResult/sts:Arn", namespaces=NS) == user.arn
    assert root.findtext("sts:ResponseMetadata/sts:RequestId", namespaces=NS) == headers["x-amzn-RequestId"]

    status, body, headers = await _post(node, user, QUERY, {"Content-Type": FORM, "Accept": "application/json"})
    document = json.loads(body)["GetCallerIdentityResponse"]
    assert status == 200 and document["GetCallerIdentityResult"]["Arn"] == user.arn
    assert document["ResponseMetadata"]["RequestId"] == headers["x-amzn-RequestId"]

    target = {"Content-Type": "application/x-amz-json-1.0",
              "X-Amz-Target": "AWSSecurityTokenServiceV20110615.GetCallerIdentity"}  # fmt: skip
    status, body, _ = await _post(node, user, b"{}", target)
    assert status == 200 and json.loads(body)["Account"] == ACCOUNT_ID

    status, body, headers = await _post(node, user, QUERY, target, secret="y" * 40)
    assert status == 403 and headers["x-amzn-query-error"] == "SignatureDoesNotMatch;Sender"
    assert json.loads(body)["__type"] == "com.amazonaws.sts#SignatureDoesNotMatch"

    for form, code in ((b"Action=AssumeRole&Version=2011-06-15", "InvalidAction"),
                       (b"Action=GetCallerIdentity&Version=2099-01-01", "InvalidAction"),
                       (b"Version=2011-06-15", "MissingAction")):  # fmt: skip
        status, body, _ = await _post(node, user, form, {"Content-Type": FORM})
        assert (status, _xml_error(body)) == (400, (code, "Sender"))
    # signed for sts, it never reaches a KMS operation, whatever its target says
    status, body, _ = await _post(node, user, b"{}", {"Content-Type": "application/x-amz-json-1.1",
                                                      "X-Amz-Target": "TrentService.ListKeys"})  # fmt: skip
    assert (status, _xml_error(body)[0]) == (400, "InvalidAction")
    # unsigned: STS's MissingAuthenticationToken, in STS's format
    async with aiohttp.ClientSession() as session, session.post(
        node.endpoint + "/", data=QUERY, headers={"Content-Type": FORM}
    ) as resp:
        assert (resp.status, _xml_error(await resp.read())) == (403, ("MissingAuthenticationToken", "Sender"))


def _aws(node: Node, identity: Identity, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_ACCESS_KEY_ID": identity.access_key_id,
           "AWS_SECRET_ACCESS_KEY": identity.secret_access_key, "AWS_DEFAULT_REGION": node.region,
           "AWS_ENDPOINT_URL_STS": node.endpoint}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "awscli", "--output", "json", *args],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_aws_cli_get_caller_identity(nodes: NodeFactory, tmp_path: Path) -> None:
    node = await nodes.start()
    user = await nodes.identity(node)
    done = await asyncio.to_thread(_aws, node, user, tmp_path, "sts", "get-caller-identity")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"UserId": json.loads(done.stdout)["UserId"], "Account": ACCOUNT_ID,
                                       "Arn": user.arn}  # fmt: skip
    forged = Identity(user.arn, user.access_key_id, "z" * 40)
    failed = await asyncio.to_thread(_aws, node, forged, tmp_path, "sts", "get-caller-identity")
    assert failed.returncode != 0 and "SignatureDoesNotMatch" in failed.stderr
