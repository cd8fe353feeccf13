"""The AWS Encryption SDK message format, version 2 (framed), for the two committing suites.

Written from the public specification (aws-encryption-sdk-specification: data-format/message-header,
message-body, message-body-aad, message-footer; framework/algorithm-suites, transitive-requirements,
structures). All integers are big-endian.

    header body
      1   version = 0x02
      2   algorithm suite id: 0x0478 (AES-256-GCM, HKDF-SHA512, key commitment)
                              0x0578 (the same + ECDSA P-384 / SHA-384 signature footer)
      32  message id (random)
      2   AAD length L, then L bytes: the stored encryption context
            (empty: L = 0 and nothing else; else u16 count, then per pair sorted by key bytes:
             u16 key length, key UTF-8, u16 value length, value UTF-8)
      2   encrypted data key count (> 0), then per EDK:
            u16 + provider id (UTF-8, "aws-kms"), u16 + provider info (the KMS key ARN), u16 + ciphertext
      1   content type = 0x02 (framed)
      4   frame length F (plaintext bytes per regular frame, > 0)
      32  algorithm suite data: the commit key
    header auth
      16  AES-GCM tag over no plaintext, IV = 12 zero bytes, key = the derived key,
          AAD = header body || serialized "context to only authenticate" (required keys not stored)
    body: regular frames, then exactly one final frame
      regular  u32 sequence number (from 1) | 12 IV | F bytes ciphertext | 16 tag
      final    u32 0xFFFFFFFF | u32 sequence number | 12 IV | u32 length (0..F) | ciphertext | 16 tag
      IV = the sequence number as 12 bytes; AAD = message id || "AWSKMSEncryptionClient Frame"
      (or "... Final Frame") || u32 sequence number || u64 plaintext length
    footer (0x0578 only)
      u16 length, then the DER ECDSA-Sig-Value over every byte of header and body

Keys: PRK = HKDF-Extract(SHA-512, salt = message id, data key); the encryption key is
HKDF-Expand(PRK, suite id || "DERIVEKEY", 32) and the commit key HKDF-Expand(PRK, "COMMITKEY", 32),
compared in constant time on decrypt. A signed suite puts the verification key (the compressed
P-384 point, base64) in the encryption context under ``aws-crypto-public-key``.

Version policy: version 1 messages and the non-committing suites are refused on read (the ESDK's
default commitment policy, REQUIRE_ENCRYPT_REQUIRE_DECRYPT), as are non-framed bodies.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsclient.errors import MessageError

VERSION = 0x02
CONTENT_TYPE_FRAMED = 0x02
MESSAGE_ID_BYTES = 32
COMMIT_KEY_BYTES = 32
DATA_KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
FINAL_FRAME_MARK = 0xFFFFFFFF
MAX_FRAME_LENGTH = 2**32 - 1
MAX_FRAMES = 2**32 - 1
DEFAULT_FRAME_LENGTH = 64 * 1024
MAX_ENCRYPTED_DATA_KEYS = 64
PUBLIC_KEY_CONTEXT_KEY = "aws-crypto-public-key"
RESERVED_CONTEXT_PREFIX = "aws-crypto-"
REGULAR_FRAME_AAD = b"AWSKMSEncryptionClient Frame"
FINAL_FRAME_AAD = b"AWSKMSEncryptionClient Final Frame"
_ZERO_IV = bytes(IV_BYTES)


@dataclass(frozen=True)
class Suite:
    id: int
    name: str
    signed: bool

    @property
    def id_bytes(self) -> bytes:
        return struct.pack(">H", self.id)


COMMIT_KEY = Suite(0x0478, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", signed=False)
COMMIT_KEY_ECDSA_P384 = Suite(0x0578, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384", signed=True)
SUITES = {s.id: s for s in (COMMIT_KEY, COMMIT_KEY_ECDSA_P384)}
DEFAULT_SUITE = COMMIT_KEY_ECDSA_P384


def suite_by_id(suite_id: int) -> Suite:
    suite = SUITES.get(suite_id)
    if suite is None:
        raise MessageError(f"algorithm suite 0x{suite_id:04x} is not supported (only the committing 0x0478, 0x0578)")
    return suite


@dataclass(frozen=True)
class EncryptedDataKey:
    provider_id: str
    provider_info: bytes
    ciphertext: bytes


# --- encryption context ---------------------------------------------------------------------------


def serialize_context(context: Mapping[str, str]) -> bytes:
    """The spec's serialization: empty -> b""; else count, then pairs sorted by UTF-8 key bytes."""
    if not context:
        return b""
    pairs = sorted((k.encode(), v.encode()) for k, v in context.items())
    if len(pairs) > 0xFFFF:
        raise MessageError("the encryption context has too many pairs")
    out = [struct.pack(">H", len(pairs))]
    for key, value in pairs:
        if len(key) > 0xFFFF or len(value) > 0xFFFF:
            raise MessageError("an encryption context key or value is longer than 65535 bytes")
        out.append(struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value)
    return b"".join(out)


