"""Ciphertext blob, format version 1: the ``CiphertextBlob`` that Encrypt returns and Decrypt reads.

Layout (all integers big-endian; 50 bytes of overhead around the encrypted payload):

    offset  bytes  field
    0       1      format version = 0x01
    1       1      key id type: 0x01 single-Region (UUID), 0x02 multi-Region (mrk-)
    2       16     key id, binary: the UUID's 16 bytes, or the 32 hex digits after "mrk-"
    18      4      backing key version number, uint32, >= 1
    ---------------- header: bytes 0..21 (HEADER_BYTES = 22), authenticated as AAD
    22      12     AES-256-GCM nonce
    34      n      AES-256-GCM ciphertext of the plaintext (n = plaintext length)
    34+n    16     AES-256-GCM tag

    AAD = header bytes (22) || canonical encryption context (context.py)

Why these choices:

- Decrypt needs no KeyId: the header names the KMS key and the backing version, so the
  service finds the (cached) backing key from the blob alone, as AWS does for symmetric keys.
  A multi-Region key keeps its id in every Region, so its blobs decrypt wherever a replica is.
- Key id in 16 binary bytes plus a type byte instead of 36 ASCII characters: both id forms
  carry exactly 128 bits, the binary form has one spelling per key (no case variants to
  compare) and it saves 19 bytes per blob. Any 16 bytes decode to a well-formed id, so the
  only malformed id is an unknown type byte.
- The header is the AAD prefix: changing the version, the key id or the backing version
  makes the tag check fail, so a blob cannot be re-pointed at another key or version. The
  header has a fixed length, so ``header || context`` is unambiguous without a separator.
- The nonce is outside the header because the crypto layer chooses it while sealing (STYLE.md
  item 3: callers never pick a nonce), after the AAD is fixed. It needs no AAD: GCM derives
  its counter blocks and tag mask from the nonce, so a changed nonce fails the tag check.
  The bytes after the header are exactly ``crypto.aead.Sealed.to_bytes()`` (nonce || ct+tag).
- Size: the model caps ``CiphertextType`` at 6144 bytes; Encrypt's plaintext is capped at
  4096 bytes (``PlaintextType``), so a v1 blob is at most 4146 bytes and always fits.

Version policy: byte 0 selects the layout. ``unpack`` accepts only versions it knows and
rejects every other value, so an old node never misreads a newer blob. A new layout gets a
new number and its own parser here; version 1 is never changed, and every v1 blob ever
issued stays decryptable. The canonical encryption context encoding is part of version 1.

Every failure to read a blob, whatever the cause (unknown version, short or oversized blob,
unknown key id type, version 0), raises the same ``InvalidCiphertextException`` with no
message of its own, as AWS answers (its response carries only the ``__type``), so a probe
cannot tell a malformed header from a wrong key or a wrong context (STYLE.md item 4).
``invalid_ciphertext()`` builds that one exception for the service's AEAD failures too.
"""

from __future__ import annotations

import functools
import struct
import uuid
from dataclasses import dataclass

from regiond.domain.ids import MRK_PREFIX, KeyIdKind, is_valid_key_id, key_id_kind
from regiond.errors import InvalidCiphertextException

__all__ = [
    "BACKING_VERSION_BYTES",
    "FORMAT_VERSION_1",
    "HEADER_BYTES",
    "KEY_ID_BYTES",
    "KEY_ID_TYPE_MULTI_REGION",
    "KEY_ID_TYPE_SINGLE_REGION",
    "MAX_BACKING_VERSION",
    "MAX_BLOB_BYTES",
    "MIN_BLOB_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "Header",
    "aad",
    "header",
    "header_bytes",
    "invalid_ciphertext",
    "pack",
    "pack_bytes",
    "unpack",
]

FORMAT_VERSION_1 = 0x01
KEY_ID_TYPE_SINGLE_REGION = 0x01
KEY_ID_TYPE_MULTI_REGION = 0x02

VERSION_BYTES = 1
KEY_ID_TYPE_BYTES = 1
KEY_ID_BYTES = 16
BACKING_VERSION_BYTES = 4
HEADER_BYTES = VERSION_BYTES + KEY_ID_TYPE_BYTES + KEY_ID_BYTES + BACKING_VERSION_BYTES  # 22

NONCE_BYTES = 12  # AES-GCM's 96-bit nonce; mirrors crypto.aead, which the domain may not import
TAG_BYTES = 16
MIN_BLOB_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES  # 50: an empty payload still has a tag
MAX_BLOB_BYTES = 6144  # CiphertextType "max": 6144 in botocore's KMS model
MAX_BACKING_VERSION = 2**32 - 1

_HEADER = struct.Struct(">BB16sI")
assert _HEADER.size == HEADER_BYTES

_TYPE_BY_KIND = {
    KeyIdKind.SINGLE_REGION: KEY_ID_TYPE_SINGLE_REGION,
    KeyIdKind.MULTI_REGION: KEY_ID_TYPE_MULTI_REGION,
}


def invalid_ciphertext() -> InvalidCiphertextException:
    """The one exception for every unreadable or unauthenticated blob (no message, as AWS)."""
    return InvalidCiphertextException()


