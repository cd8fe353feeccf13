"""Encrypt and decrypt messages of the AWS Encryption SDK format, streaming, in bounded memory.

``encrypt_stream`` reads the plaintext one frame at a time and writes header, frames and (for a
signed suite) the footer. ``decrypt_stream`` reads the header, asks the CMM for the data key,
checks key commitment and the header tag, then opens frame after frame.

When is plaintext released? By default (``release="verified"``) nothing reaches ``dst`` until the
whole message is authenticated: the final frame opened and, for a signed suite, the signature
verified. Until then the plaintext is staged in a temporary spool (memory up to ``SPOOL_MEMORY_BYTES``,
then an unlinked temporary file), so memory stays bounded for any message size. With
``release="streaming"`` each frame's plaintext is written as soon as the frame's tag verifies;
a later failure (a truncated message, a bad signature) still raises, but what was written
before it must then be discarded by the caller. ``decrypt_file`` writes into a temporary file
beside the destination and renames it only on success, so it streams without staging.

Messages of kmsclient 1 (RKE1) are recognised by their magic and opened by ``rke1``.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, cast

from kmsclient import rke1
from kmsclient.client import KmsClient
from kmsclient.cmm import Cmm, DecryptionRequest, EncryptionRequest, as_cmm
from kmsclient.errors import ConfigurationError, MessageError
from kmsclient.keyrings import Keyring
from kmsclient.message import (
    DEFAULT_FRAME_LENGTH,
    MAX_ENCRYPTED_DATA_KEYS,
    MESSAGE_ID_BYTES,
    PUBLIC_KEY_CONTEXT_KEY,
    FrameOpener,
    FrameSealer,
    Header,
    Suite,
    derive_keys,
    encode_footer,
    make_header,
    try_parse_footer,
    try_parse_header,
    verify_header,
)
from kmsclient.signature import Verifier

Progress = Callable[[int], None]


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


Release = Literal["verified", "streaming"]
READ_CHUNK_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
MAX_READ_FRAME_LENGTH = 64 * 1024 * 1024


@dataclass(frozen=True)
class MessageInfo:
    """What a decrypted message said about itself."""

    format: str  # "esdk-v2" or "rke1"
    suite: Suite | None
    encryption_context: dict[str, str]
    key_arns: tuple[str, ...]
    plaintext_bytes: int
    frame_length: int = 0


@dataclass(frozen=True)
class Decrypted:
    plaintext: bytes = field(repr=False)
    info: MessageInfo


def _read_full(src: Readable, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (pipes return what they have)."""
    first = src.read(n)
    if not first or len(first) == n:
        return first or b""
    parts = [first]
    got = len(first)
    while got < n:
        more = src.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


async def encrypt_stream(
    materials_source: Keyring | Cmm,
    src: Readable,
    dst: Writable,
    *,
    encryption_context: Mapping[str, str] | None = None,
    suite: Suite | None = None,
    frame_length: int = DEFAULT_FRAME_LENGTH,
    plaintext_length: int | None = None,
    progress: Progress | None = None,
) -> MessageInfo:
    """Encrypt everything ``src`` holds into ``dst``; returns what was written about the message."""
    cmm = as_cmm(materials_source)
    materials = await cmm.get_encryption_materials(
        EncryptionRequest(dict(encryption_context or {}), suite, plaintext_length)
    )
    if materials.data_key is None:
        raise MessageError("the materials hold no data key")
    message_id = os.urandom(MESSAGE_ID_BYTES)
    keys = derive_keys(materials.suite, materials.data_key, message_id)
    required = materials.required_context_keys
    stored = {k: v for k, v in materials.encryption_context.items() if k not in required}
    auth_only = {k: v for k, v in materials.encryption_context.items() if k in required}
    header = make_header(
        materials.suite, message_id, keys, stored, auth_only, materials.encrypted_data_keys, frame_length
    )
    signer = None
    if materials.suite.signed:
        if materials.signing_key is None:
            raise MessageError("a signed suite needs a signing key")
        signer = materials.signing_key.signer()
    sealer = FrameSealer(header, keys)

    def emit(data: bytes) -> None:
        if signer is not None:
            signer.update(data)
        dst.write(data)

    emit(header.encoded)
    total = 0
    current = _read_full(src, frame_length)
    while True:
        following = _read_full(src, frame_length) if len(current) == frame_length else b""
        final = not following
        emit(sealer.seal(current, final=final))
        total += len(current)
        if plaintext_length is not None and total > plaintext_length:
            raise ConfigurationError("the plaintext is longer than the length given for it")
        if progress is not None:
            progress(total)
        if final:
            break
        current = following
    if signer is not None:
        dst.write(encode_footer(signer.finish()))
    return MessageInfo(
        "esdk-v2",
        materials.suite,
        dict(materials.encryption_context),
        tuple(e.provider_info.decode(errors="replace") for e in materials.encrypted_data_keys),
        total,
        frame_length,
    )


