"""The AWS Encryption SDK message format v2: round trips at the frame edges, and every kind of
tampering refused with no plaintext released (the in-memory KMS twin serves the data keys)."""

from __future__ import annotations

import io
import struct

import pytest

import kmsclient
from kmsclient import message
from kmsclient.errors import MaterialsError, MessageError, RequiredContextError, SignatureError
from kmsclient.message import COMMIT_KEY, COMMIT_KEY_ECDSA_P384, IV_BYTES, TAG_BYTES, Suite
from tests.support.fake_kms import FakeKms

FRAME = 64
SUITES = [COMMIT_KEY, COMMIT_KEY_ECDSA_P384]
CONTEXT = {"app": "orders", "tenant": "red"}


@pytest.fixture
def kms() -> FakeKms:
    return FakeKms(("us-east-1", "eu-west-1"))


async def _keyring(kms: FakeKms) -> kmsclient.AwsKmsKeyring:
    return kmsclient.AwsKmsKeyring(kms.client(), kms.create_key("us-east-1"))


async def _encrypt(
    kms: FakeKms, data: bytes, suite: Suite, context: dict[str, str] | None = None
) -> tuple[bytes, kmsclient.AwsKmsKeyring]:
    keyring = await _keyring(kms)
    blob = await kmsclient.encrypt(keyring, data, encryption_context=CONTEXT if context is None else context,
                                   suite=suite, frame_length=FRAME)  # fmt: skip
    return blob, keyring


def _header_len(blob: bytes) -> int:
    header = message.try_parse_header(blob)
    assert header is not None
    return len(header.encoded)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"0x{s.id:04x}")
