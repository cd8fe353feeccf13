"""Request validation and response rendering against botocore's KMS model (regiond.protocol.shapes)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from botocore.model import ServiceModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from regiond.errors import SerializationException, UnknownOperationException, ValidationException
from regiond.protocol import shapes
from tests.support import api_coverage as coverage

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = b"TOP-SECRET-PLAINTEXT!"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def validation_message(operation: str, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationException) as info:
        shapes.validate_request(operation, body)
    return info.value.message


def serialization_message(operation: str, body: object) -> str:
    with pytest.raises(SerializationException) as info:
        shapes.validate_request(operation, body)
    return info.value.message


@pytest.fixture(scope="module")
def service_model() -> ServiceModel:
    return ServiceModel(shapes._load_model(), "kms")


# --- constraint violations: ValidationException -----------------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        pytest.param(
            "DescribeKey",
            {},
            "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
            "Member must not be null",
            id="missing-required",
        ),
        pytest.param(
            "DescribeKey",
            {"KeyId": None},
            "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
            "Member must not be null",
            id="null-is-missing",
        ),
        pytest.param(
            "CreateKey",
            {"KeyUsage": "FOO"},
            "1 validation error detected: Value 'FOO' at 'keyUsage' failed to satisfy constraint: "
            "Member must satisfy enum value set: "
            "[SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT, ENCAPSULATE_DECAPSULATE]",
            id="enum",
        ),
        pytest.param(
            "GenerateRandom",
            {"NumberOfBytes": 0},
            "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
            id="integer-below-min",
        ),
        pytest.param(
            "GenerateDataKey",
            {"KeyId": KEY_ID, "NumberOfBytes": 1025},
            "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
            "Member must have value less than or equal to 1024",
            id="integer-above-max",
        ),
        pytest.param(
            "CreateAlias",
            {"AliasName": "alias/has space", "TargetKeyId": KEY_ID},
            "1 validation error detected: Value 'alias/has space' at 'aliasName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
            id="pattern",
        ),
        pytest.param(
            "GetPublicKey",
            {"KeyId": ""},
            "1 validation error detected: Value '' at 'keyId' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
            id="empty-string",
        ),
        pytest.param(
            "Decrypt",
            {"CiphertextBlob": ""},
            "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
            id="blob-value-never-echoed",
        ),
        pytest.param(
            "Encrypt",
            {"KeyId": KEY_ID},
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
            "Member must not be null",
            id="missing-sensitive-reads-value-at",
        ),
        pytest.param(
            "Encrypt",
            {"KeyId": KEY_ID, "Plaintext": "AA==", "GrantTokens": ["t"] * 11},
            "1 validation error detected: Value '[t, t, t, t, t, t, t, t, t, t, t]' at 'grantTokens' "
            "failed to satisfy constraint: Member must have length less than or equal to 10",
            id="list-count",
        ),
        pytest.param(
            "Encrypt",
            {"KeyId": KEY_ID, "Plaintext": "AA==", "GrantTokens": ["ok", ""]},
            "1 validation error detected: Value '[ok, ]' at 'grantTokens' failed to satisfy constraint: "
            "Member must satisfy constraint: [Member must have length less than or equal to 8192, "
            "Member must have length greater than or equal to 1]",
            id="list-element",
        ),
        pytest.param(
            "CreateKey",
            {"Tags": [{"TagKey": "k" * 129, "TagValue": "v"}]},
            "1 validation error detected: Value '" + "k" * 129 + "' at 'tags.1.member.tagKey' failed to "
            "satisfy constraint: Member must have length less than or equal to 128",
            id="nested-structure-in-list",
        ),
        pytest.param(
            "TagResource",
            {"KeyId": KEY_ID, "Tags": [{"TagKey": "a", "TagValue": "b"}, {"TagKey": "c"}]},
            "1 validation error detected: Value null at 'tags.2.member.tagValue' failed to satisfy "
            "constraint: Member must not be null",
            id="nested-required",
        ),
    ],
)
def test_constraint_violation_messages_match_aws(operation: str, body: dict[str, Any], expected: str) -> None:
    assert validation_message(operation, body) == expected


def test_description_over_8192_characters_is_rejected_and_8192_is_accepted() -> None:
    message = validation_message("CreateKey", {"Description": "d" * 8193})
    assert message.startswith("1 validation error detected: Value '")
    assert message.endswith(
        "' at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192"
    )
    assert shapes.validate_request("CreateKey", {"Description": "d" * 8192}) == {"Description": "d" * 8192}


def test_string_length_counts_characters_not_bytes() -> None:
    # 8192 characters of a 3-byte UTF-8 character are within the limit.
    assert shapes.validate_request("CreateKey", {"Description": "€" * 8192})["Description"] == "€" * 8192


@pytest.mark.parametrize("size", [0, 4097])
def test_plaintext_length_is_checked_on_decoded_bytes_and_never_echoed(size: int) -> None:
    plaintext = (SECRET * 200)[:size]
    message = validation_message("Encrypt", {"KeyId": KEY_ID, "Plaintext": b64(plaintext)})
    bound = "greater than or equal to 1" if size == 0 else "less than or equal to 4096"
    assert message == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        f"Member must have length {bound}"
    )
    assert "SECRET" not in message
    assert b64(SECRET)[:8] not in message


def test_plaintext_at_the_limits_is_accepted() -> None:
    for size in (1, 4096):
        plaintext = (SECRET * 200)[:size]
        out = shapes.validate_request("Encrypt", {"KeyId": KEY_ID, "Plaintext": b64(plaintext)})
        assert out["Plaintext"] == plaintext


def test_sensitive_string_value_is_never_echoed() -> None:
    password = "hunter"  # 6 characters: below KeyStorePassword's minimum of 7
    message = validation_message(
        "CreateCustomKeyStore", {"CustomKeyStoreName": "store", "KeyStorePassword": password}
    )
    assert message == (
        "1 validation error detected: Value at 'keyStorePassword' failed to satisfy constraint: "
        "Member must have length greater than or equal to 7"
    )


def test_several_errors_are_counted_and_listed_in_model_member_order() -> None:
    # The body lists GrantTokens first; AWS reports in the order the model declares members.
    body = {"GrantTokens": ["t"] * 11, "EncryptionAlgorithm": "FOO", "KeyId": ""}
    message = validation_message("Encrypt", body)
    head, _, rest = message.partition(": ")
    assert head == "4 validation errors detected"
    errors = rest.split("; ")
    assert re.findall(r" at '([^']+)' failed", rest) == [
        "keyId",
        "plaintext",
        "grantTokens",
        "encryptionAlgorithm",
    ]
    assert all("failed to satisfy constraint: Member must" in e for e in errors)


# --- type mismatches and bad base64: SerializationException ---------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "expected"),
    [
        ("GenerateRandom", {"NumberOfBytes": "5"}, "STRING_VALUE can not be converted to an Integer"),
        ("GenerateRandom", {"NumberOfBytes": True}, "TRUE_VALUE can not be converted to an Integer"),
        ("GenerateRandom", {"NumberOfBytes": 5.5}, "DECIMAL_VALUE can not be converted to an Integer"),
        ("GenerateRandom", {"NumberOfBytes": [5]}, "Start of list found where not expected"),
        ("DescribeKey", {"KeyId": 5}, "NUMBER_VALUE can not be converted to a String"),
        ("DescribeKey", {"KeyId": False}, "FALSE_VALUE can not be converted to a String"),
        ("DescribeKey", {"KeyId": {"a": 1}}, "Start of structure or map found where not expected."),
        ("CreateKey", {"MultiRegion": "true"}, "STRING_VALUE can not be converted to an Boolean"),
        ("CreateKey", {"Tags": "x"}, "Expected list or null"),
        ("CreateKey", {"Tags": ["x"]}, "Expected null"),
        (
            "CreateKey",
            {"Tags": [{"TagKey": 1, "TagValue": "v"}]},
            "NUMBER_VALUE can not be converted to a String",
        ),
        ("Decrypt", {"CiphertextBlob": "AA==", "EncryptionContext": "x"}, "Expected map or null"),
        (
            "Decrypt",
            {"CiphertextBlob": "AA==", "EncryptionContext": {"k": 1}},
            "NUMBER_VALUE can not be converted to a String",
        ),
        ("Decrypt", {"CiphertextBlob": 12}, "NUMBER_VALUE can not be converted to a ByteBuffer"),
    ],
)
def test_wrong_json_type_is_a_serialization_exception(
    operation: str, body: dict[str, Any], expected: str
) -> None:
    assert serialization_message(operation, body) == expected


def test_type_mismatch_wins_over_constraint_violations() -> None:
    # An empty KeyId (a constraint violation) and a string NumberOfBytes (a type mismatch):
    # AWS deserializes before it validates, so only the SerializationException is seen.
    body = {"KeyId": "", "NumberOfBytes": "5"}
    assert serialization_message("GenerateDataKey", body) == "STRING_VALUE can not be converted to an Integer"


@pytest.mark.parametrize(
    "text",
    ["VE9QLVNFQ1JFVA", "VE9Q LVNFQ1JFVA==", "VE9QLVNFQ1JFVA===", "VE9Q*LVNF", "VE9QLVNFQ1JFVA==VE9Q", "Täst"],
    ids=["no-padding", "space", "excess-padding", "bad-char", "data-after-padding", "non-ascii"],
)
def test_bad_base64_is_a_serialization_exception_that_names_the_member_only(text: str) -> None:
    message = serialization_message("Encrypt", {"KeyId": KEY_ID, "Plaintext": text})
    assert message == "Invalid base64 value at 'plaintext'"
    assert text not in message


@pytest.mark.parametrize("body", [[], None, "x", 1, True])
def test_body_that_is_not_an_object_is_a_serialization_exception(body: object) -> None:
    with pytest.raises(SerializationException):
        shapes.validate_request("ListKeys", body)


# --- what a valid request turns into -----------------------------------------------------


def test_valid_request_is_a_new_dict_with_blobs_decoded_and_the_rest_passed_through() -> None:
    body = {
        "KeyId": "alias/app",
        "Plaintext": b64(SECRET),
        "EncryptionContext": {"tenant": "t-42"},
        "GrantTokens": ["token"],
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DryRun": False,
    }
    out = shapes.validate_request("Encrypt", body)
    assert out == {**body, "Plaintext": SECRET}
    assert out is not body
    assert body["Plaintext"] == b64(SECRET)  # the input is left alone


def test_unknown_members_are_ignored_and_null_members_are_absent() -> None:
    body = {"KeyId": KEY_ID, "NotAMember": {"x": 1}, "Description": None}
    assert shapes.validate_request("DescribeKey", body) == {"KeyId": KEY_ID}


def test_timestamp_members_become_aware_utc_datetimes() -> None:
    body = {
        "KeyId": KEY_ID,
        "ImportToken": b64(b"token"),
        "EncryptedKeyMaterial": b64(b"material"),
        "ValidTo": 1_700_000_000,
        "ExpirationModel": "KEY_MATERIAL_EXPIRES",
    }
    out = shapes.validate_request("ImportKeyMaterial", body)
    assert out["ValidTo"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert out["ImportToken"] == b"token"


def test_everything_botocore_serializes_validates_back_to_the_same_params(
    service_model: ServiceModel,
) -> None:
    """Whatever boto3 sends for these calls is accepted and decodes to what the caller passed."""
    serializer = create_serializer("json")
    calls: list[tuple[str, dict[str, Any]]] = [
        (
            "Encrypt",
            {"KeyId": KEY_ID, "Plaintext": SECRET, "EncryptionContext": {"a": "b"}, "GrantTokens": ["g"]},
        ),
        ("Decrypt", {"CiphertextBlob": b"\x00\x01" * 100, "DryRun": True}),
        ("GenerateDataKey", {"KeyId": KEY_ID, "KeySpec": "AES_256"}),
        ("GenerateRandom", {"NumberOfBytes": 1024}),
        (
            "CreateKey",
            {"Description": "d", "KeyUsage": "ENCRYPT_DECRYPT", "Tags": [{"TagKey": "k", "TagValue": ""}]},
        ),
        (
            "CreateGrant",
            {
                "KeyId": KEY_ID,
                "GranteePrincipal": "arn:aws:iam::111122223333:role/app",
                "Operations": ["Encrypt", "Decrypt"],
                "Constraints": {"EncryptionContextSubset": {"tenant": "t"}},
            },
        ),
        ("ImportKeyMaterial", {"KeyId": KEY_ID, "ImportToken": b"t", "EncryptedKeyMaterial": b"m"}),
        ("ListAliases", {"Limit": 100, "Marker": "next"}),
    ]
    for operation, params in calls:
        request = serializer.serialize_to_request(params, service_model.operation_model(operation))
        assert shapes.validate_request(operation, orjson.loads(request["body"])) == params, operation


# --- rendering -----------------------------------------------------------------------------


def parse_like_boto3(service_model: ServiceModel, operation: str, body: bytes) -> dict[str, Any]:
    shape = service_model.operation_model(operation).output_shape
    parsed: dict[str, Any] = create_parser("json").parse(
        {"body": body, "headers": {}, "status_code": 200}, shape
    )
    parsed.pop("ResponseMetadata", None)
    return parsed


def test_render_key_metadata_with_datetimes_nested_lists_and_no_nones(service_model: ServiceModel) -> None:
    created = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    deletion = datetime(2024, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    metadata = {
        "AWSAccountId": "111122223333",
        "KeyId": "mrk-0123456789abcdef0123456789abcdef",
        "Arn": "arn:aws:kms:us-east-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef",
        "CreationDate": created,
        "DeletionDate": deletion,
        "Enabled": True,
        "Description": "",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": "PendingDeletion",
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": True,
        "MultiRegionConfiguration": {
            "MultiRegionKeyType": "PRIMARY",
            "PrimaryKey": {"Arn": "arn:aws:kms:us-east-1:111122223333:key/mrk-1", "Region": "us-east-1"},
            "ReplicaKeys": [{"Arn": "arn:aws:kms:eu-west-1:111122223333:key/mrk-1", "Region": "eu-west-1"}],
        },
        "ValidTo": None,
        "CustomKeyStoreId": None,
    }
    body = shapes.render_response("DescribeKey", {"KeyMetadata": metadata})

    wire = orjson.loads(body)["KeyMetadata"]
    assert wire["CreationDate"] == created.timestamp() == 1714566615.25
    assert wire["DeletionDate"] == deletion.timestamp()
    assert "ValidTo" not in wire and "CustomKeyStoreId" not in wire
    assert wire["MultiRegionConfiguration"]["ReplicaKeys"][0]["Region"] == "eu-west-1"

    expected = {k: v for k, v in metadata.items() if v is not None}
    assert parse_like_boto3(service_model, "DescribeKey", body) == {"KeyMetadata": expected}


def test_render_blobs_as_base64_and_round_trip_through_botocore(service_model: ServiceModel) -> None:
    result = {
        "KeyId": f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}",
        "ImportToken": b"\x00token\xff",
        "PublicKey": bytearray(b"\x30\x82public"),
        "ParametersValidTo": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    body = shapes.render_response("GetParametersForImport", result)
    wire = orjson.loads(body)
    assert wire["ImportToken"] == b64(b"\x00token\xff")
    assert wire["ParametersValidTo"] == 1704164645.0
    parsed = parse_like_boto3(service_model, "GetParametersForImport", body)
    assert parsed == {**result, "PublicKey": b"\x30\x82public"}


def test_render_lists_of_structures_and_drops_undeclared_members(service_model: ServiceModel) -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    result = {
        "Aliases": [
            {
                "AliasName": "alias/a",
                "AliasArn": "arn:aws:kms:us-east-1:111122223333:alias/a",
                "TargetKeyId": KEY_ID,
                "CreationDate": when,
                "LastUpdatedDate": when,
            },
            {"AliasName": "alias/aws/s3", "AliasArn": "arn:aws:kms:us-east-1:111122223333:alias/aws/s3"},
        ],
        "Truncated": False,
        "_backing_key": b"must never be rendered",
    }
    body = shapes.render_response("ListAliases", result)
    assert b"_backing_key" not in body and b"never" not in body
    parsed = parse_like_boto3(service_model, "ListAliases", body)
    assert parsed["Aliases"][0]["CreationDate"] == when
    assert parsed["Truncated"] is False


def test_render_operation_without_output_is_an_empty_body() -> None:
    assert shapes.render_response("DeleteAlias", {}) == b""


def test_render_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        shapes.render_response(
            "DescribeKey", {"KeyMetadata": {"KeyId": KEY_ID, "CreationDate": datetime(2024, 1, 1)}}
        )


# --- operations ------------------------------------------------------------------------------


def test_unknown_operation() -> None:
    assert not shapes.is_kms_operation("Frobnicate")
    assert not shapes.is_kms_operation("encrypt")
    with pytest.raises(UnknownOperationException):
        shapes.validate_request("Frobnicate", {})
    with pytest.raises(KeyError):
        shapes.render_response("Frobnicate", {})


def test_operation_names_are_the_models() -> None:
    names = shapes.operation_names()
    assert names == frozenset(shapes._load_model()["operations"])
    assert {"Encrypt", "Decrypt", "GenerateDataKey", "CreateKey", "ListAliases"} <= names
    assert all(shapes.is_kms_operation(n) for n in names)


# --- coverage table ---------------------------------------------------------------------------


def test_every_operation_is_filed_in_exactly_one_area() -> None:
    filed = [op for ops in coverage.AREAS.values() for op in ops]
    assert len(filed) == len(set(filed))
    assert set(filed) == set(coverage.OPERATIONS) == shapes.operation_names()
    assert list(coverage.OPERATIONS) == sorted(coverage.OPERATIONS)


def test_coverage_markdown_lists_every_operation_with_its_status() -> None:
    text = coverage.render_markdown({"Encrypt": "implemented"}, {"Decrypt": "needs | escaping"})
    assert f"**{len(coverage.OPERATIONS)} operations**" in text
    assert "| Encrypt | implemented |  |" in text
    assert "| Decrypt | planned | needs \\| escaping |" in text
    for op in coverage.OPERATIONS:
        assert f"| {op} |" in text
    with pytest.raises(ValueError, match="Encrpyt"):
        coverage.render_markdown({"Encrpyt": "implemented"}, {})
