"""The state directory's files are named, written and read by regiond/statedir.py only (issue 14).

Two loaders of one file drift apart (issue 14 found the replication runtime's and ``regiond init``'s,
the latter dead); this test reads the source of the server packages as text and refuses a state
file's name anywhere else, so a new reader has to go through ``regiond.statedir``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE_FILES = ("root.key", "identity.ed25519", "encryption.hpke", "region.crt", "region.key")
OWNER = "regiond/statedir.py"
ALLOWED = {
    # the root key's path is a setting of its own (Settings.root_key_path: --state-dir's root.key)
    "regiond/config.py": "root.key",
}


def test_only_statedir_names_the_state_files() -> None:
    found = []
    for package in ("regiond", "replication"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == OWNER:
                continue
            text = path.read_text()
            for state_file in STATE_FILES:
                named = f'"{state_file}' in text or f"/{state_file}" in text
                if named and ALLOWED.get(name) != state_file:
                    found.append(f"{name}: {state_file}")
    assert not found, "read these through regiond.statedir:\n" + "\n".join(found)


def test_the_owner_names_every_state_file() -> None:
    text = (ROOT / OWNER).read_text()
    assert all(f'"{state_file}"' in text for state_file in STATE_FILES)
