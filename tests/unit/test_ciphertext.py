"""Ciphertext blob format v1: known answers, round trips, and tamper detection through the AAD."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from regiond.crypto import aead
from regiond.domain import ciphertext
from regiond.domain.ciphertext import Header, aad, pack, unpack
from regiond.domain.context import canonical_bytes
from regiond.domain.ids import MRK_PREFIX
from regiond.errors import InvalidCiphertextException

VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors" / "ciphertext_v1.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
BACKING_KEY = bytes.fromhex(VECTORS["backing_key_hex"])

key_ids = st.one_of(
    st.uuids().map(str),
    st.binary(min_size=16, max_size=16).map(lambda raw: MRK_PREFIX + raw.hex()),
)
headers = st.builds(Header, key_ids, st.integers(min_value=1, max_value=ciphertext.MAX_BACKING_VERSION))
contexts = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)


def _seal(header: Header, context: dict[str, str], plaintext: bytes, nonce: bytes) -> bytes:
    sealed = nonce + AESGCM(BACKING_KEY).encrypt(
        nonce, plaintext, aad(header.to_bytes(), canonical_bytes(context))
    )
    return pack(header, sealed)


def _open(blob: bytes, context: dict[str, str]) -> bytes:
    """What Decrypt does with a blob: unpack, then authenticate the header bytes it received."""
    _, sealed = unpack(blob)
    header_bytes = blob[: ciphertext.HEADER_BYTES]
    nonce, body = sealed[: ciphertext.NONCE_BYTES], sealed[ciphertext.NONCE_BYTES :]
    return AESGCM(BACKING_KEY).decrypt(nonce, body, aad(header_bytes, canonical_bytes(context)))


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_known_answer_vector(vector: dict[str, Any]) -> None:
    header = Header(vector["key_id"], vector["backing_version"])
    context = vector["encryption_context"]
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    nonce = bytes.fromhex(vector["nonce_hex"])

    assert header.to_bytes().hex() == vector["header_hex"]
    assert canonical_bytes(context).hex() == vector["context_canonical_hex"]
    assert aad(header.to_bytes(), canonical_bytes(context)).hex() == vector["aad_hex"]
    assert _seal(header, context, plaintext, nonce).hex() == vector["blob_hex"]

    blob = bytes.fromhex(vector["blob_hex"])
    assert unpack(blob)[0] == header
    assert _open(blob, context) == plaintext


def test_vector_file_declares_format_version_1() -> None:
    assert VECTORS["format_version"] == ciphertext.FORMAT_VERSION_1 == 1


def test_header_layout_is_version_type_id_backing_version() -> None:
    raw = Header("1234abcd-12ab-34cd-56ef-1234567890ab", 0x01020304).to_bytes()
    assert len(raw) == ciphertext.HEADER_BYTES == 22
    assert raw[0] == 0x01
    assert raw[1] == ciphertext.KEY_ID_TYPE_SINGLE_REGION
    assert raw[2:18] == bytes.fromhex("1234abcd12ab34cd56ef1234567890ab")
    assert raw[18:22] == b"\x01\x02\x03\x04"
    assert Header(MRK_PREFIX + "ab" * 16, 1).to_bytes()[1] == ciphertext.KEY_ID_TYPE_MULTI_REGION


def test_size_limits_match_the_kms_model() -> None:
    model_path = resources.files("botocore") / "data" / "kms" / "2014-11-01" / "service-2.json.gz"
    shapes = json.loads(gzip.decompress(model_path.read_bytes()))["shapes"]
    assert shapes["CiphertextType"]["max"] == ciphertext.MAX_BLOB_BYTES == 6144
    largest_v1_blob = shapes["PlaintextType"]["max"] + ciphertext.MIN_BLOB_BYTES
    assert largest_v1_blob <= ciphertext.MAX_BLOB_BYTES


@given(header=headers, sealed=st.binary(min_size=28, max_size=ciphertext.MAX_BLOB_BYTES - 22))
def test_pack_unpack_round_trip(header: Header, sealed: bytes) -> None:
    blob = pack(header, sealed)
    assert blob[: ciphertext.HEADER_BYTES] == header.to_bytes()
    assert unpack(blob) == (header, sealed)


@given(header=headers, sealed=st.binary(min_size=28, max_size=ciphertext.MAX_BLOB_BYTES - 22))
def test_the_unmemoised_header_bytes_pack_as_the_header_does(header: Header, sealed: bytes) -> None:
    """What the key cache keeps per key (``header_bytes``) and seals with (``pack_bytes``)."""
    encoded = ciphertext.header_bytes(header.key_id, header.backing_version)
    assert encoded == header.to_bytes()
    assert ciphertext.pack_bytes(encoded, sealed) == pack(header, sealed)


def test_header_bytes_and_pack_bytes_refuse_what_header_and_pack_refuse() -> None:
    with pytest.raises(ValueError):
        ciphertext.header_bytes("alias/app", 1)
    with pytest.raises(ValueError):
        ciphertext.header_bytes("1234abcd-12ab-34cd-56ef-1234567890ab", 0)
    encoded = ciphertext.header_bytes("1234abcd-12ab-34cd-56ef-1234567890ab", 1)
    with pytest.raises(ValueError):
        ciphertext.pack_bytes(encoded[:-1], bytes(28))
    with pytest.raises(ValueError):
        ciphertext.pack_bytes(encoded, bytes(27))


@given(raw=st.binary(min_size=22, max_size=22))
def test_a_header_that_parses_has_exactly_one_spelling(raw: bytes) -> None:
    try:
        header = Header.from_bytes(raw)
    except InvalidCiphertextException:
        return
    assert header.to_bytes() == raw


def test_the_aead_layer_output_is_the_blob_payload() -> None:
    header = Header("mrk-" + "0f" * 16, 7)
    context_bytes = canonical_bytes({"tenant": "acme"})
    blob = pack(header, aead.seal(BACKING_KEY, b"secret", aad(header.to_bytes(), context_bytes)).to_bytes())
    parsed, sealed = unpack(blob)
    assert (
        aead.unseal(BACKING_KEY, aead.Sealed.from_bytes(sealed), aad(parsed.to_bytes(), context_bytes))
        == b"secret"
    )


def test_every_single_byte_change_to_the_header_is_detected() -> None:
    header = Header("1234abcd-12ab-34cd-56ef-1234567890ab", 3)
    context = {"purpose": "test"}
    blob = _seal(header, context, b"attack at dawn", bytes(12))
    for position in range(ciphertext.HEADER_BYTES):
        for delta in range(1, 256):
            tampered = bytearray(blob)
            tampered[position] ^= delta
            with pytest.raises((InvalidCiphertextException, InvalidTag)):
                _open(bytes(tampered), context)


@settings(max_examples=300)
@given(
    header=headers,
    context=contexts,
    plaintext=st.binary(max_size=64),
    nonce=st.binary(min_size=12, max_size=12),
    data=st.data(),
)
def test_any_single_byte_change_anywhere_is_detected(
    header: Header, context: dict[str, str], plaintext: bytes, nonce: bytes, data: st.DataObject
) -> None:
    blob = _seal(header, context, plaintext, nonce)
    position = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="position")
    delta = data.draw(st.integers(min_value=1, max_value=255), label="delta")
    tampered = bytearray(blob)
    tampered[position] ^= delta
    with pytest.raises((InvalidCiphertextException, InvalidTag)):
        _open(bytes(tampered), context)


@given(header=headers, context=contexts, other=contexts)
def test_a_different_context_does_not_decrypt(
    header: Header, context: dict[str, str], other: dict[str, str]
) -> None:
    blob = _seal(header, context, b"payload", bytes(12))
    if other == context:
        assert _open(blob, other) == b"payload"
    else:
        with pytest.raises(InvalidTag):
            _open(blob, other)


def _valid_blob() -> bytes:
    return _seal(Header("1234abcd-12ab-34cd-56ef-1234567890ab", 1), {}, b"x", bytes(12))


def _with(blob: bytes, offset: int, replacement: bytes) -> bytes:
    return blob[:offset] + replacement + blob[offset + len(replacement) :]


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_valid_blob()[:49], id="one byte short of the minimum"),
        pytest.param(_valid_blob()[:22], id="header only"),
        pytest.param(_valid_blob() + bytes(6145 - len(_valid_blob())), id="over the 6144-byte model limit"),
        pytest.param(_with(_valid_blob(), 0, b"\x00"), id="version 0"),
        pytest.param(_with(_valid_blob(), 0, b"\x02"), id="version 2"),
        pytest.param(_with(_valid_blob(), 0, b"\xff"), id="version 255"),
        pytest.param(_with(_valid_blob(), 1, b"\x00"), id="key id type 0"),
        pytest.param(_with(_valid_blob(), 1, b"\x03"), id="key id type 3"),
        pytest.param(_with(_valid_blob(), 18, bytes(4)), id="backing version 0"),
    ],
)
def test_unreadable_blobs_all_raise_the_same_invalid_ciphertext(blob: bytes) -> None:
    with pytest.raises(InvalidCiphertextException) as caught:
        unpack(blob)
    assert str(caught.value) == str(ciphertext.invalid_ciphertext())
    assert caught.value.code == "InvalidCiphertextException"


def test_the_smallest_and_largest_blobs_unpack() -> None:
    header = Header("1234abcd-12ab-34cd-56ef-1234567890ab", 1)
    assert unpack(pack(header, bytes(28)))[1] == bytes(28)
    assert unpack(pack(header, bytes(ciphertext.MAX_BLOB_BYTES - 22)))[1] == bytes(6122)


@pytest.mark.parametrize(
    ("key_id", "backing_version"),
    [
        ("1234ABCD-12AB-34CD-56EF-1234567890AB", 1),  # ids are issued lowercase
        ("mrk-" + "AB" * 16, 1),
        ("alias/app", 1),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", 0),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", 2**32),
    ],
)
def test_header_refuses_what_the_service_should_never_build(key_id: str, backing_version: int) -> None:
    with pytest.raises(ValueError):
        Header(key_id, backing_version)


def test_pack_refuses_payloads_that_cannot_be_a_sealed_message() -> None:
    header = Header("1234abcd-12ab-34cd-56ef-1234567890ab", 1)
    with pytest.raises(ValueError):
        pack(header, bytes(27))
    with pytest.raises(ValueError):
        pack(header, bytes(ciphertext.MAX_BLOB_BYTES - 21))


def test_aad_is_header_then_context_and_checks_the_header_length() -> None:
    header_bytes = Header("1234abcd-12ab-34cd-56ef-1234567890ab", 1).to_bytes()
    assert aad(header_bytes, b"ctx") == header_bytes + b"ctx"
    with pytest.raises(ValueError):
        aad(header_bytes[:-1], b"")


def test_header_reports_its_key_kind_and_format() -> None:
    assert Header("mrk-" + "00" * 16, 1).multi_region
    assert not Header("1234abcd-12ab-34cd-56ef-1234567890ab", 1).multi_region
    assert Header("1234abcd-12ab-34cd-56ef-1234567890ab", 1).format_version == 1


def test_memoised_headers_are_the_headers() -> None:
    for key_id in ("1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-" + "0f" * 16):
        header = ciphertext.header(key_id, 7)
        assert header == ciphertext.Header(key_id, 7)
        raw = header.to_bytes()
        assert ciphertext.Header.from_bytes(raw) == header
        assert ciphertext.Header.from_bytes(bytearray(raw)) == header  # type: ignore[arg-type]  # callers pass either
    with pytest.raises(ValueError):
        ciphertext.header("not-a-key-id", 1)
