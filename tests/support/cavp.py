"""Published test vectors: NIST CAVP response files and others, from the ``cryptography-vectors`` package.

``records(path)`` reads a CAVP ``.rsp``/``.txt`` file into (section, record) pairs: a section is
the last ``[...]`` header (``"P-256,SHA-256"``, ``"mod = 2048"``), a record is the ``key = value``
lines up to the next blank line, and an RSA modulus block (``n``, ``p``, ``q``, and ``e`` right
after them) is carried into every record after it, until the next block or section.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cryptography_vectors

VECTORS = Path(cryptography_vectors.__file__).parent


def vector_path(*parts: str) -> Path:
    return VECTORS.joinpath(*parts)


def records(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    section = ""
    shared: dict[str, str] = {}
    current: dict[str, str] = {}
    in_shared = False

    def flush() -> Iterator[tuple[str, dict[str, str]]]:
        if current:
            yield section, {**shared, **current}

    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            yield from flush()
            current = {}
            section, shared, in_shared = line[1:-1], {}, True
            continue
        if not line:
            if current:
                yield from flush()
                current = {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if (key in ("n", "p", "q") and not current) or (in_shared and key == "e"):
            if key == "n":  # a new modulus block within the section
                shared = {}
            shared[key] = value
            in_shared = True
            continue
        in_shared = False
        if key in current:  # a new record started without a blank line
            yield from flush()
            current = {}
        current[key] = value
    yield from flush()


def pkcs1_fields(path: Path) -> Iterator[tuple[str, bytes]]:
    """The ``# Label:`` fields of a PKCS #1 v2.1 vector file (RSA Laboratories' ``oaep-vect.txt``
    and the ``oaep-custom`` files built like it), in file order, each with the bytes of the hex
    lines under it. A key is a run Modulus, Public exponent, Exponent, Prime 1, Prime 2, ...;
    an example is a run Message, (Seed,) Encryption after its key."""
    label: str | None = None
    value: list[str] = []
    for raw in [*path.read_text().splitlines(), "#"]:
        line = raw.strip()
        if line.startswith("#"):
            if label is not None and value:
                yield label, _hex("".join(value))
            text = line.lstrip("# ").strip()
            label, value = (text[:-1], []) if text.endswith(":") else (None, [])
        elif label is not None and line:
            digits = line.replace(" ", "")
            if all(c in "0123456789abcdefABCDEF" for c in digits):
                value.append(digits)
            else:  # prose (a file's trailing notes, a ==== rule): the field ended
                if value:
                    yield label, _hex("".join(value))
                label, value = None, []


def _hex(digits: str) -> bytes:
    """Bytes of a big-endian hex number; pyca's files write exponents with an odd digit count (``10001``)."""
    return bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
