"""Text a client sends, at every string slot of every operation, over real HTTP (issue 13, finding 7).

PostgreSQL's ``text`` and ``jsonb`` refuse U+0000, and a lone surrogate cannot be encoded as
UTF-8 at all, so either one used to reach the store and come back as an HTTP 500. The rule now
(docs/SECURITY.md, "Input validation"): every string member is checked at the protocol edge
against its model pattern, and a member without one refuses NUL and unpaired surrogates with
ValidationException; keys and values of an encryption context keep NUL (AWS takes any text
there, and a context is only hashed into the AAD and recorded as JSON bytes, never stored as
text), except in grant constraints, which are stored.

The tables are every slot of botocore's KMS model (``tests.support.model_strings``) and of the
IAM-style admin operations; each row is one signed request. A row fails on a 5xx, on a body
that is not an AWS error, or on an error other than the one expected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from regiond.protocol import iam_shapes, shapes
from tests.support import model_strings as ms
from tests.support.cluster import Identity, Node, NodeFactory
from tests.support.raw import signed_post

KMS_MODEL = shapes._load_model()
KMS_INPUTS = {name: op.get("input", {}).get("shape") for name, op in KMS_MODEL["operations"].items()}
KMS_SLOTS = list(ms.string_slots(KMS_MODEL, KMS_INPUTS))
IAM_MODEL = iam_shapes.model()
IAM_INPUTS = iam_shapes.input_shapes()
IAM_SLOTS = list(ms.string_slots(IAM_MODEL, IAM_INPUTS))

QUIET = {"sweeper_interval_s": "3600", "usage_flush_interval_s": "3600"}


def _body(value: dict[str, Any]) -> bytes:
    # ensure_ascii: a lone surrogate travels as the JSON escape \ud800 (it has no UTF-8 form).
    return json.dumps(value, ensure_ascii=True).encode()


async def _send(node: Node, ident: Identity, target: str, body: bytes) -> tuple[int, dict[str, Any]]:
    status, payload, _ = await signed_post(node.endpoint, node.region, ident, target, body)
    return status, payload


async def _table(
    nodes: NodeFactory,
    slots: list[ms.Slot],
    model: dict[str, Any],
    inputs: dict[str, str | None],
    prefix: str,
    bad: Callable[[ms.Slot, str], str | None],
    expect: Callable[[ms.Slot], tuple[str, ...]],
) -> None:
    """Send one request per slot with ``bad(slot, valid_text)`` there; collect every wrong answer."""
    node = await nodes.start(extra=QUIET)
    ident = await nodes.identity(node)
    _, created = await _send(node, ident, "TrentService.CreateKey", b"{}")
    overrides = {"KeyIdType": created["KeyMetadata"]["KeyId"]}
    wrong: list[str] = []
    sent = 0
    for slot in slots:
        text = bad(slot, ms.base_text(model, slot, overrides))
        if text is None:
            continue
        input_shape = inputs[slot.operation]
        assert input_shape is not None
        body = ms.request_with(model, input_shape, slot, text, overrides)
        status, payload = await _send(node, ident, f"{prefix}.{slot.operation}", _body(body))
        sent += 1
        codes = expect(slot)
        code = payload.get("__type") if isinstance(payload, dict) else None
        if status >= 500 or (status != 200 and code is None):
            wrong.append(f"{slot.id}: HTTP {status} {payload}")
        elif status == 200 and codes:
            wrong.append(f"{slot.id}: accepted, expected one of {codes}")
        elif codes and (status != 400 or code not in codes):
            wrong.append(f"{slot.id}: HTTP {status} {code}, expected one of {codes}")
        elif codes == ("ValidationException",) and f"'{slot.report}'" not in payload["message"]:
            wrong.append(f"{slot.id}: the message does not name '{slot.report}': {payload['message']}")
    assert sent > 0
    assert not wrong, f"{len(wrong)} of {sent} rows wrong:\n" + "\n".join(wrong)


def _nul(slot: ms.Slot, text: str) -> str:
    return ms.with_nul(text)


def _surrogate(slot: ms.Slot, text: str) -> str:
    return ms.with_lone_surrogate(text)


def _nul_expectation(slot: ms.Slot) -> tuple[str, ...]:
    if slot.in_encryption_context and "Constraints" not in slot.steps:
        return ()  # accepted text: any answer but a 5xx (the key may not take a context, say)
    return ("ValidationException",)


async def test_nul_in_any_kms_string_is_a_validation_error(nodes: NodeFactory) -> None:
    await _table(nodes, KMS_SLOTS, KMS_MODEL, KMS_INPUTS, "TrentService", _nul, _nul_expectation)


async def test_lone_surrogate_in_any_kms_string_is_refused(nodes: NodeFactory) -> None:
    # orjson refuses the escape while parsing; the shape check refuses it if a parser lets it by.
    expected = ("SerializationException", "ValidationException")
    await _table(nodes, KMS_SLOTS, KMS_MODEL, KMS_INPUTS, "TrentService", _surrogate, lambda _s: expected)


async def test_over_long_kms_string_is_a_validation_error(nodes: NodeFactory) -> None:
    await _table(
        nodes, KMS_SLOTS, KMS_MODEL, KMS_INPUTS, "TrentService",
        lambda slot, _text: ms.over_long(KMS_MODEL, slot), lambda _s: ("ValidationException",),
    )  # fmt: skip


async def test_nul_in_any_iam_string_is_a_validation_error(nodes: NodeFactory) -> None:
    expected = ("ValidationException",)
    await _table(nodes, IAM_SLOTS, IAM_MODEL, IAM_INPUTS, iam_shapes.TARGET_PREFIX, _nul, lambda _s: expected)


async def test_lone_surrogate_in_any_iam_string_is_refused(nodes: NodeFactory) -> None:
    expected = ("SerializationException", "ValidationException")
    await _table(nodes, IAM_SLOTS, IAM_MODEL, IAM_INPUTS, iam_shapes.TARGET_PREFIX, _surrogate, lambda _s: expected)


async def test_over_long_iam_string_is_a_validation_error(nodes: NodeFactory) -> None:
    await _table(
        nodes, IAM_SLOTS, IAM_MODEL, IAM_INPUTS, iam_shapes.TARGET_PREFIX,
        lambda slot, _text: ms.over_long(IAM_MODEL, slot), lambda _s: ("ValidationException",),
    )  # fmt: skip


@pytest.mark.parametrize(
    "context",
    [{"a\x00b": "v"}, {"k": "v\x00"}, {"\x00": "\x00"}],
    ids=["nul-in-key", "nul-in-value", "only-nul"],
)
async def test_nul_in_an_encryption_context_round_trips(nodes: NodeFactory, context: dict[str, str]) -> None:
    """AWS takes any text in a context; it is hashed into the AAD and audited as JSON bytes."""
    node = await nodes.start(extra=QUIET)
    ident = await nodes.identity(node)
    _, created = await _send(node, ident, "TrentService.CreateKey", b"{}")
    key_id = created["KeyMetadata"]["KeyId"]
    body = {"KeyId": key_id, "Plaintext": "cGxhaW4=", "EncryptionContext": context}
    status, enc = await _send(node, ident, "TrentService.Encrypt", _body(body))
    assert status == 200, enc
    blob = enc["CiphertextBlob"]
    decrypt = "TrentService.Decrypt"
    status, dec = await _send(node, ident, decrypt, _body({"CiphertextBlob": blob, "EncryptionContext": context}))
    assert status == 200 and dec["Plaintext"] == "cGxhaW4=", dec
    other = {k + "x": v for k, v in context.items()}
    status, dec = await _send(node, ident, decrypt, _body({"CiphertextBlob": blob, "EncryptionContext": other}))
    assert (status, dec["__type"]) == (400, "InvalidCiphertextException")


async def test_nul_inside_a_policy_document_escape_is_not_a_server_error(nodes: NodeFactory) -> None:
    """The PolicyType pattern admits the six characters of a JSON \\u0000 escape: the policy is
    stored as the text that was sent, so a NUL inside a Sid or a condition value is harmless."""
    node = await nodes.start(extra=QUIET)
    ident = await nodes.identity(node)
    _, created = await _send(node, ident, "TrentService.CreateKey", b"{}")
    key_id = created["KeyMetadata"]["KeyId"]
    root = ident.arn.rsplit(":", 1)[0] + ":root"
    policy = json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "a\x00", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEquals": {"kms:EncryptionContext:k\x00": "v\x00"}}},
        ],
    })  # fmt: skip
    assert "\\u0000" in policy
    status, payload = await _send(node, ident, "TrentService.PutKeyPolicy", _body({"KeyId": key_id, "Policy": policy}))
    assert status == 200, payload
    status, payload = await _send(node, ident, "TrentService.GetKeyPolicy", _body({"KeyId": key_id}))
    assert status == 200 and payload["Policy"] == policy, payload
    statement = {"Sid": "x\x00", "Effect": "Allow", "Action": "kms:*", "Resource": "*"}
    doc = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    status, payload = await _send(
        node, ident, f"{iam_shapes.TARGET_PREFIX}.PutUserPolicy",
        _body({"UserName": "admin", "PolicyName": "p", "PolicyDocument": doc}),
    )  # fmt: skip
    assert status < 500, payload


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("TrentService.CreateKey", {"Description": "a\x00b"}),
        ("TrentService.UpdateKeyDescription", {"KeyId": "{key}", "Description": "\x00"}),
        ("TrentService.DescribeKey", {"KeyId": "alias/a\x00"}),
        ("TrentService.Encrypt", {"KeyId": "arn:aws:kms:us-east-1:111122223333:alias/a\x00", "Plaintext": "cA=="}),
        ("TrentService.CreateAlias", {"AliasName": "alias/a\x00", "TargetKeyId": "{key}"}),
        ("TrentService.CreateGrant", {"KeyId": "{key}", "GranteePrincipal": "{arn}", "Operations": ["Encrypt"],
                                      "Name": "n\x00"}),
        ("TrentService.CreateGrant", {"KeyId": "{key}", "GranteePrincipal": "{arn}\x00", "Operations": ["Encrypt"]}),
        ("TrentService.CreateGrant", {"KeyId": "{key}", "GranteePrincipal": "{arn}", "Operations": ["Encrypt"],
                                      "Constraints": {"EncryptionContextSubset": {"a\x00": "b"}}}),
        ("TrentService.TagResource", {"KeyId": "{key}", "Tags": [{"TagKey": "k\x00", "TagValue": "v"}]}),
        ("TrentService.UntagResource", {"KeyId": "{key}", "TagKeys": ["k\x00"]}),
        ("RegionKmsIam.CreateUser", {"UserName": "bob\x00"}),
        ("RegionKmsIam.UpdateAccessKey", {"AccessKeyId": "AKIAAAAAAAAAAAAAAAA\x00", "Status": "Inactive"}),
        ("RegionKmsIam.DeleteAccessKey", {"AccessKeyId": "AKIAAAAAAAAAAAAAAAA\x00"}),
        ("RegionKmsIam.PutUserPolicy", {"UserName": "admin", "PolicyName": "p\x00", "PolicyDocument": "{}"}),
        ("RegionKmsIam.DeleteUserPolicy", {"UserName": "admin", "PolicyName": "p\x00"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
async def test_reported_nul_reproductions_are_validation_errors(
    nodes: NodeFactory, target: str, body: dict[str, Any]
) -> None:
    """The places issue 13 named (store/keys.py, aliases.py, grants.py, iam.py): each answered HTTP 500."""
    node = await nodes.start(extra=QUIET)
    ident = await nodes.identity(node)
    _, created = await _send(node, ident, "TrentService.CreateKey", b"{}")
    text = json.dumps(body).replace("{key}", created["KeyMetadata"]["KeyId"]).replace("{arn}", ident.arn)
    status, payload = await _send(node, ident, target, text.encode())
    assert (status, payload.get("__type")) == (400, "ValidationException"), payload
    assert "\x00" not in payload["message"]
