"""Reading deploy/ as the tools that run it would, for the static checks of tests/deploy.

No container engine, Kubernetes cluster or systemd runs the files here, so the checks read them
the way those tools do (compose's variable interpolation and merge keys, a unit file's lines and
specifiers) and hand every ``regiond`` command line to regiond's own argument parser and
configuration loader: a flag regiond does not know, a missing TLS setting or a ``REGIOND_*``
variable that is no setting fails here as it would fail the node.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from regiond import config
from regiond.__main__ import parser
from regiond.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
SETTING_VARIABLES = frozenset({e.env for e in config.SETTINGS} | {config.CONFIG_ENV})
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[?-][^}]*)?\}")


def yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file (``---`` separated), empty ones dropped."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose_file(path: Path, variables: Mapping[str, str]) -> dict[str, Any]:
    """A compose file as compose reads it: ``${VAR}`` / ``${VAR:?msg}`` / ``${VAR:-x}`` from ``variables``."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in variables, f"{path.name} uses ${{{name}}}, which the test does not provide"
        return variables[name]

    document = yaml.safe_load(_INTERPOLATION.sub(value, path.read_text()))
    assert isinstance(document, dict)
    return document


def regiond_args(argv: list[str]) -> Any:
    """``argv`` (after ``regiond``) parsed by regiond's own parser; the test fails with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"regiond {shlex.join(argv)}: {err.getvalue().strip()}")


def node_settings(argv: list[str], environ: Mapping[str, str], config_path: Path | None) -> Settings:
    """The settings ``regiond <argv>`` (a ``serve``) would run with, the file given as ``config_path``.

    Every ``REGIOND_*`` variable of ``environ`` must be a setting, and the client endpoint must be
    served as the node would accept it (TLS files, or plain HTTP said explicitly).
    """
    args = regiond_args(argv)
    assert args.command == "serve", argv
    unknown = {k for k in environ if k.startswith(config.ENV_PREFIX)} - SETTING_VARIABLES
    assert not unknown, f"not settings: {sorted(unknown)}"
    if args.config is not None:
        assert config_path is not None, f"--config {args.config}: the test found no file for it"
    try:
        effective = config.load(config_path if args.config else None, environ, config.flags_from(args))
    except config.ConfigError as exc:
        pytest.fail(f"regiond {shlex.join(argv)}: {exc}")
    problem = config.client_endpoint_problem(effective.settings)
    assert problem is None, f"regiond {shlex.join(argv)}: {problem}"
    return effective.settings


def script_commands(script: str) -> list[list[str]]:
    """The commands of a plain ``sh`` script: one a line, ``\\`` continuations joined, comments dropped."""
    joined = script.replace("\\\n", " ")
    commands = (shlex.split(line, comments=True) for line in joined.splitlines())
    return [argv for argv in commands if argv]


@dataclass(frozen=True)
class Unit:
    """A systemd unit file: each section's settings in order (a key may repeat)."""

    sections: dict[str, list[tuple[str, str]]]

    def values(self, section: str, key: str) -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, section: str, key: str) -> str:
        (found,) = self.values(section, key) or [""]
        return found


def read_unit(path: Path) -> Unit:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in path.read_text().replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], [])
            continue
        assert current is not None, f"{path.name}: a setting before any section: {stripped}"
        key, sep, value = stripped.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {stripped}"
        current.append((key.strip(), value.strip()))
    return Unit(sections)


def env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile: KEY=VALUE lines, comments and blanks ignored."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out
