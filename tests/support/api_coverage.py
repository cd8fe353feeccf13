"""API coverage table: every operation of botocore's KMS model, grouped by area, with a status.

docs/API.md is generated from here so that the list of operations can never drift from the
wire contract: when botocore adds an operation, it appears in the table (under "Other" until
someone files it into an area) the next time the document is regenerated (statuses and notes
are read back from the current file)::

    python -m tests.support.api_coverage docs/API.md > API.md.new && mv API.md.new docs/API.md

A docs generator, not part of the product: it lives beside the tests that keep docs/API.md true
(tests/unit/test_api_coverage.py, tests/unit/test_shapes.py).

Statuses and notes are supplied by the caller; an operation without a status is "planned".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from regiond.protocol.shapes import API_VERSION, operation_names

__all__ = ["AREAS", "OPERATIONS", "STATUSES", "area_of", "render_markdown"]

OPERATIONS: Final[tuple[str, ...]] = tuple(sorted(operation_names()))

STATUSES: Final = ("implemented", "partial", "planned", "not planned")

# Area titles, in document order, with the operations each one owns.
AREAS: Final[dict[str, tuple[str, ...]]] = {
    "Keys": (
        "CreateKey",
        "DescribeKey",
        "ListKeys",
        "EnableKey",
        "DisableKey",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
        "UpdateKeyDescription",
        "TagResource",
        "UntagResource",
        "ListResourceTags",
        "GetKeyLastUsage",
    ),
    "Cryptographic operations": (
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateRandom",
    ),
    "Aliases": ("CreateAlias", "UpdateAlias", "DeleteAlias", "ListAliases"),
    "Grants": ("CreateGrant", "ListGrants", "ListRetirableGrants", "RetireGrant", "RevokeGrant"),
    "Key policies": ("GetKeyPolicy", "PutKeyPolicy", "ListKeyPolicies"),
    "Rotation": (
        "EnableKeyRotation",
        "DisableKeyRotation",
        "GetKeyRotationStatus",
        "RotateKeyOnDemand",
        "ListKeyRotations",
    ),
    "Imported key material": ("GetParametersForImport", "ImportKeyMaterial", "DeleteImportedKeyMaterial"),
    "Multi-Region keys": ("ReplicateKey", "UpdatePrimaryRegion"),
    "Custom key stores": (
        "CreateCustomKeyStore",
        "ConnectCustomKeyStore",
        "DisconnectCustomKeyStore",
        "DeleteCustomKeyStore",
        "DescribeCustomKeyStores",
        "UpdateCustomKeyStore",
    ),
    "Asymmetric, HMAC and key agreement": (
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GetPublicKey",
        "Sign",
        "Verify",
        "GenerateMac",
        "VerifyMac",
        "DeriveSharedSecret",
        "Encapsulate",
        "Decapsulate",
    ),
}

OTHER_AREA: Final = "Other (in the model, not yet filed into an area)"

_AREA_OF: Final = {op: area for area, ops in AREAS.items() for op in ops}


def area_of(operation: str) -> str:
    """The area an operation is listed under; unfiled operations go to ``OTHER_AREA``."""
    return _AREA_OF.get(operation, OTHER_AREA)


def _cell(text: str) -> str:
    """Make free text safe inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(status: Mapping[str, str], notes: Mapping[str, str]) -> str:
    """The whole docs/API.md text for the given per-operation statuses and notes.

    Operations named in ``status`` or ``notes`` that the model does not know are rejected:
    a typo there would otherwise silently leave the real operation "planned".
    """
    known = set(OPERATIONS)
    unknown = sorted((set(status) | set(notes)) - known)
    if unknown:
        raise ValueError(f"not operations of the KMS model: {', '.join(unknown)}")

    grouped: dict[str, list[str]] = {area: [] for area in (*AREAS, OTHER_AREA)}
    for op in OPERATIONS:
        grouped[area_of(op)].append(op)

    counts = {s: 0 for s in STATUSES}
    for op in OPERATIONS:
        st = status.get(op, "planned")
        counts[st] = counts.get(st, 0) + 1

    lines = [
        "# KMS API coverage",
        "",
        f"Every operation of botocore's KMS service model (API version {API_VERSION}, as the installed "
        f"botocore ships it): **{len(OPERATIONS)} operations**. Statuses and notes are kept "
        "in the tables below; `python -m tests.support.api_coverage docs/API.md` re-renders the file "
        "(operation list, areas, counts) and tests/unit/test_api_coverage.py checks that every "
        "implemented or partial operation, and no other, has a handler.",
        "",
        "Every request is validated against the model before it reaches a handler "
        "(types, lengths, ranges, enums, patterns, required members), whatever the status below; "
        "text that PostgreSQL cannot store (U+0000, an unpaired surrogate) is refused with "
        "`ValidationException` in every string member but encryption-context keys and values, "
        "which may hold U+0000 (docs/SECURITY.md, Input validation).",
        "",
        "| Status | Operations |",
        "|---|---|",
        *(f"| {st} | {n} |" for st, n in counts.items()),
        "",
    ]
    for area, ops in grouped.items():
        if not ops:
            continue
        lines += [f"## {area} ({len(ops)})", "", "| Operation | Status | Notes |", "|---|---|---|"]
        for op in sorted(ops):
            st = _cell(status.get(op, "planned"))
            lines.append(f"| {op} | {st} | {_cell(notes.get(op, ''))} |")
        lines.append("")
    return "\n".join(lines)


_ROW = re.compile(r"^\| (?P<op>[A-Za-z0-9]+) \| (?P<status>[a-z ]+) \| (?P<notes>.*) \|$")


def read_markdown(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The statuses and notes of an existing coverage document (the inverse of ``render_markdown``)."""
    status: dict[str, str] = {}
    notes: dict[str, str] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m["status"] in STATUSES:
            status[m["op"]] = m["status"]
            if m["notes"].strip():
                notes[m["op"]] = m["notes"].strip().replace("\\|", "|")
    return status, notes


if __name__ == "__main__":
    import sys
    from pathlib import Path

    current = read_markdown(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else ({}, {})
    print(render_markdown(*current), end="")
