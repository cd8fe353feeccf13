"""RKE1, the message format of kmsclient 1: still read, written only for tests and conversion.

kmsclient 2 writes the AWS Encryption SDK format (``message.py``). Files written by kmsclient 1
keep opening: ``decrypt`` (and ``kmsclient decrypt``) recognise the RKE1 magic and come here.

One ``GenerateDataKey`` call per message gives a fresh 256-bit data key and its KMS ciphertext
blob; the data is sealed locally with AES-256-GCM in segments, and only the blob is stored.

Message format, version 1 (all integers big-endian):

    header:
      4 bytes   magic b"RKE1"
      1 byte    version = 1
      2 bytes   length of the KMS key ARN, then the ARN (ASCII)        -- routes the Decrypt call
      2 bytes   length of the wrapped data key, then the KMS ciphertext blob
      4 bytes   segment size S (plaintext bytes per segment)
      8 bytes   random nonce prefix P
    segments i = 0, 1, ...:
      AES-256-GCM(data key, nonce = P || u32 i, aad = SHA-256(header) || u32 i || final flag byte)
      every segment but the last carries exactly S plaintext bytes (S + 16 bytes on the wire);
      the last carries 0..S bytes and has the final flag 1.

The encryption context is not stored: the caller gives it to decrypt, where KMS checks it.
The Decrypt call goes to the region of the ARN in the header (a multi-region key: the nearest
replica), never elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Mapping
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsclient.client import KmsClient
from kmsclient.errors import EnvelopeError, KmsClientError
from kmsclient.routing import parse_key_id

MAGIC = b"RKE1"
VERSION = 1
SEGMENT_BYTES = 64 * 1024
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 8
MAX_SEGMENTS = 2**32 - 1

Progress = Callable[[int], None]


def _segment_aad(header_hash: bytes, index: int, final: bool) -> bytes:
    return header_hash + struct.pack(">IB", index, 1 if final else 0)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _header(key_arn: str, wrapped: bytes, segment_bytes: int, prefix: bytes) -> bytes:
    arn = key_arn.encode()
    return b"".join(
        [
            MAGIC,
            bytes([VERSION]),
            struct.pack(">H", len(arn)),
            arn,
            struct.pack(">H", len(wrapped)),
            wrapped,
            struct.pack(">I", segment_bytes),
            prefix,
        ]
    )


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise EnvelopeError()
    return data


def _read_header(src: BinaryIO) -> tuple[bytes, str, bytes, int, bytes]:
    if _read_exact(src, 4) != MAGIC or _read_exact(src, 1)[0] != VERSION:
        raise EnvelopeError("not a kmsclient 1 (RKE1) message")
    (arn_len,) = struct.unpack(">H", _read_exact(src, 2))
    try:
        arn = _read_exact(src, arn_len).decode("ascii")
    except UnicodeDecodeError:
        raise EnvelopeError() from None
    (wrapped_len,) = struct.unpack(">H", _read_exact(src, 2))
    wrapped = _read_exact(src, wrapped_len)
    (segment_bytes,) = struct.unpack(">I", _read_exact(src, 4))
    if not 1 <= segment_bytes <= 64 * 1024 * 1024:
        raise EnvelopeError()
    prefix = _read_exact(src, NONCE_PREFIX_BYTES)
    return _header(arn, wrapped, segment_bytes, prefix), arn, wrapped, segment_bytes, prefix


async def encrypt_stream(
    client: KmsClient,
    key_id: str,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    context: Mapping[str, str] | None = None,
    segment_bytes: int = SEGMENT_BYTES,
    progress: Progress | None = None,
) -> int:
    """Seal ``src`` into ``dst``; return the number of plaintext bytes sealed."""
    made = await client.generate_data_key(key_id, context)
    data_key, wrapped, key_arn = made.plaintext, made.ciphertext, made.key_arn
    aead = AESGCM(data_key)
    prefix = os.urandom(NONCE_PREFIX_BYTES)
    header = _header(key_arn, wrapped, segment_bytes, prefix)
    header_hash = hashlib.sha256(header).digest()
    dst.write(header)
    total = 0
    index = 0
    current = src.read(segment_bytes)
    while True:
        following = src.read(segment_bytes) if len(current) == segment_bytes else b""
        final = not following
        dst.write(aead.encrypt(_nonce(prefix, index), current, _segment_aad(header_hash, index, final)))
        total += len(current)
        if progress:
            progress(total)
        if final:
            return total
        index += 1
        if index > MAX_SEGMENTS:
            raise EnvelopeError("message too long for one envelope")
        current = following


async def decrypt_stream(
    client: KmsClient,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    context: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Open an envelope from ``src`` into ``dst``.

    Each segment is authenticated before it is written; a truncated message is detected at
    its end, so on any error the caller must discard what was written (the CLI writes to a
    temporary file and renames it only on success).
    """
    header, arn, wrapped, segment_bytes, prefix = _read_header(src)
    try:
        parse_key_id(arn)
    except KmsClientError:
        raise EnvelopeError() from None
    data_key = (await client.decrypt(wrapped, context, route_key_id=arn)).plaintext
    aead = AESGCM(data_key)
    header_hash = hashlib.sha256(header).digest()
    wire = segment_bytes + TAG_BYTES
    total = 0
    index = 0
    current = src.read(wire)
    while True:
        following = src.read(wire) if len(current) == wire else b""
        final = not following
        if len(current) < TAG_BYTES:
            raise EnvelopeError()
        try:
            plain = aead.decrypt(_nonce(prefix, index), current, _segment_aad(header_hash, index, final))
        except InvalidTag as exc:
            raise EnvelopeError() from exc
        dst.write(plain)
        total += len(plain)
        if progress:
            progress(total)
        if final:
            return total
        index += 1
        current = following


async def encrypt(client: KmsClient, key_id: str, plaintext: bytes, context: Mapping[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    await encrypt_stream(client, key_id, io.BytesIO(plaintext), out, context=context)
    return out.getvalue()


async def decrypt(client: KmsClient, message: bytes, context: Mapping[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    await decrypt_stream(client, io.BytesIO(message), out, context=context)
    return out.getvalue()