class _Buffered:
    """A read buffer over ``src``: the parser looks at ``view()`` and drops what it consumed.

    The buffer is immutable ``bytes`` (views of it stay valid while it is replaced); a refill
    copies only the unconsumed tail, less than one frame.
    """

    def __init__(self, src: Readable) -> None:
        self.src = src
        self.buf = b""
        self.start = 0
        self.eof = False

    def available(self) -> int:
        return len(self.buf) - self.start

    def fill(self, want: int = READ_CHUNK_BYTES) -> bool:
        """Read more; False at the end of the input."""
        if self.eof:
            return False
        chunk = self.src.read(max(want, READ_CHUNK_BYTES))
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.start :] + chunk if self.start < len(self.buf) else chunk
        self.start = 0
        return True

    def view(self) -> memoryview:
        return memoryview(self.buf)[self.start :]

    def consume(self, n: int) -> memoryview:
        out = memoryview(self.buf)[self.start : self.start + n]
        self.start += n
        return out


async def decrypt_stream(
    materials_source: Keyring | Cmm,
    src: Readable,
    dst: Writable,
    *,
    encryption_context: Mapping[str, str] | None = None,
    release: Release = "verified",
    progress: Progress | None = None,
    max_encrypted_data_keys: int = MAX_ENCRYPTED_DATA_KEYS,
    legacy_client: KmsClient | None = None,
) -> MessageInfo:
    """Decrypt the message ``src`` holds into ``dst``; see the module docstring for ``release``."""
    if release not in ("verified", "streaming"):
        raise ConfigurationError("release is 'verified' or 'streaming'")
    if release == "streaming":
        return await _decrypt_into(
            materials_source, src, dst, encryption_context, progress, max_encrypted_data_keys, legacy_client
        )
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        info = await _decrypt_into(
            materials_source,
            src,
            spool,
            encryption_context,
            progress,
            max_encrypted_data_keys,
            legacy_client,
        )
        spool.seek(0)
        while chunk := spool.read(READ_CHUNK_BYTES):
            dst.write(chunk)
    return info


