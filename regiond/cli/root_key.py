"""``regiond rotate-root-key``: replace a region's root key online, under load.

    regiond rotate-root-key (--state-dir DIR | --keyring-file F) (--database-url URL | --cluster F --region R)
                            [--stage | --rewrap-only | --retire-old] [--batch-size N]

Without a mode flag it makes a new root key version active in the keyring file (or activates the
one ``--stage`` added), then re-seals every value of the region's database (backing key material,
access-key secrets, import wrapping keys) and of the state directory (identity, HPKE and TLS keys)
under it, by compare-and-set beside serving nodes (regiond/service/root_key.py). Nodes reading
the same keyring file seal new values under the new version at once and open values of every
version the file holds (regiond/crypto/keyring.py), so no request fails while it runs.

  --stage        only add a new version, not active: every node can open values sealed under it,
                 none seals under it yet. For nodes that each hold their own copy of the keyring
                 (REGIOND_ROOT_KEY, one file per machine): stage, give every node the new keyring
                 (rolling restart), then run without a flag, give them the result, --rewrap-only.
  --rewrap-only  re-seal what is not under the active version; change no key.
  --retire-old   drop every version but the active one from the file, after checking that nothing in
                 the database or the state directory is still sealed under one (else exit 1).

The report (one JSON object) names versions and their non-secret fingerprints (key checks),
never a key. Exit 0 when done, 1 when values remain that are not under the active version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from regiond import private_files
from regiond.cli import cluster_file
from regiond.cli.cluster_file import UsageError
from regiond.config import env
from regiond.crypto.keyring import AesRootKeyring, KeyringError, load_file_keyring
from regiond.store.pool import DATABASE_ERRORS, create_pool

__all__ = ["add_root_key_parser", "cmd_rotate_root_key"]


def _paths(args: argparse.Namespace) -> tuple[Path, Path | None, str | None]:
    """The keyring file, the state directory (if any) and the database URL (if any)."""
    state_dir = Path(args.state_dir) if args.state_dir else None
    database_url = args.database_url
    if args.cluster:
        entry = cluster_file.region_entry(args.cluster, args.region)
        database_url = database_url or entry.database_url
        state_dir = state_dir or entry.state_dir
    from regiond.statedir import root_key_path

    keyring_file = Path(args.keyring_file) if args.keyring_file else (root_key_path(state_dir) if state_dir else None)
    if keyring_file is None:
        raise UsageError("give --state-dir DIR (its root.key), --keyring-file FILE or --cluster FILE --region R")
    return keyring_file, state_dir, database_url


def _describe(keyring: AesRootKeyring) -> dict[str, Any]:
    checks = {str(n): c for n, c in keyring.key_checks().items()}
    return {"active_version": keyring.active_version, "key_checks": checks}


def _save(path: Path, keyring: AesRootKeyring) -> None:
    private_files.write_file(path, keyring.to_bytes(), durable=True)


def _say(line: str) -> None:
    """A progress line on stderr (stdout carries the one JSON report)."""
    print(f"regiond rotate-root-key: {line}", file=sys.stderr, flush=True)


class _Progress:
    """At most one line a second per table, and its last line, so a large region shows it moving."""

    INTERVAL_S = 1.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def __call__(self, table: str, what: str, done: int, to_do: int) -> None:
        now = time.monotonic()
        if done < to_do and now - self._last.get(table, 0.0) < self.INTERVAL_S:
            return
        self._last[table] = now
        _say(f"{table}: {done} of {to_do} {what}")


async def _rewrap(database_url: str, state_dir: Path | None, keyring: AesRootKeyring, batch: int) -> dict[str, Any]:
    from regiond.service.root_key import rewrap_database
    from regiond.statedir import rewrap_sealed_files, sealed_files_not_under

    files = rewrap_sealed_files(state_dir, keyring) if state_dir is not None else []
    if files:
        _say(f"state directory: re-wrapped {', '.join(files)}")
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        report = await rewrap_database(pool, keyring, batch_size=batch, progress=_Progress())
    finally:
        await pool.close()
    left = sealed_files_not_under(state_dir, keyring.active_version) if state_dir is not None else []
    return {"rewrapped": report.rewrapped, "rewrapped_files": files, "passes": report.passes,
            "unreadable": report.unreadable, "remaining": report.remaining, "remaining_files": left,
            "complete": report.complete and not left}  # fmt: skip


async def _reachable(database_url: str) -> None:
    """Connect once before the keyring changes, so that a wrong URL leaves the keyring as it was."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    await pool.close()


async def _retire_check(database_url: str, state_dir: Path | None, keyring: AesRootKeyring) -> dict[str, Any]:
    from regiond.service.root_key import remaining
    from regiond.statedir import sealed_files_not_under

    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        left = await remaining(pool, keyring)
    finally:
        await pool.close()
    files = sealed_files_not_under(state_dir, keyring.active_version) if state_dir is not None else []
    return {"remaining": left, "remaining_files": files, "complete": not any(left.values()) and not files}


