"""regiond.config: one definition per setting, four sources in order, refusals in one line, secrets redacted."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from regiond import config
from regiond.__main__ import _settings_from_args, main, parser
from regiond.config import BY_KEY, SETTINGS, ConfigError, Settings, load

ROOT = Path(__file__).resolve().parents[2]
URL = "postgresql://regiond:s3cret-pw@db-a:5432,db-b:5432/kms?target_session_attrs=read-write"
ROOT_KEY = "c2VjcmV0LXJvb3Qta2V5LWJ5dGVzLWZvci10ZXN0cyE="


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


BASE = f'region = "eu-west-1"\ndatabase_url = "{URL}"\nplain_http = true\n'


def test_every_field_is_one_setting_and_the_table_covers_them() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    covered = {"listen_host", "listen_port", "extra"}  # listen sets both; extra: test knobs, not settings
    for f in dataclasses.fields(Settings):
        if f.name not in covered:
            assert config._SPEC in f.metadata, f"{f.name} is a Settings field declared without setting()"
    assert "listen" in BY_KEY
    assert len(BY_KEY) == len(SETTINGS) == len(names) - len(covered) + 1


def test_the_docs_table_is_the_generated_one() -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    found = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert found is not None, "docs/CONFIGURATION.md lost its settings markers"
    assert found.group(1) == config.markdown_table(), "regenerate the table: regiond config table"
    for entry in SETTINGS:
        assert f"| `{entry.key}` |" in found.group(1)


def test_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    effective = load(_file(tmp_path, 'region = "r"\ndatabase_url = "postgresql://x"\n'))
    assert effective.settings == Settings(region="r", database_url="postgresql://x")
    assert effective.values["listen"] == "127.0.0.1:8080"
    assert {k for k, v in effective.sources.items() if v != "default"} == {"region", "database_url"}


def test_flags_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = _file(tmp_path, BASE + "workers = 2\ncache_ttl = 60\nhttp_idle_timeout = 90\nlisten = '0.0.0.0:9000'\n")
    environ = {"REGIOND_CACHE_TTL": "120", "REGIOND_HTTP_IDLE_TIMEOUT": "100", "REGIOND_LOG_LEVEL": "debug"}
    args = parser().parse_args(["serve", "--config", str(path), "--http-idle-timeout", "110"])
    effective = load(path, environ, config.flags_from(args))
    s = effective.settings
    assert s.workers == 2 and effective.sources["workers"] == "file"
    assert s.cache_ttl_s == 120.0 and effective.sources["cache_ttl"] == "env"
    assert s.http_idle_timeout_s == 110.0 and effective.sources["http_idle_timeout"] == "flag"
    assert s.log_level == "debug"
    assert (s.listen_host, s.listen_port) == ("0.0.0.0", 9000)
    assert s.http_body_timeout_s == 30.0 and effective.sources["http_body_timeout"] == "default"
    assert s.region == "eu-west-1" and s.plain_http is True


def test_env_texts_are_typed(tmp_path: Path) -> None:
    environ = {
        "REGIOND_REGION": "ap-southeast-2", "REGIOND_DATABASE_URL": "postgresql://x", "REGIOND_AUDIT": "off",
        "REGIOND_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1", "REGIOND_STATE_DIR": str(tmp_path),
        "REGIOND_HOME_REGION": "", "REGIOND_ROOT_KEY": ROOT_KEY,
    }  # fmt: skip
    s = load(None, environ).settings
    assert s.region == "ap-southeast-2" and s.audit_enabled is False
    assert s.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert s.state_dir == tmp_path and s.home_region is None  # an empty variable is unset
    assert s.root_key_b64 == ROOT_KEY


def test_serve_reads_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REGIOND_CONFIG", str(_file(tmp_path, BASE + "workers = 3\n")))
    monkeypatch.setenv("REGIOND_WORKERS", "4")
    s = _settings_from_args(parser().parse_args(["serve", "--no-audit"]))
    assert (s.region, s.workers, s.audit_enabled) == ("eu-west-1", 4, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "cache_tll = 60\n", "unknown setting 'cache_tll'"),
        (BASE + "workers = '2'\n", "workers must be an integer, got a string"),
        (BASE + "workers = 2.5\n", "workers must be an integer, got a number"),
        (BASE + "log_json = 'yes'\n", "log_json must be true or false, got a string"),
        (BASE + "cache_ttl = true\n", "cache_ttl must be a number, got a boolean"),
        (BASE + "trusted_proxies = '10.0.0.1'\n", "trusted_proxies must be an array of strings"),
        (BASE + "http_idle_timeout = 0\n", "http_idle_timeout must be greater than 0"),
        (BASE + "auth_failure_burst = -1\n", "auth_failure_burst must be 0 or more"),
        (BASE + "cache_ttl = inf\n", "cache_ttl must be finite"),
        (BASE + "log_level = 'loud'\n", "log_level must be one of debug, info, warning, error"),
        (BASE + "listen = '8080'\n", "listen must be HOST:PORT"),
        (BASE + "[tls]\ncert = 'x'\n", "unknown setting 'tls'"),
        ('region = "r"\n', "database_url is required"),
        (BASE + "workers = \n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_variable_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REGIOND_WORKERS must be an integer"):
        load(_file(tmp_path, BASE), {"REGIOND_WORKERS": "many"})
    with pytest.raises(ConfigError, match="REGIOND_PLAIN_HTTP must be true or false"):
        load(_file(tmp_path, BASE), {"REGIOND_PLAIN_HTTP": "maybe"})


def test_secrets_have_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--root-key", ROOT_KEY])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_config_check_prints_the_effective_configuration_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, BASE + f'root_key = "{ROOT_KEY}"\nworkers = 2\n')
    monkeypatch.setenv("REGIOND_WORKERS", "5")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret-pw" not in out and ROOT_KEY not in out
    assert 'database_url = "postgresql://regiond:<redacted>@db-a:5432,db-b:5432/kms' in out
    assert 'root_key = "<redacted>"  # file' in out
    assert "workers = 5  # env" in out
    assert "plain_http = true  # file" in out
    # The output is itself a configuration file with the same effect (secrets aside).
    again = _file(tmp_path, out.replace("<redacted>", "x"))
    assert load(again, {}).settings.workers == 5


def test_query_string_passwords_are_redacted() -> None:
    entry = BY_KEY["database_url"]
    assert config.redact(entry, "host=db user=u password=hunter2 dbname=k") == (
        "host=db user=u password=<redacted> dbname=k"
    )
    assert "hunter2" not in config.redact(entry, "postgresql://db/k?sslmode=require&password=hunter2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "workers = 0\n", "workers must be greater than 0"),
        ('region = "r"\ndatabase_url = "postgresql://x"\n', "needs a TLS certificate"),
        (BASE + "bogus = 1\n", "unknown setting 'bogus'"),
    ],
)
def test_config_check_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert main(["config", "check", str(_file(tmp_path, text))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and captured.err.count("\n") == 1


def test_serve_refuses_a_bad_file_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(_file(tmp_path, BASE + "wokers = 2\n"))]) == 2
    assert "regiond serve:" in capsys.readouterr().err


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml", {})


def test_the_documented_example_is_a_valid_file(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    found = re.search(r"```toml\n(.*?)```", text, re.S)
    assert found is not None
    effective = load(_file(tmp_path, found.group(1)), {})
    assert effective.settings.region == "eu-west-1" and effective.settings.workers == 4
    assert {k for k, v in effective.sources.items() if v == "file"} >= {"tls_cert", "tls_key", "peers_file"}


def test_config_check_loads_the_tls_files_as_serve_would(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = f'region = "r"\ndatabase_url = "{URL}"\ntls_cert = "{tmp_path}/absent.pem"\ntls_key = "{tmp_path}/k.pem"\n'
    assert main(["config", "check", str(_file(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "absent.pem" in err and err.count("\n") == 1


def test_the_audit_writers_own_defaults_are_the_settings_defaults() -> None:
    """``WriterOptions()`` (tools and tests that build a writer without settings) is what a node runs."""
    from regiond.audit.writer import WriterOptions

    effective = config.load(environ={"REGIOND_REGION": "us-east-1", "REGIOND_DATABASE_URL": "postgresql:///x"})
    assert WriterOptions() == WriterOptions.from_settings(effective.settings)