class _Cursor:
    """Reads fields from a bytes object; running out is a MessageError (a truncated message)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Short()
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def sized(self) -> bytes:
        return self.take(self.u16())


class _Short(Exception):
    """Not enough bytes yet (inside the parser only: callers see MessageError or read more)."""


def parse_context(data: bytes) -> dict[str, str]:
    if not data:
        return {}
    cur = _Cursor(data)
    try:
        count = cur.u16()
        if count == 0:
            raise MessageError()
        out: dict[str, str] = {}
        previous: bytes | None = None
        for _ in range(count):
            key, value = cur.sized(), cur.sized()
            if previous is not None and key <= previous:  # unsorted or duplicate: not canonical
                raise MessageError()
            previous = key
            out[key.decode()] = value.decode()
    except (_Short, UnicodeDecodeError):
        raise MessageError() from None
    if cur.pos != len(data):
        raise MessageError()
    return out


# --- keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DerivedKeys:
    encryption_key: bytes = field(repr=False)
    commit_key: bytes

    def __reduce__(self) -> str:
        raise TypeError("derived keys are not picklable")


def derive_keys(suite: Suite, data_key: bytes, message_id: bytes) -> DerivedKeys:
    """HKDF-SHA512 with the message id as salt; one extract, two one-block expands."""
    if len(data_key) != DATA_KEY_BYTES or len(message_id) != MESSAGE_ID_BYTES:
        raise MessageError("wrong data key or message id length")
    prk = hmac.digest(message_id, data_key, "sha512")
    enc = hmac.digest(prk, suite.id_bytes + b"DERIVEKEY\x01", "sha512")[:DATA_KEY_BYTES]
    commit = hmac.digest(prk, b"COMMITKEY\x01", "sha512")[:COMMIT_KEY_BYTES]
    return DerivedKeys(enc, commit)


# --- header ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    suite: Suite
    message_id: bytes
    stored_context: dict[str, str]
    data_keys: tuple[EncryptedDataKey, ...]
    frame_length: int
    commit_key: bytes
    body: bytes  # the serialized header body, as read or written
    auth_tag: bytes

    @property
    def encoded(self) -> bytes:
        return self.body + self.auth_tag


def _header_body(
    suite: Suite,
    message_id: bytes,
    stored_context: Mapping[str, str],
    data_keys: Sequence[EncryptedDataKey],
    frame_length: int,
    commit_key: bytes,
) -> bytes:
    aad = serialize_context(stored_context)
    if len(aad) > 0xFFFF:
        raise MessageError("the stored encryption context is longer than 65535 bytes")
    if not data_keys or len(data_keys) > 0xFFFF:
        raise MessageError("a message needs 1 to 65535 encrypted data keys")
    parts = [bytes([VERSION]), suite.id_bytes, message_id, struct.pack(">H", len(aad)), aad]
    parts.append(struct.pack(">H", len(data_keys)))
    for edk in data_keys:
        for item in (edk.provider_id.encode(), edk.provider_info, edk.ciphertext):
            if len(item) > 0xFFFF:
                raise MessageError("an encrypted data key field is longer than 65535 bytes")
            parts.append(struct.pack(">H", len(item)) + item)
    parts.append(bytes([CONTENT_TYPE_FRAMED]) + struct.pack(">I", frame_length) + commit_key)
    return b"".join(parts)


def make_header(
    suite: Suite,
    message_id: bytes,
    keys: DerivedKeys,
    stored_context: Mapping[str, str],
    authenticated_only_context: Mapping[str, str],
    data_keys: Sequence[EncryptedDataKey],
    frame_length: int,
) -> Header:
    if not 0 < frame_length <= MAX_FRAME_LENGTH:
        raise MessageError("the frame length must be 1 to 2^32-1 bytes")
    body = _header_body(suite, message_id, stored_context, data_keys, frame_length, keys.commit_key)
    tag = AESGCM(keys.encryption_key).encrypt(_ZERO_IV, b"", body + serialize_context(authenticated_only_context))
    return Header(suite, message_id, dict(stored_context), tuple(data_keys), frame_length, keys.commit_key, body, tag)


def try_parse_header(data: bytes, *, max_data_keys: int = MAX_ENCRYPTED_DATA_KEYS) -> Header | None:
    """The header at the start of ``data``, or None when ``data`` ends before the header does."""
    cur = _Cursor(data)
    try:
        version = cur.u8()
        if version != VERSION:
            raise MessageError(
                "not an AWS Encryption SDK message of format version 2"
                + (" (version 1 messages use non-committing suites, refused)" if version == 0x01 else "")
            )
        suite = suite_by_id(cur.u16())
        message_id = cur.take(MESSAGE_ID_BYTES)
        stored = parse_context(cur.sized())
        count = cur.u16()
        if count == 0:
            raise MessageError()
        if count > max_data_keys:
            raise MessageError(f"the message has {count} encrypted data keys, more than the limit {max_data_keys}")
        edks = []
        for _ in range(count):
            try:
                provider_id = cur.sized().decode()
            except UnicodeDecodeError:
                raise MessageError() from None
            edks.append(EncryptedDataKey(provider_id, cur.sized(), cur.sized()))
        content_type = cur.u8()
        if content_type != CONTENT_TYPE_FRAMED:
            raise MessageError("only framed messages are supported")
        frame_length = cur.u32()
        if frame_length == 0:
            raise MessageError()
        commit_key = cur.take(COMMIT_KEY_BYTES)
        body_end = cur.pos
        tag = cur.take(TAG_BYTES)
    except _Short:
        return None
    return Header(suite, message_id, stored, tuple(edks), frame_length, commit_key, data[:body_end], tag)


def verify_header(header: Header, keys: DerivedKeys, authenticated_only_context: Mapping[str, str]) -> None:
    """Key commitment first (constant time), then the header tag; either failing is one MessageError."""
    if not hmac.compare_digest(keys.commit_key, header.commit_key):
        raise MessageError()
    try:
        AESGCM(keys.encryption_key).decrypt(
            _ZERO_IV, header.auth_tag, header.body + serialize_context(authenticated_only_context)
        )
    except InvalidTag:
        raise MessageError() from None


# --- body -----------------------------------------------------------------------------------------


def frame_iv(sequence: int) -> bytes:
    return b"\x00" * 8 + struct.pack(">I", sequence)


def frame_aad(message_id: bytes, sequence: int, length: int, final: bool) -> bytes:
    return message_id + (FINAL_FRAME_AAD if final else REGULAR_FRAME_AAD) + struct.pack(">IQ", sequence, length)


class FrameSealer:
    """Seals frames of one message in order (sequence numbers are kept here, never passed in)."""

    def __init__(self, header: Header, keys: DerivedKeys) -> None:
        self._aead = AESGCM(keys.encryption_key)
        self._message_id = header.message_id
        self.frame_length = header.frame_length
        self._sequence = 0
        self.finished = False

    def seal(self, plaintext: bytes | memoryview, *, final: bool) -> bytes:
        if self.finished:
            raise MessageError("the final frame was already written")
        n = len(plaintext)
        if n > self.frame_length or (not final and n != self.frame_length):
            raise MessageError("a regular frame holds exactly the frame length, the final one at most that")
        self._sequence += 1
        if self._sequence > MAX_FRAMES:
            raise MessageError("the message would exceed 2^32-1 frames")
        seq = self._sequence
        iv = frame_iv(seq)
        sealed = self._aead.encrypt(iv, plaintext, frame_aad(self._message_id, seq, n, final))
        if final:
            self.finished = True
            return struct.pack(">II", FINAL_FRAME_MARK, seq) + iv + struct.pack(">I", n) + sealed
        return struct.pack(">I", seq) + iv + sealed


class FrameOpener:
    """Opens the frames of one message in order; ``open_next`` takes the bytes after the header.

    Returns (plaintext, bytes consumed, final?), or None when ``data`` holds no whole frame yet.
    """

    def __init__(self, header: Header, keys: DerivedKeys) -> None:
        self._aead = AESGCM(keys.encryption_key)
        self._message_id = header.message_id
        self.frame_length = header.frame_length
        self._sequence = 0
        self.finished = False

    def regular_frame_bytes(self) -> int:
        return 4 + IV_BYTES + self.frame_length + TAG_BYTES

    def open_next(self, data: bytes | memoryview, offset: int = 0) -> tuple[bytes, int, bool] | None:
        if self.finished:
            raise MessageError()
        avail = len(data) - offset
        if avail < 4:
            return None
        (mark,) = struct.unpack_from(">I", data, offset)
        expected = self._sequence + 1
        if mark == FINAL_FRAME_MARK:
            head = 8 + IV_BYTES + 4
            if avail < head:
                return None
            seq, length = struct.unpack_from(">I", data, offset + 4)[0], struct.unpack_from(">I", data, offset + 20)[0]
            iv = bytes(data[offset + 8 : offset + 20])
            if seq != expected or length > self.frame_length or iv != frame_iv(seq):
                raise MessageError()
            total = head + length + TAG_BYTES
            if avail < total:
                return None
            sealed = data[offset + head : offset + total]
            final = True
        else:
            if mark != expected or expected > MAX_FRAMES:
                raise MessageError()  # reordered, dropped or repeated frame
            total = self.regular_frame_bytes()
            if avail < total:
                return None
            if bytes(data[offset + 4 : offset + 16]) != frame_iv(mark):
                raise MessageError()
            length = self.frame_length
            sealed = data[offset + 16 : offset + total]
            seq = mark
            final = False
        try:
            plain = self._aead.decrypt(frame_iv(seq), sealed, frame_aad(self._message_id, seq, length, final))
        except InvalidTag:
            raise MessageError() from None
        self._sequence = seq
        self.finished = final
        return plain, total, final


# --- footer ---------------------------------------------------------------------------------------


def encode_footer(signature: bytes) -> bytes:
    return struct.pack(">H", len(signature)) + signature


def try_parse_footer(data: bytes | memoryview, offset: int = 0) -> tuple[bytes, int] | None:
    if len(data) - offset < 2:
        return None
    (n,) = struct.unpack_from(">H", data, offset)
    if len(data) - offset < 2 + n:
        return None
    return bytes(data[offset + 2 : offset + 2 + n]), 2 + n
