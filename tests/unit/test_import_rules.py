"""The import rules of docs/ARCHITECTURE.md, checked on the source (AST, no import is executed).

Each rule names a layer and what it may not import. ``ALLOWED`` lists, with the reason, the
violations that remain today: phase B of the structure work (issue 14) removes those marked
so, and the test fails both for a new violation and for an allowance that is no longer needed,
so the list always shows exactly what remains.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("regiond", "replication", "kmsclient")
IO_LIBS = ("asyncio", "aiohttp", "asyncpg", "cryptography")
WIRE_CONTRACT = ("replication.messages", "replication.frames")
# Composition: the root that wires a node and its replication together, the operator commands and
# the local-cluster launcher
COMPOSITION = ("regiond.app", "regiond.__main__", "regiond.cli", "regiond.devtools")

ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module (and ``module.name``) a file imports, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.update(f"{target}.{alias.name}" for alias in node.names)  # ``from p import m`` uses p.m
    return found


def _sources() -> Iterator[tuple[str, set[str]]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield _module_name(path), _imports(path)


def _uses(imports: set[str], prefix: str) -> bool:
    return any(i == prefix or i.startswith(prefix + ".") for i in imports)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


Rule = Callable[[str, set[str]], bool]
RULES: dict[str, Rule] = {
    "domain imports an I/O library": lambda m, i: _in(m, "regiond.domain") and any(_uses(i, lib) for lib in IO_LIBS),
    "domain imports a layer above it": lambda m, i: _in(m, "regiond.domain")
    and any(_uses(i, p) for p in ("regiond.store", "regiond.service", "regiond.protocol", "regiond.crypto")),
    "asyncpg outside regiond.store": lambda m, i: any(_in(m, p) for p in PACKAGES)
    and not _in(m, "regiond.store") and _uses(i, "asyncpg"),
    "cryptography.hazmat outside regiond.crypto": lambda m, i: (_in(m, "regiond") or _in(m, "replication"))
    and not _in(m, "regiond.crypto") and _uses(i, "cryptography.hazmat"),
    "aiohttp outside protocol and runtime": lambda m, i: _in(m, "regiond")
    and not any(_in(m, p) for p in ("regiond.protocol", "regiond.runtime"))
    and m != "regiond.app" and _uses(i, "aiohttp"),
    "kmsclient imports the server": lambda m, i: _in(m, "kmsclient")
    and (_uses(i, "regiond") or _uses(i, "replication")),
    "replication imports protocol or service": lambda m, i: _in(m, "replication")
    and (_uses(i, "regiond.protocol") or _uses(i, "regiond.service")),
    "regiond imports replication beyond its wire contract": lambda m, i: _in(m, "regiond")
    and not any(_in(m, c) for c in COMPOSITION)
    and any(_uses(i, "replication") and not any(x == w or x.startswith(w + ".") for w in WIRE_CONTRACT)
            for x in i if x == "replication" or x.startswith("replication.")),
    "service imports protocol": lambda m, i: _in(m, "regiond.service") and _uses(i, "regiond.protocol"),
    "auth imports service or protocol": lambda m, i: _in(m, "regiond.auth")
    and (_uses(i, "regiond.service") or _uses(i, "regiond.protocol")),
    "audit imports service or protocol": lambda m, i: _in(m, "regiond.audit")
    and (_uses(i, "regiond.service") or _uses(i, "regiond.protocol")),
    "store imports service or protocol": lambda m, i: _in(m, "regiond.store")
    and (_uses(i, "regiond.service") or _uses(i, "regiond.protocol")),
    "crypto imports store, service or protocol": lambda m, i: _in(m, "regiond.crypto")
    and any(_uses(i, p) for p in ("regiond.store", "regiond.service", "regiond.protocol")),
}  # fmt: skip


def _violations() -> set[tuple[str, str]]:
    return {(module, name) for module, imports in _sources() for name, rule in RULES.items() if rule(module, imports)}


def test_no_import_breaks_a_layer_rule() -> None:
    new = sorted(_violations() - set(ALLOWED))
    assert not new, "import rules broken (docs/ARCHITECTURE.md):\n" + "\n".join(f"  {m}: {r}" for m, r in new)


def test_every_allowance_is_still_needed() -> None:
    stale = sorted(set(ALLOWED) - _violations())
    assert not stale, "remove these from ALLOWED, they are fixed:\n" + "\n".join(f"  {m}: {r}" for m, r in stale)


@pytest.mark.parametrize(
    ("module", "source", "rule", "allowed_in"),
    [
        ("regiond.domain.x", "import asyncio", "domain imports an I/O library", "regiond.service.x"),
        ("regiond.domain.x", "from cryptography.hazmat.primitives import hashes", "domain imports an I/O library",
         "regiond.crypto.x"),
        ("regiond.service.x", "import asyncpg", "asyncpg outside regiond.store", "regiond.store.x"),
        ("replication.x", "from cryptography.hazmat.primitives import hashes",
         "cryptography.hazmat outside regiond.crypto", "regiond.crypto.x"),
        ("regiond.service.x", "from aiohttp import web", "aiohttp outside protocol and runtime", "regiond.protocol.x"),
        ("regiond.auth.x", "from aiohttp import web", "aiohttp outside protocol and runtime", "regiond.runtime.x"),
        ("kmsclient.x", "from regiond.errors import KmsError", "kmsclient imports the server", "tests.x"),
        ("replication.x", "from regiond.service.keys import KeyService", "replication imports protocol or service",
         "regiond.protocol.x"),
        ("regiond.store.x", "from replication.sender import Sender",
         "regiond imports replication beyond its wire contract", "tests.x"),
        ("regiond.service.x", "from replication.sender import Sender",
         "regiond imports replication beyond its wire contract", "regiond.cli.x"),
        ("regiond.service.x", "from regiond.protocol import routes", "service imports protocol", "regiond.app"),
        ("regiond.auth.x", "from regiond.service.iam import IamService", "auth imports service or protocol",
         "regiond.protocol.x"),
        ("regiond.audit.x", "from regiond.protocol.context import OpContext", "audit imports service or protocol",
         "regiond.protocol.x"),
    ],
)  # fmt: skip
def test_each_rule_catches_its_violation(module: str, source: str, rule: str, allowed_in: str) -> None:
    imports: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.update(f"{node.module}.{a.name}" for a in node.names)
    assert RULES[rule](module, imports)
    assert not RULES[rule](allowed_in, imports)


def test_the_wire_contract_is_allowed_to_regiond() -> None:
    imports = {"replication.messages", "replication.messages.KeyCreated", "replication.frames.FrameKind"}
    assert not RULES["regiond imports replication beyond its wire contract"]("regiond.store.outbox", imports)


SQL_CALLS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


def _sql_calls(path: Path) -> list[int]:
    """Lines where a database call is given SQL text (a string literal as its first argument)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS
        and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
        and (not isinstance(node.args[0], ast.Constant) or isinstance(node.args[0].value, str))
    ]  # fmt: skip


def test_sql_runs_only_in_the_store() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if not _in(_module_name(path), "regiond.store")
        for line in _sql_calls(path)
    ]
    assert not found, "SQL outside regiond/store (docs/ARCHITECTURE.md):\n" + "\n".join(found)


def test_the_sql_check_sees_a_query(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text('async def f(con):\n    await con.fetchrow("SELECT 1")\n    await con.execute(query)\n')
    assert _sql_calls(source) == [2]
