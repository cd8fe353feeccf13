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
