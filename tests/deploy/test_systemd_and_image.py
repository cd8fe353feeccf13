"""deploy/systemd and deploy/Dockerfile, and what holds for every file of deploy/.

A unit's command lines are resolved as systemd would run them for one instance (``%i``, its
EnvironmentFile) and handed to regiond's parser and loader; every YAML file parses; every
``REGIOND_*`` name anywhere in deploy/ is a setting.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from regiond.__main__ import _migrate_database_url
from regiond.config import parse_listen
from tests.deploy.files import (
    DEPLOY,
    SETTING_VARIABLES,
    SYSTEMD,
    Unit,
    env_file,
    node_settings,
    read_unit,
    regiond_args,
    script_commands,
    yaml_documents,
)

INSTANCE = "us-east-1"
REGIOND = "/usr/local/bin/regiond"


def _instance_file(path: str) -> Path:
    """A file of /etc/regiond for the instance: its example in deploy/systemd."""
    name = Path(path).name
    for candidate in (SYSTEMD / name, SYSTEMD / f"{name}.example"):
        if candidate.is_file():
            return candidate
    pytest.fail(f"{path}: no example of it in deploy/systemd")


def _command(unit: Unit, key: str) -> list[str]:
    (line,) = unit.values("Service", key)
    argv = shlex.split(line.replace("%i", INSTANCE))
    assert argv[0] == REGIOND, line
    return argv[1:]


def _environment(unit: Unit) -> dict[str, str]:
    environ: dict[str, str] = {}
    for path in unit.values("Service", "EnvironmentFile"):
        environ |= env_file(_instance_file(path.lstrip("-").replace("%i", INSTANCE)))
    for line in unit.values("Service", "Environment"):
        for pair in shlex.split(line.replace("%i", INSTANCE)):
            key, _, value = pair.partition("=")
            environ[key] = value
    return environ


def _config_file(argv: list[str]) -> Path | None:
    args = regiond_args(argv)
    return _instance_file(args.config) if args.config else None


def test_the_node_unit_starts_a_node_that_runs_and_reloads_its_certificate() -> None:
    unit = read_unit(SYSTEMD / "regiond@.service")
    argv = _command(unit, "ExecStart")
    settings = node_settings(argv, _environment(unit), _config_file(argv))
    assert settings.region == INSTANCE
    assert settings.tls_cert_file is not None, "a node on a machine serves TLS itself"
    assert str(settings.state_dir) == f"/var/lib/{unit.value('Service', 'StateDirectory').replace('%i', INSTANCE)}"
    assert unit.value("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert unit.value("Service", "User") not in ("", "root", "0")
    assert settings.replication_listen is not None and parse_listen(settings.replication_listen)[1] > 1024
    assert settings.listen_port > 1024, "a port below 1024 would need a capability the unit does not give"


@pytest.mark.parametrize("name", ["regiond@.service", "regiond-migrate@.service"])
def test_units_are_hardened(name: str) -> None:
    unit = read_unit(SYSTEMD / name)
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes",
                "SystemCallArchitectures": "native", "UMask": "0077"}  # fmt: skip
    for key, value in expected.items():
        assert unit.values("Service", key) == [value], f"{name}: {key}"
    assert unit.values("Service", "SystemCallFilter")[0] == "@system-service"


def test_the_migrate_step_runs_first_on_the_nodes_database() -> None:
    node, migrate = read_unit(SYSTEMD / "regiond@.service"), read_unit(SYSTEMD / "regiond-migrate@.service")
    assert "regiond-migrate@%i.service" in node.value("Unit", "Wants").split()
    assert "regiond-migrate@%i.service" in node.value("Unit", "After").split()
    assert migrate.value("Service", "Type") == "oneshot"
    serve_argv, migrate_argv = _command(node, "ExecStart"), _command(migrate, "ExecStart")
    settings = node_settings(serve_argv, _environment(node), _config_file(serve_argv))
    args = regiond_args(migrate_argv)
    assert args.command == "migrate"
    config = _config_file(migrate_argv)
    assert config is not None
    args.config = str(config)
    assert _migrate_database_url(args) == settings.database_url
    assert _environment(migrate) == _environment(node)  # the same database password


def test_the_image_runs_a_tls_node_as_its_own_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    (cmd,) = re.findall(r"^CMD (.+)$", text, re.MULTILINE)
    assert json.loads(entrypoint) == ["regiond"]
    environ = {"REGIOND_REGION": INSTANCE, "REGIOND_DATABASE_URL": "postgresql://regiond@db/regionkms"}
    settings = node_settings(json.loads(cmd), environ, None)
    assert settings.tls_cert_file is not None
    (user,) = re.findall(r"^USER (.+)$", text, re.MULTILINE)
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "numeric, so that runAsNonRoot can verify it"
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE) for p in line.split()}
    assert settings.listen_port in exposed


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 10
    for path in files:
        documents = yaml_documents(path)
        assert documents and all(isinstance(d, dict) for d in documents), path


def test_every_regiond_variable_named_in_deploy_is_a_setting() -> None:
    named = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            named |= set(re.findall(r"\bREGIOND_[A-Z0-9_]+", path.read_text()))
    assert named, "deploy/ names no REGIOND_* variable: the scan is broken"
    assert not named - SETTING_VARIABLES, f"not settings: {sorted(named - SETTING_VARIABLES)}"


def test_migrate_without_a_database_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from regiond.__main__ import cmd_migrate

    monkeypatch.delenv("REGIOND_DATABASE_URL", raising=False)
    monkeypatch.delenv("REGIOND_CONFIG", raising=False)
    assert cmd_migrate(regiond_args(["migrate"])) == 2
    assert capsys.readouterr().err == "regiond migrate: give --database-url, REGIOND_DATABASE_URL or --config FILE\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed: no unit check")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on each unit instantiated for a region, run with this checkout's
    regiond in place of /usr/local/bin/regiond: an unknown or misspelt directive fails."""
    regiond = Path(sys.executable).parent / "regiond"
    names = []
    for template in ("regiond@.service", "regiond-migrate@.service"):
        name = template.replace("@", f"@{INSTANCE}")
        (tmp_path / name).write_text((SYSTEMD / template).read_text().replace(REGIOND, str(regiond)))
        names.append(str(tmp_path / name))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not ours, result.stderr


def test_every_regiond_command_of_the_readme_parses() -> None:
    """The commands deploy/README.md shows (its ``sh`` blocks), through regiond's own parser: run
    directly, or in a compose service's container (``exec regiond-<region> regiond ...``)."""
    blocks = re.findall(r"```sh\n(.*?)```", (DEPLOY / "README.md").read_text(), re.DOTALL)
    commands = []
    for argv in (argv for block in blocks for argv in script_commands(block)):
        starts = [i for i, a in enumerate(argv) if a == "regiond" and (i == 0 or argv[i - 1].startswith("regiond-"))]
        commands += [argv[i + 1 :] for i in starts[:1]]
    assert len(commands) >= 2
    for argv in commands:
        regiond_args(argv)
