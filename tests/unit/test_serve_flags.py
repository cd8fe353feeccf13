"""`regiond serve`'s HTTP bounds (regiond.runtime.listener) as flags: parsed into Settings, refused unless positive."""

from __future__ import annotations

import pytest

from regiond.__main__ import _settings_from_args, parser

NODE = ["serve", "--region", "us-east-1", "--database-url", "postgresql://x@127.0.0.1/x"]


def test_the_http_bounds_reach_the_settings() -> None:
    args = parser().parse_args(
        [*NODE, "--http-header-timeout", "2.5", "--http-body-timeout", "7", "--http-idle-timeout", "90",
         "--http-max-connections", "64"]
    )  # fmt: skip
    settings = _settings_from_args(args)
    assert (settings.http_header_timeout_s, settings.http_body_timeout_s) == (2.5, 7.0)
    assert (settings.http_idle_timeout_s, settings.http_max_connections) == (90.0, 64)


def test_the_defaults_are_the_documented_ones() -> None:
    settings = _settings_from_args(parser().parse_args(NODE))
    assert (settings.http_header_timeout_s, settings.http_body_timeout_s, settings.http_idle_timeout_s) == (10, 30, 75)
    assert settings.http_max_connections == 1024


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--http-max-connections", "0"), ("--http-header-timeout", "-1"), ("--http-body-timeout", "nan"),
     ("--http-idle-timeout", "soon"),
     ("--http-idle-timeout", "inf"), ("--http-max-connections", "1.5")],
)  # fmt: skip
def test_a_bound_that_is_not_positive_is_refused(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args([*NODE, flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err