@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 5 * FRAME + 7])
async def test_round_trip_at_frame_edges(kms: FakeKms, suite: Suite, size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    blob, keyring = await _encrypt(kms, data, suite)
    assert blob[0] == 0x02 and struct.unpack(">H", blob[1:3])[0] == suite.id
    out = await kmsclient.decrypt(keyring, blob, encryption_context=CONTEXT)
    assert out.plaintext == data
    assert out.info.encryption_context == CONTEXT  # the verification key is not shown
    header = message.try_parse_header(blob)
    assert header is not None and header.frame_length == FRAME
    assert [e.provider_id for e in header.data_keys] == ["aws-kms"]
    assert header.data_keys[0].provider_info.decode() == keyring.key_id
    assert (message.PUBLIC_KEY_CONTEXT_KEY in header.stored_context) is suite.signed


async def test_a_plaintext_of_whole_frames_ends_with_a_full_final_frame(kms: FakeKms) -> None:
    blob, _ = await _encrypt(kms, b"x" * (2 * FRAME), COMMIT_KEY)
    body = blob[_header_len(blob) :]
    regular = 4 + IV_BYTES + FRAME + TAG_BYTES
    assert struct.unpack(">I", body[:4])[0] == 1
    final = body[regular:]
    assert struct.unpack(">II", final[:8]) == (0xFFFFFFFF, 2)
    assert struct.unpack(">I", final[8 + IV_BYTES : 12 + IV_BYTES])[0] == FRAME
    assert len(final) == 8 + IV_BYTES + 4 + FRAME + TAG_BYTES


def _frames(blob: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(header, regular frames..., rest = final frame + footer) of a message with FRAME-sized frames."""
    h = _header_len(blob)
    regular = 4 + IV_BYTES + FRAME + TAG_BYTES
    frames = []
    pos = h
    while struct.unpack(">I", blob[pos : pos + 4])[0] != 0xFFFFFFFF:
        frames.append(blob[pos : pos + regular])
        pos += regular
    return blob[:h], frames, blob[pos:]


def _tamperings(blob: bytes) -> dict[str, bytes]:
    header, frames, rest = _frames(blob)
    flipped_body = bytearray(blob)
    flipped_body[len(header) + 20] ^= 0x01
    flipped_tag = bytearray(blob)
    flipped_tag[len(header) - 1] ^= 0x80
    flipped_last = bytearray(blob)
    flipped_last[-1] ^= 0x01
    return {
        "truncated inside the final frame": blob[:-40],
        "truncated after a regular frame": header + frames[0],
        "truncated to the header": header,
        "final frame dropped": header + b"".join(frames),
        "a regular frame dropped": header + b"".join(frames[1:]) + rest,
        "frames reordered": header + frames[1] + frames[0] + b"".join(frames[2:]) + rest,
        "a frame repeated": header + frames[0] + frames[0] + b"".join(frames[1:]) + rest,
        "a bit flipped in a frame": bytes(flipped_body),
        "a bit flipped in the header tag": bytes(flipped_tag),
        "a bit flipped in the last byte": bytes(flipped_last),
        "trailing bytes": blob + b"\x00",
    }


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: f"0x{s.id:04x}")
async def test_tampered_messages_are_refused_and_release_nothing(kms: FakeKms, suite: Suite) -> None:
    data = b"secret plaintext " * 20
    blob, keyring = await _encrypt(kms, data, suite)
    for what, bad in _tamperings(blob).items():
        out = io.BytesIO()
        with pytest.raises(MessageError):
            await kmsclient.decrypt_stream(keyring, io.BytesIO(bad), out, encryption_context=CONTEXT)
        assert out.getvalue() == b"", what
        with pytest.raises(MessageError):
            await kmsclient.decrypt(keyring, bad, encryption_context=CONTEXT)


async def test_a_changed_header_is_refused(kms: FakeKms) -> None:
    blob, keyring = await _encrypt(kms, b"data", COMMIT_KEY)
    header = message.try_parse_header(blob)
    assert header is not None
    # The stored context rewritten (same length, so it still parses): KMS refuses the data key
    # (the context is bound to it), and the header tag would refuse it after that.
    changed = blob.replace(b"orders", b"ordeRS", 1)
    assert changed != blob
    with pytest.raises((MessageError, MaterialsError)):
        await kmsclient.decrypt(keyring, changed)
    # The frame length changed: the commitment / header tag catches it.
    body_end = len(header.body)
    frame_at = body_end - 32 - 4
    bumped = blob[:frame_at] + struct.pack(">I", FRAME + 1) + blob[frame_at + 4 :]
    with pytest.raises(MessageError):
        await kmsclient.decrypt(keyring, bumped)
    # Another message's commit key: refused before anything is opened.
    other, _ = await _encrypt(kms, b"data", COMMIT_KEY)
    commit_at = body_end - 32
    swapped = blob[:commit_at] + other[commit_at : commit_at + 32] + blob[commit_at + 32 :]
    with pytest.raises(MessageError):
        await kmsclient.decrypt(keyring, swapped)


async def test_a_bad_signature_is_a_signature_error(kms: FakeKms) -> None:
    blob, keyring = await _encrypt(kms, b"signed data", COMMIT_KEY_ECDSA_P384)
    bad = bytearray(blob)
    bad[-5] ^= 0x01
    with pytest.raises(SignatureError):
        await kmsclient.decrypt(keyring, bytes(bad))


async def test_streaming_release_is_explicit(kms: FakeKms) -> None:
    data = b"y" * (4 * FRAME)
    blob, keyring = await _encrypt(kms, data, COMMIT_KEY_ECDSA_P384)
    bad = bytearray(blob)
    bad[-5] ^= 0x01
    out = io.BytesIO()
    with pytest.raises(SignatureError):
        await kmsclient.decrypt_stream(keyring, io.BytesIO(bytes(bad)), out, release="streaming")
    assert out.getvalue() == data  # released frame by frame, as asked; the error still comes
    out = io.BytesIO()
    with pytest.raises(SignatureError):
        await kmsclient.decrypt_stream(keyring, io.BytesIO(bytes(bad)), out)
    assert out.getvalue() == b""


async def test_wrong_or_missing_context_is_refused(kms: FakeKms) -> None:
    blob, keyring = await _encrypt(kms, b"data", COMMIT_KEY)
    with pytest.raises(MaterialsError):
        await kmsclient.decrypt(keyring, blob, encryption_context={"app": "other"})
    with pytest.raises(MaterialsError):  # a pair the message never had: KMS refuses the data key
        await kmsclient.decrypt(keyring, blob, encryption_context={"extra": "pair"})
    assert (await kmsclient.decrypt(keyring, blob, encryption_context={"app": "orders"})).plaintext == b"data"


async def test_required_context_is_authenticated_not_stored(kms: FakeKms) -> None:
    keyring = await _keyring(kms)
    cmm = kmsclient.RequiredEncryptionContextCmm(keyring, ["tenant"])
    blob = await kmsclient.encrypt(cmm, b"data", encryption_context=CONTEXT)
    header = message.try_parse_header(blob)
    assert header is not None and "tenant" not in header.stored_context and header.stored_context["app"] == "orders"
    with pytest.raises(RequiredContextError):
        await kmsclient.encrypt(cmm, b"data", encryption_context={"app": "orders"})
    with pytest.raises(RequiredContextError):
        await kmsclient.decrypt(cmm, blob, encryption_context={"app": "orders"})
    with pytest.raises(RequiredContextError):
        await kmsclient.decrypt(cmm, blob)
    with pytest.raises(MaterialsError):  # the KMS-bound context differs: the data key does not open
        await kmsclient.decrypt(cmm, blob, encryption_context={"tenant": "blue"})
    assert (await kmsclient.decrypt(cmm, blob, encryption_context={"tenant": "red"})).plaintext == b"data"


async def test_reserved_context_keys_are_refused(kms: FakeKms) -> None:
    keyring = await _keyring(kms)
    with pytest.raises(MaterialsError):
        await kmsclient.encrypt(keyring, b"x", encryption_context={"aws-crypto-public-key": "mine"})


def test_context_serialization_is_sorted_by_utf8_bytes_and_refuses_non_canonical_input() -> None:
    encoded = message.serialize_context({"b": "2", "a": "1", "é": "3"})
    assert encoded == b"\x00\x03" + b"\x00\x01a\x00\x011" + b"\x00\x01b\x00\x012" + b"\x00\x02\xc3\xa9\x00\x013"
    assert message.parse_context(encoded) == {"a": "1", "b": "2", "é": "3"}
    assert message.serialize_context({}) == b""
    unsorted = b"\x00\x02" + b"\x00\x01b\x00\x012" + b"\x00\x01a\x00\x011"
    duplicate = b"\x00\x02" + b"\x00\x01a\x00\x011" + b"\x00\x01a\x00\x012"
    for bad in (
        unsorted,
        duplicate,
        b"\x00\x00",
        b"\x00\x01\x00\x05ab",
        encoded + b"x",
        b"\x00\x01\x00\x01\xff\x00\x00",
    ):
        with pytest.raises(MessageError):
            message.parse_context(bad)


def test_key_derivation_matches_rfc5869_hkdf_sha512() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    data_key, message_id = bytes(range(32)), bytes(range(100, 132))
    keys = message.derive_keys(COMMIT_KEY_ECDSA_P384, data_key, message_id)
    enc = HKDF(hashes.SHA512(), 32, salt=message_id, info=b"\x05\x78DERIVEKEY").derive(data_key)
    commit = HKDF(hashes.SHA512(), 32, salt=message_id, info=b"COMMITKEY").derive(data_key)
    assert (keys.encryption_key, keys.commit_key) == (enc, commit)


def test_headers_of_other_versions_and_suites_are_refused_by_name() -> None:
    with pytest.raises(MessageError, match="version 1"):
        message.try_parse_header(b"\x01\x80\x03\x78" + bytes(60))
    with pytest.raises(MessageError, match="0x0378"):
        message.try_parse_header(b"\x02\x03\x78" + bytes(60))
    assert message.try_parse_header(b"\x02\x04\x78" + bytes(10)) is None  # not enough bytes yet


async def test_too_many_encrypted_data_keys_are_refused(kms: FakeKms) -> None:
    client = kms.client()
    rings = [kmsclient.AwsKmsKeyring(client, kms.create_key("us-east-1")) for _ in range(4)]
    multi = kmsclient.MultiKeyring(rings[0], rings[1:])
    blob = await kmsclient.encrypt(multi, b"data")
    with pytest.raises(MessageError, match="encrypted data keys"):
        await kmsclient.decrypt_stream(rings[2], io.BytesIO(blob), io.BytesIO(), max_encrypted_data_keys=3)
    assert (await kmsclient.decrypt(rings[3], blob)).plaintext == b"data"
