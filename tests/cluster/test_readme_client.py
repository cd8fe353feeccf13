"""The README's kmsclient examples, run as written against a fresh three-region `regiond dev`
(what `make run` starts): the CLI block in bash with the printed `export` lines set, then the
Python block. Errors are one line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dev import start_dev, stop_dev

ROOT = Path(__file__).resolve().parents[2]
# The environment running the tests, wherever it is (the README's `.venv/bin/...` lines reach it
# through a link in the working directory): a checkout whose .venv is not this interpreter's, or has
# none, ran the README against another installation or failed on a missing path.
VENV = Path(sys.executable).parent.parent
REGIONS = "us-east-1,eu-west-1,ap-southeast-2"
START_TIMEOUT_S = 180


def _block(marker: str, language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    pattern = (
        re.escape(f"<!-- tested: tests/cluster/test_readme_client.py ({marker}) -->") + rf"\n```{language}\n(.*?)```"
    )
    found = re.search(pattern, readme, re.S)
    assert found, f"README has no tested {marker} block"
    return found.group(1)


def _start(workdir: Path) -> subprocess.Popen[str]:
    return start_dev(workdir / ".state", REGIONS, cwd=workdir, timeout_s=START_TIMEOUT_S)


def _stop(proc: subprocess.Popen[str]) -> None:
    stop_dev(proc, 60, must_stop=False)


@pytest.mark.timeout(420)
def test_the_readme_kmsclient_examples_pass_as_written(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(VENV)
    proc = _start(tmp_path)
    try:
        cluster = json.loads((tmp_path / ".state" / "cluster.json").read_text())
        env = {
            **os.environ,
            "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "AWS_ACCESS_KEY_ID": cluster["credentials"]["access_key_id"],  # the printed `export` lines
            "AWS_SECRET_ACCESS_KEY": cluster["credentials"]["secret_access_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        cli = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _block("kmsclient cli", "sh")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert "Traceback" not in cli.stderr
        assert "card 4111" in cli.stdout
        regions = json.loads(cli.stdout.strip().splitlines()[-1])
        assert {r["region"] for r in regions["regions"]} == set(REGIONS.split(","))
        assert all(r["healthy"] for r in regions["regions"])
        assert [k["uses"] for k in regions["keys"]] == ["us-east-1", "us-east-1"]  # the key's region, not the nearest

        py = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", _block("kmsclient python", "python")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert py.returncode == 0, py.stderr[-3000:]
        assert py.stdout.strip() == "b'order 42' AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"

        kmsclient = [str(VENV / "bin" / "kmsclient"), "--cluster", ".state/cluster.json"]
        for argv, code in (
            (["decrypt", "-c", "app=other", "-i", "backup.tar.enc", "-o", "wrong.tar"], 1),
            (["decrypt", "-i", "backup.tar", "-o", "-"], 1),  # not an encrypted message
            (["decrypt", "-i", "missing.enc", "-o", "out"], 2),
            (["encrypt", "--key", "alias/nope", "-i", "backup.tar", "-o", "x.enc"], 1),
            (["encrypt", "--key", "arn:aws:kms:sa-east-1:111122223333:key/x", "-i", "card.enc", "-o", "y"], 2),
        ):
            run = subprocess.run([*kmsclient, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            assert run.returncode == code, (argv, run.stderr)
            assert run.stderr.startswith("kmsclient: ") and run.stderr.count("\n") == 1, (argv, run.stderr)
            assert "Traceback" not in run.stderr
        assert not (tmp_path / "wrong.tar").exists() and not (tmp_path / "x.enc").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".wrong.tar")]
    finally:
        _stop(proc)