@dataclass(frozen=True, slots=True)
class Header:
    """The authenticated header of a v1 blob: which KMS key and which backing version sealed it.

    Constructed by the service from a key it holds, so invalid values are bugs and raise
    ``ValueError``; blobs from clients go through ``unpack``, which raises
    ``InvalidCiphertextException`` instead.
    """

    key_id: str
    backing_version: int

    def __post_init__(self) -> None:
        if not is_valid_key_id(self.key_id):
            raise ValueError(f"not a canonical key id: {self.key_id!r}")
        if not 1 <= self.backing_version <= MAX_BACKING_VERSION:
            raise ValueError(f"backing version out of range: {self.backing_version}")

    @property
    def format_version(self) -> int:
        return FORMAT_VERSION_1

    @property
    def multi_region(self) -> bool:
        return self.key_id.startswith(MRK_PREFIX)

    def to_bytes(self) -> bytes:
        """The 22 header bytes, which ``aad`` puts in front of the canonical context."""
        return _header_bytes(self.key_id, self.backing_version)

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """Parse exactly ``HEADER_BYTES`` bytes; ``InvalidCiphertextException`` on any fault."""
        if len(data) != HEADER_BYTES:
            raise invalid_ciphertext()
        return _read_header(bytes(data))


# Memoised: every blob of one key version has the same header, and packing or parsing one (the
# key id through ``uuid.UUID``, the id check's regular expression) costs more than the AES-GCM
# call. Keyed by immutable values and bounded; failures raise and are never remembered.
_HEADER_MEMO = 4096


@functools.lru_cache(maxsize=_HEADER_MEMO)
def header(key_id: str, backing_version: int) -> Header:
    """``Header(key_id, backing_version)``, memoised for the service's hot path."""
    return Header(key_id, backing_version)


def header_bytes(key_id: str, backing_version: int) -> bytes:
    """``Header(key_id, backing_version).to_bytes()`` without the memo, for a caller that keeps the
    bytes itself (the key cache, one per key: with many keys a bounded memo would miss)."""
    Header(key_id, backing_version)  # the same checks
    return _encode_header(key_id, backing_version)


@functools.lru_cache(maxsize=_HEADER_MEMO)
def _header_bytes(key_id: str, backing_version: int) -> bytes:
    return _encode_header(key_id, backing_version)


def _encode_header(key_id: str, backing_version: int) -> bytes:
    kind = key_id_kind(key_id)
    assert kind is not None  # checked in Header.__post_init__
    multi_region = kind is KeyIdKind.MULTI_REGION
    raw_id = bytes.fromhex(key_id[len(MRK_PREFIX) :]) if multi_region else uuid.UUID(key_id).bytes
    return _HEADER.pack(FORMAT_VERSION_1, _TYPE_BY_KIND[kind], raw_id, backing_version)


@functools.lru_cache(maxsize=_HEADER_MEMO)
def _read_header(data: bytes) -> Header:
    version, id_type, raw_id, backing_version = _HEADER.unpack(data)
    if version != FORMAT_VERSION_1 or backing_version == 0:
        raise invalid_ciphertext()
    if id_type == KEY_ID_TYPE_SINGLE_REGION:
        key_id = str(uuid.UUID(bytes=raw_id))
    elif id_type == KEY_ID_TYPE_MULTI_REGION:
        key_id = MRK_PREFIX + raw_id.hex()
    else:
        raise invalid_ciphertext()
    return Header(key_id, backing_version)


def pack(header: Header, sealed: bytes) -> bytes:
    """``header || sealed``, where ``sealed`` is nonce || ciphertext || tag from the AEAD layer.

    Raises ``ValueError`` if ``sealed`` is shorter than a nonce and a tag or the blob would
    exceed ``MAX_BLOB_BYTES``: the service produced it, so that is a bug, not a client error.
    """
    return pack_bytes(header.to_bytes(), sealed)


def pack_bytes(header_bytes: bytes, sealed: bytes) -> bytes:
    """``pack`` with the header already encoded (``header_bytes``, as the key cache keeps it)."""
    if len(header_bytes) != HEADER_BYTES:
        raise ValueError("header must be HEADER_BYTES long")
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise ValueError("sealed payload shorter than nonce + tag")
    blob = header_bytes + sealed
    if len(blob) > MAX_BLOB_BYTES:
        raise ValueError(f"ciphertext blob of {len(blob)} bytes exceeds {MAX_BLOB_BYTES}")
    return blob


def unpack(blob: bytes) -> tuple[Header, bytes]:
    """Split a client's blob into its header and ``sealed`` (nonce || ciphertext || tag).

    Only the framing is checked here; authenticity is proven later by the AEAD tag over
    ``aad(header.to_bytes(), canonical context)``. Any fault: ``InvalidCiphertextException``.
    """
    if not MIN_BLOB_BYTES <= len(blob) <= MAX_BLOB_BYTES:
        raise invalid_ciphertext()
    header = Header.from_bytes(bytes(blob[:HEADER_BYTES]))
    return header, bytes(blob[HEADER_BYTES:])


def aad(header_bytes: bytes, context_canonical_bytes: bytes) -> bytes:
    """Additional authenticated data for a v1 blob: header bytes then the canonical context.

    Takes the header's bytes rather than a ``Header`` so Decrypt authenticates the bytes it
    actually received (for v1 they are the same: ``from_bytes`` accepts one spelling only).
    """
    if len(header_bytes) != HEADER_BYTES:
        raise ValueError(f"header must be {HEADER_BYTES} bytes, got {len(header_bytes)}")
    return header_bytes + context_canonical_bytes
