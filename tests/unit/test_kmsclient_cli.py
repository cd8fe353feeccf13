"""The CLI's refusals without a server: one line on stderr, exit 2 for usage, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from kmsclient import cli


@pytest.mark.parametrize(
    "argv",
    [
        ["--endpoint", "us-east-1=http://127.0.0.1:9", "encrypt", "-i", "-", "-o", "-"],  # no --key
        ["--endpoint", "us-east-1=http://127.0.0.1:9", "encrypt", "--key", "k", "-c", "novalue", "-i", "-", "-o", "-"],
        ["--endpoint", "not-an-endpoint", "regions"],
        ["--cluster", "/nonexistent/cluster.json", "regions"],
        ["encrypt"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()


def test_an_unexpected_error_is_one_line_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_args: argparse.Namespace) -> dict[str, object]:
        raise ValueError("a defect")

    monkeypatch.setattr(cli, "_regions", broken)
    assert cli.main(["--endpoint", "us-east-1=http://127.0.0.1:9", "regions"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kmsclient: internal error (ValueError)")
