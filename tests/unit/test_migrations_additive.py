"""Every migration since the previous release is additive, so `regiond migrate` may run while nodes of
the previous release serve (docs/OPERATIONS.md "Upgrading"; tests/cluster/test_rolling_upgrade.py runs
it): no drop, rename, type change, truncation or new NOT NULL column without a default. A file that
cannot be additive carries ``regiond.store.migrate.BREAKS_OLDER``: then nodes of releases without it
refuse its schema (regiond.store.migrate.unservable), and the upgrade notes must say so."""

from __future__ import annotations

import re

import pytest

from regiond.store import migrate as migrations

FIRST_CHECKED = 11  # the first migration after the release tests/cluster/test_rolling_upgrade.py starts from
BREAKING = [
    (re.compile(r"\bDROP\s+(TABLE|COLUMN|VIEW|SCHEMA|TYPE|FUNCTION|PROCEDURE|TRIGGER|SEQUENCE)\b", re.I), "a drop"),
    (re.compile(r"\bALTER\s+TABLE\s+\S+\s+DROP\s+(?!CONSTRAINT\b)\w+", re.I), "a dropped column"),
    (re.compile(r"\bRENAME\b", re.I), "a rename"),
    (re.compile(r"\bALTER\s+COLUMN\s+\w+\s+(SET\s+DATA\s+)?TYPE\b", re.I), "a column type change"),
    (re.compile(r"\bALTER\s+COLUMN\s+\w+\s+SET\s+NOT\s+NULL\b", re.I), "a column made NOT NULL"),
    (re.compile(r"\bTRUNCATE\b", re.I), "a truncation"),
    (re.compile(r"\bADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?\w+\s[^,;]*\bNOT\s+NULL\b(?![^,;]*\bDEFAULT\b)", re.I),
     "a NOT NULL column without a default"),
]  # fmt: skip
_COMMENT = re.compile(r"--[^\n]*")


def breaking(sql: str) -> list[str]:
    text = _COMMENT.sub("", sql)
    return [what for pattern, what in BREAKING if pattern.search(text)]


@pytest.mark.parametrize(
    "migration", [m for m in migrations.available() if m.version >= FIRST_CHECKED], ids=lambda m: f"{m.version:04d}"
)
def test_migration_is_additive_or_says_it_is_not(migration: migrations.Migration) -> None:
    found = breaking(migration.sql)
    assert migration.breaks_older or not found, (
        f"{migration.version:04d}_{migration.name}: {', '.join(found)} breaks nodes of the previous release "
        f"during a rolling upgrade; make it additive, or mark it {migrations.BREAKS_OLDER!r} and document the order"
    )


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("ALTER TABLE keys DROP COLUMN description;", "a dropped column"),
        ("DROP TABLE grants;", "a drop"),
        ("ALTER TABLE keys RENAME COLUMN a TO b;", "a rename"),
        ("ALTER TABLE keys ALTER COLUMN origin TYPE text;", "a column type change"),
        ("ALTER TABLE keys ALTER COLUMN origin SET NOT NULL;", "a column made NOT NULL"),
        ("ALTER TABLE keys ADD COLUMN x integer NOT NULL;", "a NOT NULL column without a default"),
    ],
)
def test_the_check_catches(sql: str, what: str) -> None:
    assert what in breaking(sql)


def test_the_check_passes_additive_changes() -> None:
    assert (
        breaking(
            "CREATE TABLE t (a int NOT NULL);\n"
            "ALTER TABLE keys ADD COLUMN x integer NOT NULL DEFAULT 0, ADD COLUMN y text;\n"
            "ALTER TABLE keys DROP CONSTRAINT k; -- DROP TABLE in a comment\nCREATE OR REPLACE FUNCTION f() ..."
        )
        == []
    )
