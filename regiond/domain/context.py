"""Encryption context: its canonical byte form, the part of the AAD a client controls.

An encryption context (``EncryptionContextType`` in the KMS model) is a map of string to
string. AWS binds it to the ciphertext: Decrypt must present the same map, in any key order,
or fail with ``InvalidCiphertextException``. So the bytes we authenticate must depend on the
*set* of pairs only, and two different maps must never give the same bytes.

Canonical encoding, version 1 (the ciphertext format version fixes it; see ciphertext.py):

    canonical(ctx) = concat over pairs sorted by UTF-8(key), bytewise:
                         u32be(len(UTF-8(key)))   || UTF-8(key)
                      || u32be(len(UTF-8(value))) || UTF-8(value)

    canonical({})  = b""        (an empty context and an absent context are the same, as in AWS)

- Order independence: pairs are sorted by the UTF-8 bytes of the key. Keys are unique in a
  map, so the order is total. UTF-8 byte order equals code point order (Python's ``str``
  order), but not UTF-16 order (Java's and JavaScript's default string sort, which puts
  U+10000.. before U+E000..U+FFFF), so the rule is stated in bytes for other implementations.
- Unambiguity: every field carries its length, so ``{"a": "bc"}`` and ``{"ab": "c"}`` differ
  and a reader can parse the bytes back (``parse_canonical``). A 4-byte length is more than any
  request can need (a KMS request body is capped well below 4 GiB), so no length is refused.
- Strings are encoded with strict UTF-8; a string holding a lone surrogate (possible after JSON
  ``\\ud800`` escapes) cannot be encoded and is refused with ``ValidationException``.

No Unicode normalisation is applied: AWS compares contexts as exact strings, so ``"é"``
(U+00E9) and ``"é"`` (U+0065 U+0301) are different contexts here too.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType

from regiond.errors import ValidationException

__all__ = [
    "EMPTY_CONTEXT",
    "LENGTH_PREFIX_BYTES",
    "EncryptionContext",
    "canonical_bytes",
    "normalize",
    "parse_canonical",
]

LENGTH_PREFIX_BYTES = 4
_U32 = struct.Struct(">I")

EncryptionContext = Mapping[str, str]
"""The type of an encryption context as the service passes it around."""

EMPTY_CONTEXT: EncryptionContext = MappingProxyType({})


def normalize(context: Mapping[str, str] | None) -> EncryptionContext:
    """A read-only copy of ``context``, with ``None`` (parameter absent) meaning empty.

    Checks types because the context arrives from JSON, where a value could be a number;
    AWS's shape says string to string and answers ``ValidationException`` otherwise.
    """
    if not context:
        return EMPTY_CONTEXT
    _check_types(context)
    return MappingProxyType(dict(context))


def _check_types(context: Mapping[str, str]) -> None:
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationException("EncryptionContext keys and values must be strings")


def canonical_bytes(context: Mapping[str, str] | None) -> bytes:
    """The canonical encoding described in the module docstring; ``b""`` for empty or ``None``."""
    if not context:
        return b""
    _check_types(context)  # what ``normalize`` checks, without its copy (callers pass its result)
    encoded = sorted((_utf8(key), _utf8(value)) for key, value in context.items())
    out = bytearray()
    for key, value in encoded:
        out += _U32.pack(len(key))
        out += key
        out += _U32.pack(len(value))
        out += value
    return bytes(out)


def parse_canonical(data: bytes) -> EncryptionContext:
    """Invert ``canonical_bytes``; raise ``ValueError`` unless ``data`` is exactly canonical.

    Exactly canonical means: well-formed lengths, valid UTF-8, keys strictly increasing by
    their UTF-8 bytes (sorted, no duplicates), nothing left over. So for every ``data`` this
    accepts, ``canonical_bytes(parse_canonical(data)) == data``. Used by audit tooling and tests;
    decryption never parses the context back, it recomputes the bytes from the request.
    """
    pairs: dict[str, str] = {}
    previous_key: bytes | None = None
    offset = 0
    while offset < len(data):
        key, offset = _read_field(data, offset)
        value, offset = _read_field(data, offset)
        if previous_key is not None and key <= previous_key:
            raise ValueError("encryption context keys are not in strictly increasing UTF-8 order")
        previous_key = key
        pairs[key.decode("utf-8")] = value.decode("utf-8")
    return MappingProxyType(pairs) if pairs else EMPTY_CONTEXT


def _read_field(data: bytes, offset: int) -> tuple[bytes, int]:
    end_of_length = offset + LENGTH_PREFIX_BYTES
    if end_of_length > len(data):
        raise ValueError("truncated length prefix")
    (length,) = _U32.unpack_from(data, offset)
    end = end_of_length + length
    if end > len(data):
        raise ValueError("truncated field")
    return data[end_of_length:end], end


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationException("EncryptionContext keys and values must be valid Unicode strings") from None
