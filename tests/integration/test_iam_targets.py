"""Which principal an IAM admin call acts on (issue 13, finding 1: CreateAccessKey without a
UserName made a key for the account root).

AWS IAM: "If you do not specify a user name, IAM determines the user name implicitly based on
the access key ID signing the request" (CreateAccessKey, ListAccessKeys, UpdateAccessKey,
DeleteAccessKey); the inline-policy operations require UserName (``*UserPolicy``) or RoleName
(``*RolePolicy``), and each is authorized as its own action.
"""

from __future__ import annotations

import json
from typing import Any

from regiond.domain.principal import PrincipalKind, principal_arn
from regiond.service.iam import IamService
from regiond.store.pool import create_pool
from tests.support.cluster import ACCOUNT_ID, Identity, Node, NodeFactory
from tests.support.raw import signed_post

ROOT = principal_arn(ACCOUNT_ID, PrincipalKind.ROOT, "")


async def _iam(node: Node, who: Identity, operation: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, body, _ = await signed_post(
        node.endpoint, node.region, who, f"RegionKmsIam.{operation}", json.dumps(params).encode()
    )
    return status, body


async def _keys(node: Node, arn: str) -> list[tuple[str, str]]:
    pool = await create_pool(node.database_url, min_size=1, max_size=1)
    try:
        return await IamService(pool, node.keyring).list_access_keys(arn)
    finally:
        await pool.close()


async def test_create_access_key_without_user_name_is_for_the_calling_user(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)  # iam:* on *
    roots_before = await _keys(node, ROOT)
    status, body = await _iam(node, admin, "CreateAccessKey", {})
    assert status == 200, body
    assert body["AccessKey"]["UserName"] == "admin"
    assert await _keys(node, ROOT) == roots_before
    made = body["AccessKey"]["AccessKeyId"]
    assert made in {k for k, _ in await _keys(node, admin.arn)}
    status, body = await _iam(node, admin, "ListAccessKeys", {})
    assert {m["AccessKeyId"] for m in body["AccessKeyMetadata"]} == {admin.access_key_id, made}
    status, body = await _iam(node, admin, "UpdateAccessKey", {"AccessKeyId": made, "Status": "Inactive"})
    assert status == 200, body
    status, body = await _iam(node, admin, "DeleteAccessKey", {"AccessKeyId": made})
    assert status == 200, body
    assert made not in {k for k, _ in await _keys(node, admin.arn)}


async def test_unnamed_access_key_calls_of_a_user_never_reach_the_root_s_keys(nodes: NodeFactory) -> None:
    node = await nodes.start()
    root = await nodes.identity(node, user=None)
    admin = await nodes.identity(node)
    change = {"AccessKeyId": root.access_key_id, "Status": "Inactive"}
    _status, body = await _iam(node, admin, "UpdateAccessKey", change)
    assert body["__type"] == "NoSuchEntityException"
    _status, body = await _iam(node, admin, "DeleteAccessKey", {"AccessKeyId": root.access_key_id})
    assert body["__type"] == "NoSuchEntityException"
    assert await _keys(node, ROOT) == [(root.access_key_id, "Active")]


async def test_a_user_without_iam_permission_cannot_make_itself_a_key(nodes: NodeFactory) -> None:
    node = await nodes.start()
    alice = await nodes.identity(node, user="alice", policy={
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    })  # fmt: skip
    _status, body = await _iam(node, alice, "CreateAccessKey", {})
    assert body["__type"] == "AccessDeniedException"
    assert alice.arn in body["message"]
    assert len(await _keys(node, alice.arn)) == 1


async def test_root_without_user_name_manages_its_own_keys(nodes: NodeFactory) -> None:
    node = await nodes.start()
    root = await nodes.identity(node, user=None)
    status, body = await _iam(node, root, "CreateAccessKey", {})
    assert status == 200, body
    assert body["AccessKey"]["UserName"] == ""
    assert len(await _keys(node, ROOT)) == 2


async def test_inline_policy_operations_require_their_principal(nodes: NodeFactory) -> None:
    node = await nodes.start()
    admin = await nodes.identity(node)
    document = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    for operation in ("PutUserPolicy", "PutRolePolicy"):
        status, body = await _iam(node, admin, operation, {"PolicyName": "all", "PolicyDocument": document})
        assert status == 400 and body["__type"] == "ValidationException", (operation, body)
    # A RoleName does not stand in for the UserName of a *UserPolicy call, nor the reverse.
    status, body = await _iam(node, admin, "PutUserPolicy",
                              {"RoleName": "admin", "PolicyName": "all", "PolicyDocument": document})  # fmt: skip
    assert body["__type"] == "ValidationException"
    pool = await create_pool(node.database_url, min_size=1, max_size=1)
    try:
        assert await IamService(pool, node.keyring).identity_policies(ROOT) == {}
    finally:
        await pool.close()


async def test_role_policy_operations_are_authorized_as_role_policy_actions(nodes: NodeFactory) -> None:
    node = await nodes.start()
    await nodes.identity(node, user="app", role=True, policy={
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    })  # fmt: skip
    reader = await nodes.identity(node, user="reader", policy={
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iam:GetUserPolicy", "Resource": "*"}],
    })  # fmt: skip
    params = {"RoleName": "app", "PolicyName": "inline"}
    status, body = await _iam(node, reader, "GetRolePolicy", params)
    assert body["__type"] == "AccessDeniedException"
    assert "iam:GetRolePolicy" in body["message"]
    role_reader = await nodes.identity(node, user="role-reader", policy={
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iam:GetRolePolicy", "Resource": "*"}],
    })  # fmt: skip
    status, body = await _iam(node, role_reader, "GetRolePolicy", params)
    assert status == 200, body
    assert body["PolicyName"] == "inline"
