"""The benchmark harness starts regiond with the settings it is given, and refuses what it would not measure.

A benchmark that drops a setting measures the default while its results claim otherwise: the
harness once started regiond without the caller's ``REGIOND_*`` variables. These tests start
nothing: ``subprocess.Popen`` is replaced by a recorder, so what is checked is the environment and
command the real launch code hands to the operating system.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import audit_overhead, harness, runner
from benchmarks.harness import RegionKmsServer, recorded_settings, server_settings, setting_pairs
from regiond.devtools import launcher


class _Started:
    """What ``Popen`` was called with; stands in for the process."""

    pid = 4242
    returncode = None

    def __init__(self, cmd: list[str], **kwargs: Any) -> None:
        self.cmd = cmd
        self.env: dict[str, str] = kwargs["env"]

    def poll(self) -> None:
        return None


@pytest.fixture
def popen(monkeypatch: pytest.MonkeyPatch) -> list[_Started]:
    started: list[_Started] = []

    def record(cmd: list[str], **kwargs: Any) -> _Started:
        started.append(_Started(cmd, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(launcher.NodeProcess, "wait_ready", lambda self, timeout_s=0, context=None: None)
    return started


def test_regiond_gets_the_callers_regiond_variables_and_the_given_settings(
    popen: list[_Started], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGIOND_CACHE_TTL", "120")
    monkeypatch.setenv("REGIOND_AUDIT_MAX_IN_FLIGHT", "3")
    variables = server_settings({"audit_max_in_flight": "4", "pool_max_size": "7"}, os.environ)
    server = RegionKmsServer(tmp_path, workers=2, settings=variables)
    server.database_url = "postgresql://127.0.0.1:1/regionkms"
    server._start_regiond()

    (started,) = popen
    assert started.env["REGIOND_CACHE_TTL"] == "120"
    assert started.env["REGIOND_AUDIT_MAX_IN_FLIGHT"] == "4"  # --setting over the environment
    assert started.env["REGIOND_POOL_MAX_SIZE"] == "7"
    assert started.cmd[started.cmd.index("--workers") + 1] == "2"


def test_the_async_server_runs_the_runs_settings_with_async_durability(
    popen: list[_Started], tmp_path: Path
) -> None:
    variables = runner.async_variant(server_settings({"audit_max_in_flight": "3"}, {}))
    server = RegionKmsServer(tmp_path, workers=2, settings=variables, name="regionkms_async")
    server.database_url = "postgresql://127.0.0.1:1/regionkms"
    server._start_regiond()
    (started,) = popen
    assert started.env["REGIOND_AUDIT_DURABILITY"] == "async"
    assert started.env["REGIOND_AUDIT_MAX_IN_FLIGHT"] == "3"
    assert recorded_settings(variables)["audit_durability"] == "async"


def test_a_restart_keeps_the_settings(popen: list[_Started], tmp_path: Path) -> None:
    server = RegionKmsServer(tmp_path, workers=1, settings={"REGIOND_CACHE_PRELOAD_MAX_KEYS": "10"})
    server.database_url = "postgresql://127.0.0.1:1/regionkms"
    server._start_regiond()
    server.proc = None  # nothing real to stop
    server.restart()
    assert [p.env.get("REGIOND_CACHE_PRELOAD_MAX_KEYS") for p in popen] == ["10", "10"]


def test_only_checked_settings_reach_regiond(popen: list[_Started], tmp_path: Path) -> None:
    """A REGIOND_* variable of the harness's own process that did not go through ``server_settings``
    (so is neither checked nor recorded) is not passed on."""
    server = RegionKmsServer(tmp_path, workers=1, settings={})
    server.database_url = "postgresql://127.0.0.1:1/regionkms"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGIOND_LOG_LEVEL", "debug")
        server._start_regiond()
    assert "REGIOND_LOG_LEVEL" not in popen[0].env


def test_the_audit_overhead_benchmark_passes_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[dict[str, str]] = []

    class Recorder(_Started):
        def __init__(self, cmd: list[str], **kwargs: Any) -> None:
            super().__init__(cmd, **kwargs)
            seen.append(self.env)

    monkeypatch.setattr(subprocess, "Popen", Recorder)
    monkeypatch.setenv("REGIOND_CACHE_TTL", "99")
    variables = server_settings({}, os.environ)
    audit_overhead._serve("postgresql:///x", tmp_path, 1, 1, True, tmp_path / "log", variables)
    assert seen[0]["REGIOND_CACHE_TTL"] == "99"


def test_unknown_settings_are_refused_rather_than_silently_unmeasured() -> None:
    with pytest.raises(ValueError, match="REGIOND_NO_SUCH_THING is not a setting"):
        server_settings({}, {"REGIOND_NO_SUCH_THING": "1"})
    with pytest.raises(ValueError, match="no_such_thing: not a setting"):
        server_settings({"no_such_thing": "1"}, {})


def test_bad_values_are_refused_as_regiond_would() -> None:
    with pytest.raises(ValueError, match="REGIOND_AUDIT_MAX_IN_FLIGHT"):
        server_settings({"audit_max_in_flight": "0"}, {})
    with pytest.raises(ValueError, match="REGIOND_LOG_LEVEL"):
        server_settings({}, {"REGIOND_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("key", sorted(harness.HARNESS_SETTINGS))
def test_settings_the_harness_sets_itself_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="set by the benchmark harness"):
        server_settings({key: "x"}, {})


def test_a_configuration_file_is_refused() -> None:
    with pytest.raises(ValueError, match="REGIOND_CONFIG"):
        server_settings({}, {"REGIOND_CONFIG": "/etc/regiond.toml"})


def test_empty_variables_count_as_unset_as_in_regiond() -> None:
    assert server_settings({}, {"REGIOND_CACHE_TTL": "", "PATH": "/bin"}) == {}


def test_results_record_the_settings_by_key() -> None:
    variables = server_settings({"cache_ttl": "60"}, {"REGIOND_POOL_MAX_SIZE": "5"})
    assert recorded_settings(variables) == {"cache_ttl": "60", "pool_max_size": "5"}


def test_setting_pairs() -> None:
    assert setting_pairs(["cache_ttl=60", "pool_max_size=5", "cache_ttl=30"]) == {
        "cache_ttl": "30",
        "pool_max_size": "5",
    }
    assert setting_pairs(["log_level="]) == {"log_level": ""}
    with pytest.raises(SystemExit):
        setting_pairs(["cache_ttl"])


def test_the_minimal_audit_server_runs_the_runs_audit_settings(tmp_path: Path) -> None:
    """minimal_audit stands for regionkms's audit writer: it gets the run's audit settings, and no other."""
    from benchmarks.baselines.minimal_server import audit_options
    from regiond.audit.writer import WriterOptions

    variables = server_settings({"audit_max_in_flight": "3", "audit_batch_linger_ms": "0.2", "pool_max_size": "7"}, {})
    server = harness.MinimalServer(tmp_path, mode="audit", workers=2, settings=variables)
    server.database_url = "postgresql://127.0.0.1:1/minimal"
    env = server.environment()
    assert env["REGIOND_AUDIT_MAX_IN_FLIGHT"] == "3" and "REGIOND_POOL_MAX_SIZE" not in env
    options = audit_options(env, "us-east-1", server.database_url)
    assert (options.max_in_flight, options.linger_s) == (3, 0.0002)
    assert audit_options({}, "us-east-1", server.database_url) == WriterOptions()  # regiond's defaults
    plain = harness.MinimalServer(tmp_path, mode="work", workers=2, settings=variables)
    assert not any(k.startswith("REGIOND_") for k in plain.environment())