def _choose_active(keyring: AesRootKeyring) -> tuple[AesRootKeyring, str]:
    """The keyring to re-wrap under, and what was decided: the rule that makes a second run after a
    crash resume the first rotation rather than start another.

    - a staged version (newer than the active one): activate it;
    - older versions still held (a rotation not retired, finished or not): keep the active one
      and re-wrap what is left (``--retire-old`` ends a rotation; only then does a run start one);
    - the active version alone: add a new version, active.
    """
    staged = [n for n in keyring.versions if n > keyring.active_version]
    if staged:
        return keyring.activated(max(staged)), f"activating staged version {max(staged)}"
    if len(keyring.versions) > 1:
        older = ", ".join(str(n) for n in keyring.versions if n != keyring.active_version)
        return keyring, (
            f"resuming: version {keyring.active_version} is active and version(s) {older} are not retired;"
            " re-wrapping what is left (--retire-old ends this rotation)"
        )
    new = keyring.with_new_version(activate=True)
    return new, f"new version {new.active_version} is active"


def cmd_rotate_root_key(args: argparse.Namespace) -> int:
    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        keyring_file, state_dir, database_url = _paths(args)
        keyring: AesRootKeyring = load_file_keyring(keyring_file)
        if args.stage:
            staged = [n for n in keyring.versions if n > keyring.active_version]
            if not staged:  # a second --stage adds nothing: one staged version at a time
                keyring = keyring.with_new_version(activate=False)
                _save(keyring_file, keyring)
            _say(f"version {max(keyring.versions)} staged: nodes open values sealed under it, none seals under it")
            print(json.dumps({"staged_version": max(keyring.versions), **_describe(keyring)}))
            return 0
        if not database_url:
            raise UsageError("give --database-url URL (or --cluster FILE --region R)")
        if args.retire_old:
            check = asyncio.run(_retire_check(database_url, state_dir, keyring))
            if not check["complete"]:
                print(json.dumps({**_describe(keyring), **check, "retired": []}))
                _say("values remain under older versions: run it again (or with --rewrap-only) first")
                return 1
            retired = [n for n in keyring.versions if n != keyring.active_version]
            keyring = keyring.retired()
            _save(keyring_file, keyring)
            _say(f"retired version(s) {', '.join(map(str, retired)) or 'none'}; version {keyring.active_version} alone")
            print(json.dumps({**_describe(keyring), **check, "retired": retired}))
            return 0
        if not args.rewrap_only:
            asyncio.run(_reachable(database_url))
            chosen, decided = _choose_active(keyring)
            if chosen is not keyring:
                _save(keyring_file, chosen)  # durable before anything is sealed under the new version
            keyring = chosen
            _say(decided)
        _say(f"re-wrapping under version {keyring.active_version} (key check {keyring.key_check})")
        result = asyncio.run(_rewrap(database_url, state_dir, keyring, args.batch_size))
        if result["complete"]:
            total = sum(result["rewrapped"].values())
            _say(f"done: {total} values re-wrapped in {result['passes']} passes; none left under an older"
                 " version (retire them with --retire-old)")  # fmt: skip
        else:
            _say(f"not done: still under an older version: {result['remaining']} {result['remaining_files']};"
                 " run it again")  # fmt: skip
        print(json.dumps({**_describe(keyring), **result}))
        return 0 if result["complete"] else 1
    except (UsageError, KeyringError) as exc:
        _say(str(exc))
        return 2
    except DATABASE_ERRORS as exc:  # the database or a file: the first line of what failed, no traceback
        _say(f"{type(exc).__name__}: {exc}".splitlines()[0])
        return 2


def add_root_key_parser(sub: Any) -> None:
    p = sub.add_parser("rotate-root-key", help="a new root key version; re-seal everything under it, online")
    p.add_argument("--state-dir", default=env("STATE_DIR"), help="the region's state directory (its root.key)")
    p.add_argument(
        "--keyring-file", help="the keyring file, if not the state directory's (nodes given REGIOND_ROOT_KEY)"
    )
    p.add_argument("--database-url", default=env("DATABASE_URL"))
    p.add_argument("--cluster", help="cluster.json written by `regiond dev` (with --region)")
    p.add_argument("--region", default=env("REGION"))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stage", action="store_true", help="only add a new, not yet active version")
    mode.add_argument("--rewrap-only", action="store_true", help="re-seal under the active version; no new key")
    mode.add_argument("--retire-old", action="store_true", help="drop old versions once nothing uses them")
    p.add_argument("--batch-size", type=int, default=200, help="values re-sealed per transaction (default 200)")
    p.set_defaults(func=cmd_rotate_root_key)
