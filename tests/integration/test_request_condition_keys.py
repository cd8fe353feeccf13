"""Condition keys whose values come from the request's own parameters reach the policies.

A policy condition on a key the service does not supply sees a missing key, so a ``Deny`` with a
positive operator never applies: the call is allowed where AWS refuses it. AWS (conditions-kms):
such a condition "works even when the parameter doesn't appear in the request, such as when you
use the parameter's default value". The authorization table (tests/support/authz_cases.py) has
the rows for ScheduleKeyDeletion, ReEncrypt and GenerateDataKeyPair; the import operations and the
IAM admin operations, which that table does not run, are here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import botocore.exceptions

from tests.support.aws import aws_call, error_code, expect_error
from tests.support.cluster import ACCOUNT_ID, NodeFactory
from tests.support.import_material import wrap_for_import
from tests.support.raw import signed_post


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
                                                   *statements]}  # fmt: skip


async def test_import_condition_keys_are_the_request_s_parameters(nodes: NodeFactory) -> None:
    """conditions-kms: kms:WrappingAlgorithm / kms:WrappingKeySpec (GetParametersForImport) and
    kms:ExpirationModel (ImportKeyMaterial; KEY_MATERIAL_EXPIRES when the parameter is absent)."""
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    bob = node.client(await nodes.identity(node, user="bob", policy=_policy(
        {"Effect": "Deny", "Action": "kms:GetParametersForImport", "Resource": "*",
         "Condition": {"StringEquals": {"kms:WrappingAlgorithm": "RSAES_OAEP_SHA_1"}}},
        {"Effect": "Deny", "Action": "kms:GetParametersForImport", "Resource": "*",
         "Condition": {"StringEquals": {"kms:WrappingKeySpec": "RSA_2048"}}},
        {"Effect": "Deny", "Action": "kms:ImportKeyMaterial", "Resource": "*",
         "Condition": {"StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_EXPIRES"}}},
    )))  # fmt: skip
    key_id = (await aws_call(admin.create_key, Origin="EXTERNAL"))["KeyMetadata"]["KeyId"]

    def parameters(kms: Any, algorithm: str, spec: str) -> Any:
        return kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec)

    for algorithm, spec in (("RSAES_OAEP_SHA_1", "RSA_3072"), ("RSAES_OAEP_SHA_256", "RSA_2048")):
        err = await expect_error(parameters, kms=bob, algorithm=algorithm, spec=spec)
        assert error_code(err) == "AccessDeniedException", (algorithm, spec)
    params = await aws_call(parameters, kms=bob, algorithm="RSAES_OAEP_SHA_256", spec="RSA_3072")

    encrypted = wrap_for_import(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32))
    request = {"KeyId": key_id, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": encrypted}
    valid_to = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    for expiring in ({}, {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": valid_to}):
        # the default model counts as the parameter (ValidTo is then required: refused first by the policy)
        err = await expect_error(bob.import_key_material, **request, **expiring)
        assert error_code(err) == "AccessDeniedException", expiring
    await aws_call(bob.import_key_material, **request, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")


async def test_import_valid_to_is_compared_in_seconds_since_the_epoch(nodes: NodeFactory) -> None:
    """conditions-kms-valid-to: AWS's example allows ImportKeyMaterial only up to a date, with
    ``NumericLessThanEquals`` on ``kms:ValidTo`` in seconds since the epoch."""
    node = await nodes.start()
    admin = node.client(await nodes.identity(node))
    limit = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    carol = node.client(await nodes.identity(node, user="carol", policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:GetParametersForImport", "kms:DescribeKey"], "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:ImportKeyMaterial", "Resource": "*",
         "Condition": {"NumericLessThanEquals": {"kms:ValidTo": str(int(limit.timestamp()))}}},
    ]}))  # fmt: skip
    key_id = (await aws_call(admin.create_key, Origin="EXTERNAL"))["KeyMetadata"]["KeyId"]

    async def attempt(valid_to: dt.datetime) -> str:
        params = await aws_call(carol.get_parameters_for_import, KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                WrappingKeySpec="RSA_2048")  # fmt: skip
        try:
            await aws_call(carol.import_key_material, KeyId=key_id, ImportToken=params["ImportToken"],
                           EncryptedKeyMaterial=wrap_for_import(params["PublicKey"], "RSAES_OAEP_SHA_256", material),
                           ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)  # fmt: skip
        except botocore.exceptions.ClientError as exc:
            return error_code(exc)
        return "OK"

    material = os.urandom(32)
    assert await attempt(limit + dt.timedelta(days=1)) == "AccessDeniedException"
    assert await attempt(limit - dt.timedelta(days=1)) == "OK"


async def test_iam_admin_policies_see_the_request_s_source_address(nodes: NodeFactory) -> None:
    """IAM evaluates the global condition keys for its own actions too: a Deny on ``aws:SourceIp``
    (the AWS "Denies access to AWS based on the source IP" example, negated here to match loopback)
    refuses the admin call; without the caller's address the Deny never applied."""
    node = await nodes.start()
    dave = await nodes.identity(node, user="dave", policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:*", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
    ]})  # fmt: skip
    erin = await nodes.identity(node, user="erin", policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:*", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
    ]})  # fmt: skip
    for who, expected in ((dave, "AccessDeniedException"), (erin, None)):
        params = json.dumps({"UserName": f"made-by-{who.arn.rsplit('/', 1)[1]}"}).encode()
        status, body, _ = await signed_post(node.endpoint, node.region, who, "RegionKmsIam.CreateUser", params)
        assert body.get("__type") == expected, (who.arn, status, body)
    assert erin.arn.startswith(f"arn:aws:iam::{ACCOUNT_ID}:")
