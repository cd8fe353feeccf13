"""Key ids, ARNs, alias names and the classification of a KeyId parameter, as AWS answers them."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regiond.domain import ids
from regiond.domain.ids import RefKind, parse_key_reference
from regiond.errors import (
    InvalidAliasNameException,
    InvalidArnException,
    NotFoundException,
    ValidationException,
)

ACCOUNT = "111122223333"
REGION = "us-east-1"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"

regions = st.from_regex(r"\A[a-z]{2,6}-[a-z]{4,9}-[1-9]\Z")
accounts = st.from_regex(r"\A[0-9]{12}\Z")
key_ids = st.one_of(
    st.uuids().map(str),
    st.binary(min_size=16, max_size=16).map(lambda raw: ids.MRK_PREFIX + raw.hex()),
)
alias_names = st.from_regex(r"\Aalias/[a-zA-Z0-9/_-]{1,249}\Z")


def test_new_single_region_key_id_is_a_lowercase_uuid4() -> None:
    key_id = ids.new_key_id(multi_region=False)
    assert uuid.UUID(key_id).version == 4
    assert key_id == str(uuid.UUID(key_id))
    assert ids.key_id_kind(key_id) is ids.KeyIdKind.SINGLE_REGION


def test_new_multi_region_key_id_is_mrk_and_32_lowercase_hex() -> None:
    key_id = ids.new_key_id(multi_region=True)
    assert re.fullmatch(r"mrk-[0-9a-f]{32}", key_id)
    assert ids.key_id_kind(key_id) is ids.KeyIdKind.MULTI_REGION


def test_new_key_ids_do_not_repeat() -> None:
    assert len({ids.new_key_id(multi_region=flag) for flag in (True, False) for _ in range(500)}) == 1000


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (KEY_ID, True),
        (MRK_ID, True),
        (KEY_ID.upper(), False),  # shaped like an id, but not one we issue
        ("mrk-" + "A" * 32, False),
        ("1234abcd12ab34cd56ef1234567890ab", False),  # UUID without hyphens
        ("mrk-1234", False),
        ("", False),
    ],
)
def test_is_valid_key_id_accepts_only_canonical_forms(value: str, valid: bool) -> None:
    assert ids.is_valid_key_id(value) is valid


def test_key_arn_and_alias_arn_have_the_aws_layout() -> None:
    assert ids.key_arn(REGION, ACCOUNT, KEY_ID) == f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"
    assert (
        ids.alias_arn(REGION, ACCOUNT, "alias/app/prod")
        == "arn:aws:kms:us-east-1:111122223333:alias/app/prod"
    )


@pytest.mark.parametrize(
    ("region", "account", "key_id"),
    [
        ("us-east-1", "1111", KEY_ID),
        ("us-east-1", "11112222333a", KEY_ID),
        ("useast1", ACCOUNT, KEY_ID),
        ("us-east-1", ACCOUNT, "not-a-key"),
    ],
)
def test_key_arn_refuses_bad_parts(region: str, account: str, key_id: str) -> None:
    with pytest.raises(ValueError):
        ids.key_arn(region, account, key_id)


def test_alias_arn_needs_an_alias_name() -> None:
    with pytest.raises(ValueError):
        ids.alias_arn(REGION, ACCOUNT, "app")
    with pytest.raises(ValueError):
        ids.alias_arn(REGION, ACCOUNT, "alias/")


@pytest.mark.parametrize(
    ("value", "kind", "key_id", "alias_name", "region", "account"),
    [
        (KEY_ID, RefKind.KEY_ID, KEY_ID, None, None, None),
        (MRK_ID, RefKind.KEY_ID, MRK_ID, None, None, None),
        (KEY_ID.upper(), RefKind.KEY_ID, KEY_ID.upper(), None, None, None),
        (
            f"arn:aws:kms:us-west-2:{ACCOUNT}:key/{KEY_ID}",
            RefKind.KEY_ARN,
            KEY_ID,
            None,
            "us-west-2",
            ACCOUNT,
        ),
        (
            f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{MRK_ID}",
            RefKind.KEY_ARN,
            MRK_ID,
            None,
            "eu-west-1",
            ACCOUNT,
        ),
        ("alias/ExampleAlias", RefKind.ALIAS_NAME, None, "alias/ExampleAlias", None, None),
        ("alias/aws/ebs", RefKind.ALIAS_NAME, None, "alias/aws/ebs", None, None),
        (
            f"arn:aws:kms:ap-southeast-2:{ACCOUNT}:alias/team/app",
            RefKind.ALIAS_ARN,
            None,
            "alias/team/app",
            "ap-southeast-2",
            ACCOUNT,
        ),
    ],
)
def test_parse_key_reference_classifies_the_four_spellings(
    value: str,
    kind: RefKind,
    key_id: str | None,
    alias_name: str | None,
    region: str | None,
    account: str | None,
) -> None:
    ref = parse_key_reference(value)
    assert (ref.kind, ref.raw, ref.key_id, ref.alias_name, ref.region, ref.account) == (
        kind,
        value,
        key_id,
        alias_name,
        region,
        account,
    )
    assert ref.is_alias is (kind in (RefKind.ALIAS_NAME, RefKind.ALIAS_ARN))
    assert ref.is_arn is (kind in (RefKind.KEY_ARN, RefKind.ALIAS_ARN))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo", "Invalid keyId 'foo'"),
        ("1234abcd-12ab-34cd-56ef", "Invalid keyId '1234abcd-12ab-34cd-56ef'"),
        ("mrk-123", "Invalid keyId 'mrk-123'"),
        ("key/" + KEY_ID, "Invalid keyId 'key/" + KEY_ID + "'"),
        (f"arn:aws:kms:us-east-1:{ACCOUNT}:key/nope", "Invalid keyId 'nope'"),
        (f"arn:aws:kms:us-east-1:{ACCOUNT}:key/", "Invalid keyId ''"),
    ],
)
def test_garbage_key_ids_are_not_found_as_aws_says(value: str, message: str) -> None:
    with pytest.raises(NotFoundException) as caught:
        parse_key_reference(value)
    assert caught.value.message == message


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:kms",
        f"arn:aws:kms:us-east-1:{ACCOUNT}",
        f"arn:aws:s3:us-east-1:{ACCOUNT}:key/{KEY_ID}",
        f"arn:aws-cn:kms:cn-north-1:{ACCOUNT}:key/{KEY_ID}",
        f"arn:aws:kms::{ACCOUNT}:key/{KEY_ID}",
        f"arn:aws:kms:US-EAST-1:{ACCOUNT}:key/{KEY_ID}",
        f"arn:aws:kms:us-east-1:1111:key/{KEY_ID}",
        f"arn:aws:kms:us-east-1::key/{KEY_ID}",
        f"arn:aws:kms:us-east-1:{ACCOUNT}:grant/{KEY_ID}",
        f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/",
        f"arn:aws:kms:us-east-1:{ACCOUNT}:{KEY_ID}",
    ],
)
def test_malformed_arns_are_invalid_arns(value: str) -> None:
    with pytest.raises(InvalidArnException) as caught:
        parse_key_reference(value)
    assert caught.value.message == f"Invalid arn {value}"


def test_an_arn_of_another_region_is_not_found_with_the_aws_message() -> None:
    ref = parse_key_reference(f"arn:aws:kms:us-west-2:{ACCOUNT}:key/{KEY_ID}")
    ref.require_region("us-west-2")
    with pytest.raises(NotFoundException) as caught:
        ref.require_region("us-east-1")
    assert caught.value.message == "Invalid arn us-west-2"


def test_an_alias_arn_of_another_region_is_refused_the_same_way() -> None:
    ref = parse_key_reference(f"arn:aws:kms:eu-west-1:{ACCOUNT}:alias/app")
    with pytest.raises(NotFoundException, match=r"^Invalid arn eu-west-1$"):
        ref.require_region(REGION)


@pytest.mark.parametrize("value", [KEY_ID, "alias/app"])
def test_bare_ids_and_alias_names_belong_to_the_callers_region(value: str) -> None:
    parse_key_reference(value).require_region(REGION)


def test_require_key_returns_the_key_id_of_a_key_reference() -> None:
    assert parse_key_reference(f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{MRK_ID}").require_key() == MRK_ID


@pytest.mark.parametrize("value", ["alias/app", f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/app"])
def test_require_key_refuses_aliases_like_aws(value: str) -> None:
    with pytest.raises(InvalidArnException, match=r"^Key Aliases are not supported for this operation\.$"):
        parse_key_reference(value).require_key()


@given(region=regions, account=accounts, key_id=key_ids)
def test_key_arns_parse_back_to_their_parts(region: str, account: str, key_id: str) -> None:
    ref = parse_key_reference(ids.key_arn(region, account, key_id))
    assert (ref.kind, ref.key_id, ref.region, ref.account) == (RefKind.KEY_ARN, key_id, region, account)


@given(region=regions, account=accounts, name=alias_names)
def test_alias_arns_parse_back_to_their_parts(region: str, account: str, name: str) -> None:
    ref = parse_key_reference(ids.alias_arn(region, account, name))
    assert (ref.kind, ref.alias_name, ref.region, ref.account) == (RefKind.ALIAS_ARN, name, region, account)


@given(name=alias_names)
def test_valid_alias_names_are_accepted_for_creation(name: str) -> None:
    if not name.startswith(ids.AWS_MANAGED_ALIAS_PREFIX):
        assert ids.validate_new_alias_name(name) == name


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        (
            "ExampleAlias",
            ValidationException,
            'Alias must start with the prefix "alias/". Please see '
            "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
        ),
        (
            "alias/" + "a" * 251,
            ValidationException,
            "1 validation error detected: Value 'alias/"
            + "a" * 251
            + "' at 'aliasName' failed to satisfy constraint: "
            "Member must have length less than or equal to 256",
        ),
        (
            "alias/Service.Test",
            ValidationException,
            "1 validation error detected: Value 'alias/Service.Test' at 'aliasName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ),
        (
            "alias/Service:Test",
            ValidationException,
            "alias/Service:Test contains invalid characters for an alias",
        ),
        ("alias/", InvalidAliasNameException, None),
        ("alias/aws/ebs", InvalidAliasNameException, None),
        ("alias/aws/", InvalidAliasNameException, None),
    ],
)
def test_alias_names_for_creation_follow_aws_rules(
    name: str, error: type[Exception], message: str | None
) -> None:
    with pytest.raises(error) as caught:
        ids.validate_new_alias_name(name)
    if message is not None:
        assert str(caught.value) == message


@pytest.mark.parametrize("name", ["alias/aws", "alias/awsome", "alias/AWS/ebs", "alias/" + "a" * 250])
def test_only_the_exact_alias_aws_slash_prefix_is_reserved(name: str) -> None:
    assert ids.validate_new_alias_name(name) == name
