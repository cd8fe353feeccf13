"""Canonical encryption context bytes: order-independent, unambiguous, reversible."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regiond.domain.context import EMPTY_CONTEXT, canonical_bytes, normalize, parse_canonical
from regiond.errors import ValidationException

contexts = st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=8)


def _field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


@pytest.mark.parametrize("absent", [None, {}])
def test_empty_and_absent_contexts_are_the_same_empty_bytes(absent: dict[str, str] | None) -> None:
    assert canonical_bytes(absent) == b""
    assert normalize(absent) == {}


def test_the_encoding_is_length_prefixed_utf8_sorted_by_key() -> None:
    context = {"purpose": "test", "Department": "Finance"}
    expected = _field("Department") + _field("Finance") + _field("purpose") + _field("test")
    assert canonical_bytes(context) == expected


def test_keys_sort_by_utf8_bytes_not_utf16_code_units() -> None:
    # U+FFFF is EF BF BF and U+10000 is F0 90 80 80 in UTF-8, so U+FFFF sorts first; a UTF-16
    # sort (Java, JavaScript) would put the surrogate pair D800 DC00 first instead.
    context = {"\U00010000": "b", "\uffff": "a"}
    assert canonical_bytes(context) == _field("\uffff") + _field("a") + _field("\U00010000") + _field("b")


def test_moving_a_character_between_key_and_value_changes_the_bytes() -> None:
    assert canonical_bytes({"a": "bc"}) != canonical_bytes({"ab": "c"})


def test_no_unicode_normalisation_is_applied() -> None:
    assert canonical_bytes({"k": "\u00e9"}) != canonical_bytes({"k": "e\u0301"})


@given(contexts, st.randoms())
def test_bytes_do_not_depend_on_insertion_order(context: dict[str, str], rnd: random.Random) -> None:
    items = list(context.items())
    rnd.shuffle(items)
    assert canonical_bytes(dict(items)) == canonical_bytes(context)


@given(contexts, contexts)
def test_different_contexts_give_different_bytes(first: dict[str, str], second: dict[str, str]) -> None:
    assert (canonical_bytes(first) == canonical_bytes(second)) is (first == second)


@given(contexts)
def test_parse_canonical_inverts_canonical_bytes(context: dict[str, str]) -> None:
    data = canonical_bytes(context)
    assert parse_canonical(data) == context
    assert canonical_bytes(parse_canonical(data)) == data


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00",  # truncated length
        b"\x00\x00\x00\x05ab",  # truncated field
        _field("k"),  # key without a value
        _field("b") + _field("1") + _field("a") + _field("2"),  # not sorted
        _field("a") + _field("1") + _field("a") + _field("2"),  # duplicate key
        _field("a") + _field("1") + b"\x00",  # trailing byte
        b"\x00\x00\x00\x01\xff" + _field("v"),  # not UTF-8
    ],
)
def test_parse_canonical_rejects_anything_not_exactly_canonical(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_canonical(data)


def test_non_string_values_are_a_validation_error() -> None:
    with pytest.raises(ValidationException):
        canonical_bytes({"k": 1})  # type: ignore[dict-item]


def test_lone_surrogates_are_a_validation_error() -> None:
    with pytest.raises(ValidationException):
        canonical_bytes({"k": "\ud800"})


def test_normalize_returns_a_read_only_copy() -> None:
    source = {"k": "v"}
    context = normalize(source)
    source["k"] = "changed"
    assert context == {"k": "v"}
    with pytest.raises(TypeError):
        context["k"] = "x"  # type: ignore[index]
    assert normalize(None) is EMPTY_CONTEXT