async def _decrypt_into(
    materials_source: Keyring | Cmm,
    src: Readable,
    dst: Writable,
    encryption_context: Mapping[str, str] | None,
    progress: Progress | None,
    max_edks: int,
    legacy_client: KmsClient | None,
) -> MessageInfo:
    reader = _Buffered(src)
    reader.fill(4096)
    if bytes(reader.view()[:4]) == rke1.MAGIC:
        client = legacy_client or getattr(materials_source, "client", None)
        if not isinstance(client, KmsClient):
            raise ConfigurationError("a kmsclient 1 (RKE1) message needs a KmsClient to decrypt")
        rest = _Rest(reader)
        total = await rke1.decrypt_stream(
            client, cast(BinaryIO, rest), cast(BinaryIO, dst), context=encryption_context, progress=progress
        )
        return MessageInfo("rke1", None, dict(encryption_context or {}), (), total)

    header: Header | None = None
    while header is None:
        header = try_parse_header(bytes(reader.view()), max_data_keys=max_edks)
        if header is None and (reader.available() > MAX_HEADER_BYTES or not reader.fill()):
            raise MessageError("the message ends inside its header" if reader.eof else "the header is too long")
    reader.consume(len(header.encoded))
    if header.frame_length > MAX_READ_FRAME_LENGTH:
        raise MessageError(f"frames longer than {MAX_READ_FRAME_LENGTH} bytes are refused (memory is bounded)")
    cmm = as_cmm(materials_source)
    materials = await cmm.decrypt_materials(
        DecryptionRequest(header.suite, header.data_keys, header.stored_context, dict(encryption_context or {}))
    )
    if materials.data_key is None:
        raise MessageError("the materials hold no data key")
    keys = derive_keys(header.suite, materials.data_key, header.message_id)
    auth_only = {k: v for k, v in materials.encryption_context.items() if k in materials.required_context_keys}
    auth_only = {k: v for k, v in auth_only.items() if k not in header.stored_context}
    verify_header(header, keys, auth_only)

    verifier = None
    if header.suite.signed:
        public = header.stored_context.get(PUBLIC_KEY_CONTEXT_KEY)
        if public is None:
            raise MessageError()
        verifier = Verifier(public)
        verifier.update(header.encoded)
    opener = FrameOpener(header, keys)
    total = 0
    while not opener.finished:
        view = reader.view()
        opened = opener.open_next(view)
        if opened is None:
            if not reader.fill(opener.regular_frame_bytes()):
                raise MessageError("the message is truncated")
            continue
        plain, used, _final = opened
        frame_bytes = reader.consume(used)
        if verifier is not None:
            verifier.update(frame_bytes)
        dst.write(plain)
        total += len(plain)
        if progress is not None:
            progress(total)
    if verifier is not None:
        while (footer := try_parse_footer(reader.view())) is None:
            if not reader.fill(4096):
                raise MessageError("the message is truncated")
        signature, used = footer
        reader.consume(used)
        verifier.verify(signature)
    if reader.available() or reader.fill(1):
        raise MessageError("the message has trailing bytes after its end")
    context = {k: v for k, v in materials.encryption_context.items() if k != PUBLIC_KEY_CONTEXT_KEY}
    arns = tuple(e.provider_info.decode(errors="replace") for e in header.data_keys if e.provider_id == "aws-kms")
    return MessageInfo("esdk-v2", header.suite, context, arns, total, header.frame_length)


class _Rest(io.RawIOBase):
    """What remains of a ``_Buffered`` reader, as a file (for the RKE1 reader)."""

    def __init__(self, reader: _Buffered) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        r = self._reader
        if n is None or n < 0:
            while r.fill():
                pass
            n = r.available()
        while r.available() < n and r.fill(n):
            pass
        return bytes(r.consume(min(n, r.available())))


# --- one-shot and file helpers -----------------------------------------------------------------


async def encrypt(
    materials_source: Keyring | Cmm,
    plaintext: bytes,
    *,
    encryption_context: Mapping[str, str] | None = None,
    suite: Suite | None = None,
    frame_length: int = DEFAULT_FRAME_LENGTH,
) -> bytes:
    out = io.BytesIO()
    await encrypt_stream(
        materials_source, io.BytesIO(plaintext), out, encryption_context=encryption_context, suite=suite,
        frame_length=frame_length, plaintext_length=len(plaintext),
    )  # fmt: skip
    return out.getvalue()


async def decrypt(
    materials_source: Keyring | Cmm,
    message: bytes,
    *,
    encryption_context: Mapping[str, str] | None = None,
    legacy_client: KmsClient | None = None,
) -> Decrypted:
    """Decrypt a whole message held in memory; returns the plaintext only once all of it verified."""
    out = io.BytesIO()
    info = await _decrypt_into(
        materials_source, io.BytesIO(message), out, encryption_context, None, MAX_ENCRYPTED_DATA_KEYS, legacy_client
    )
    return Decrypted(out.getvalue(), info)


async def decrypt_file(
    materials_source: Keyring | Cmm,
    src_path: str | Path,
    dst_path: str | Path,
    *,
    encryption_context: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    legacy_client: KmsClient | None = None,
) -> MessageInfo:
    """Decrypt into a temporary file beside ``dst_path``, renamed over it only once all verified."""
    dst = Path(dst_path)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with open(src_path, "rb") as src, os.fdopen(fd, "wb") as out:  # noqa: ASYNC230 (file I/O is the job)
            info = await _decrypt_into(
                materials_source, src, out, encryption_context, progress, MAX_ENCRYPTED_DATA_KEYS, legacy_client
            )
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise
    return info
