"""The text rule at the protocol edge, over every string slot of every operation (issue 13, finding 7).

``shapes`` checks each string member against its model pattern and, for text that reaches
PostgreSQL, refuses U+0000 and unpaired surrogates; ``iam_shapes`` does the same for the
IAM-style admin operations with IAM's own shapes. tests/integration/test_text_inputs.py sends
the same tables over HTTP.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from regiond.errors import ValidationException
from regiond.protocol import iam_shapes, shapes
from regiond.protocol.ops import IAM_OPERATIONS
from tests.support import model_strings as ms

KMS_MODEL = shapes._load_model()
KMS_INPUTS = {name: op.get("input", {}).get("shape") for name, op in KMS_MODEL["operations"].items()}
IAM_MODEL = iam_shapes.model()
IAM_INPUTS = iam_shapes.input_shapes()

ROWS = [(KMS_MODEL, KMS_INPUTS, shapes.validate_request, s) for s in ms.string_slots(KMS_MODEL, KMS_INPUTS)] + [
    (IAM_MODEL, IAM_INPUTS, iam_shapes.validate_request, s) for s in ms.string_slots(IAM_MODEL, IAM_INPUTS)
]
IDS = [row[3].id for row in ROWS]
STORABLE = "Member must satisfy regular expression pattern: [^\\u0000\\uD800-\\uDFFF]*"


def _refusal(validate: Any, operation: str, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationException) as info:
        validate(operation, body)
    message = info.value.message
    assert "\x00" not in message and not any("\ud800" <= c <= "\udfff" for c in message), message
    orjson.dumps({"message": message})  # renders: no surrogate reaches the wire
    return message


def _hashed_only(slot: ms.Slot) -> bool:
    return slot.in_encryption_context and "Constraints" not in slot.steps


@pytest.mark.parametrize(("model", "inputs", "validate", "slot"), ROWS, ids=IDS)
def test_every_base_request_validates(model: Any, inputs: Any, validate: Any, slot: ms.Slot) -> None:
    validate(slot.operation, ms.request_with(model, inputs[slot.operation], slot, ms.base_text(model, slot)))


@pytest.mark.parametrize(("model", "inputs", "validate", "slot"), ROWS, ids=IDS)
def test_nul_is_refused_where_text_is_stored(model: Any, inputs: Any, validate: Any, slot: ms.Slot) -> None:
    body = ms.request_with(model, inputs[slot.operation], slot, ms.with_nul(ms.base_text(model, slot)))
    if _hashed_only(slot):
        validate(slot.operation, body)  # AWS takes any text in a context; it is only hashed
        return
    assert f"'{slot.report}'" in _refusal(validate, slot.operation, body)


@pytest.mark.parametrize(("model", "inputs", "validate", "slot"), ROWS, ids=IDS)
def test_lone_surrogate_is_refused_everywhere(model: Any, inputs: Any, validate: Any, slot: ms.Slot) -> None:
    body = ms.request_with(model, inputs[slot.operation], slot, ms.with_lone_surrogate(ms.base_text(model, slot)))
    assert f"'{slot.report}'" in _refusal(validate, slot.operation, body)


@pytest.mark.parametrize(("model", "inputs", "validate", "slot"), ROWS, ids=IDS)
def test_over_long_text_is_refused(model: Any, inputs: Any, validate: Any, slot: ms.Slot) -> None:
    text = ms.over_long(model, slot)
    if text is None:
        pytest.skip("the shape has no maximum length")
    body = ms.request_with(model, inputs[slot.operation], slot, text)
    assert "less than or equal to" in _refusal(validate, slot.operation, body)


def test_the_tables_cover_every_operation_with_text() -> None:
    kms_ops = {s.operation for s in ms.string_slots(KMS_MODEL, KMS_INPUTS)}
    assert {"CreateKey", "CreateAlias", "CreateGrant", "TagResource", "Encrypt", "PutKeyPolicy"} <= kms_ops
    assert set(IAM_INPUTS) == set(IAM_OPERATIONS), "every admin operation has an input shape"


def test_every_model_pattern_is_applied() -> None:
    """No pattern of the KMS or IAM shapes in use is skipped as unsafe: each one is run."""
    for model in (KMS_MODEL, IAM_MODEL):
        for name, shape in model["shapes"].items():
            if "pattern" in shape:
                assert shapes._safe_pattern(shape["pattern"]) is not None, name


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        pytest.param(
            "CreateKey", {"Description": "a\x00b"},
            f"1 validation error detected: Value at 'description' failed to satisfy constraint: {STORABLE}",
            id="description",
        ),
        pytest.param(
            "CreateAlias", {"AliasName": "alias/a\x00", "TargetKeyId": "k"},
            "1 validation error detected: Value at 'aliasName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
            id="model-pattern-wins-and-nul-not-echoed",
        ),
        pytest.param(
            "CreateAlias", {"AliasName": "alias/a b", "TargetKeyId": "k"},
            "1 validation error detected: Value 'alias/a b' at 'aliasName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
            id="model-pattern-echoes-the-value",
        ),
        pytest.param(
            "CreateGrant",
            {"KeyId": "k", "GranteePrincipal": "p", "Operations": ["Encrypt"],
             "Constraints": {"SourceArn": "arn:aws:s3:us-east-1:111122223333:b\x00"}},
            f"1 validation error detected: Value at 'constraints.sourceArn' failed to satisfy constraint: {STORABLE}",
            id="pattern-admitting-nul",
        ),
        pytest.param(
            "CreateGrant",
            {"KeyId": "k", "GranteePrincipal": "p", "Operations": ["Encrypt"],
             "Constraints": {"EncryptionContextEquals": {"a": "b\x00"}}},
            "1 validation error detected: Value at 'constraints.encryptionContextEquals' failed to satisfy "
            f"constraint: Map value must satisfy constraint: [{STORABLE}]",
            id="grant-constraints-are-stored",
        ),
        pytest.param(
            "Encrypt", {"KeyId": "k", "Plaintext": "AA==", "GrantTokens": ["t\x00"]},
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must "
            "satisfy constraint: [Member must have length less than or equal to 8192, Member must have length "
            f"greater than or equal to 1, {STORABLE}]",
            id="list-element",
        ),
        pytest.param(
            "Encrypt", {"KeyId": "k", "Plaintext": "AA==", "EncryptionContext": {"\ud800": "v"}},
            "1 validation error detected: Value at 'encryptionContext' failed to satisfy constraint: "
            "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [^\\uD800-\\uDFFF]*]",
            id="context-key-surrogate",
        ),
    ],
)  # fmt: skip
def test_kms_wording(operation: str, body: dict[str, Any], expected: str) -> None:
    assert _refusal(shapes.validate_request, operation, body) == expected


def test_context_text_may_hold_nul() -> None:
    body = {"KeyId": "k", "Plaintext": "AA==", "EncryptionContext": {"a\x00": "\x00"}}
    assert shapes.validate_request("Encrypt", body)["EncryptionContext"] == {"a\x00": "\x00"}


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        pytest.param(
            "CreateUser", {"UserName": "bob smith"},
            "1 validation error detected: Value 'bob smith' at 'userName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\w+=,.@-]+",
            id="user-name-pattern",
        ),
        pytest.param(
            "CreateUser", {"UserName": "b" * 65},
            f"1 validation error detected: Value '{'b' * 65}' at 'userName' failed to satisfy constraint: "
            "Member must have length less than or equal to 64",
            id="user-name-length",
        ),
        pytest.param(
            "DeleteAccessKey", {"AccessKeyId": "AKIA-1234567890123"},
            "1 validation error detected: Value 'AKIA-1234567890123' at 'accessKeyId' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [\\w]+",
            id="access-key-id-pattern",
        ),
        pytest.param(
            "DeleteAccessKey", {"AccessKeyId": "AKIA"},
            "1 validation error detected: Value 'AKIA' at 'accessKeyId' failed to satisfy constraint: "
            "Member must have length greater than or equal to 16",
            id="access-key-id-length",
        ),
        pytest.param(
            "UpdateAccessKey", {"AccessKeyId": "AKIAAAAAAAAAAAAAAAAA", "Status": "On"},
            "1 validation error detected: Value 'On' at 'status' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Active, Inactive, Expired]",
            id="status-enum",
        ),
        pytest.param(
            "PutUserPolicy", {"UserName": "a", "PolicyName": "p q", "PolicyDocument": "{}"},
            "1 validation error detected: Value 'p q' at 'policyName' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: [\\w+=,.@-]+",
            id="policy-name-pattern",
        ),
        pytest.param(
            "PutUserPolicy", {"UserName": "a", "PolicyName": "p"},
            "1 validation error detected: Value null at 'policyDocument' failed to satisfy constraint: "
            "Member must not be null",
            id="policy-document-required",
        ),
    ],
)  # fmt: skip
def test_iam_wording(operation: str, body: dict[str, Any], expected: str) -> None:
    assert _refusal(iam_shapes.validate_request, operation, body) == expected


def test_iam_members_an_operation_does_not_use_are_dropped() -> None:
    out = iam_shapes.validate_request("CreateUser", {"UserName": "bob", "Path": "/x/", "Extra": {"a": 1}})
    assert out == {"UserName": "bob"}
