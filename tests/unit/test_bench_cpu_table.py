"""benchmarks/cpu_table.py: how profiler samples are split into the README's components (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cpu_table import OTHER, classify, components, markdown, update_readme


def test_a_sample_counts_for_its_innermost_known_component() -> None:
    outer = ["Runner.run (asyncio/runners.py:118)", "RequestHandler.start (aiohttp/web_protocol.py:500)",
             "handle (regiond/protocol/routes.py:230)"]  # fmt: skip
    assert classify([*outer, "Authenticator.authenticate (regiond/auth/authn.py:1)", "HMAC.copy (hmac.py:3)"]) == (
        "SigV4 and authentication"
    )
    assert classify(outer) == "request path (routes.handle, the handler itself)"
    assert classify([*outer[:2], "StreamWriter._writelines (aiohttp/http_writer.py:116)"]) == (
        "HTTP (aiohttp, multidict, yarl)"
    )
    assert classify(outer[:1]) == "event loop (uvloop, asyncio)"
    assert classify(["<module> (<string>:2)"]) == OTHER


def test_absolute_paths_count_as_the_package_paths_py_spy_usually_prints() -> None:
    frame = "Connection._do_execute (/srv/venv/lib/python3.11/site-packages/asyncpg/connection.py:1)"
    assert classify([frame]) == "audit: asyncpg (the writer's client)"


def test_the_minimal_servers_methods_split_as_regionkms_does() -> None:
    base = ["_Work.handle (benchmarks/baselines/minimal_server.py:150)"]
    assert classify([*base, "_Work.seal (benchmarks/baselines/minimal_server.py:80)"]) == (
        "key resolution, AES-GCM, ciphertext format"
    )
    assert classify([*base, "_Work.signing_key (benchmarks/baselines/minimal_server.py:70)"]) == (
        "SigV4 and authentication"
    )
    assert classify([*base, "_Work._record (benchmarks/baselines/minimal_server.py:170)"]) == (
        "audit: event, batch, chain (worker side)"
    )
    assert classify(base) == "request path (routes.handle, the handler itself)"


def test_components_add_up_the_collapsed_stacks() -> None:
    raw = "\n".join([
        "Runner.run (asyncio/runners.py:1);handle (regiond/protocol/routes.py:2) 7",
        "Runner.run (asyncio/runners.py:1);verify (regiond/auth/sigv4.py:3) 3",
        "mystery (somewhere.py:9) 2",
        "not a sample line",
    ])  # fmt: skip
    samples, per, unclassified = components(raw)
    assert samples == 12
    assert per["request path (routes.handle, the handler itself)"] == 7
    assert per["SigV4 and authentication"] == 3
    assert per[OTHER] == 2
    assert unclassified == {"mystery (somewhere.py)": 2}


def _results() -> dict[str, object]:
    def sampled(workers_us: float, postgres_us: float, parts: dict[str, float]) -> dict[str, object]:
        return {
            "workers_us_per_request": workers_us, "components_us": parts,
            "cpu": {"server_us_per_request": workers_us + postgres_us + 1, "postgres_us_per_request": postgres_us},
        }  # fmt: skip

    return {
        "sampled": {
            "minimal": sampled(100, 0, {"SigV4 and authentication": 10, "HTTP (aiohttp, multidict, yarl)": 90}),
            "regionkms": sampled(200, 50, {"SigV4 and authentication": 15, "HTTP (aiohttp, multidict, yarl)": 185}),
        },
        "accounting": {
            name: {"server_us_per_request": 1.0, "postgres_us_per_request": 0.0, "rps": 10.0, "other_cores_max": 0.1}
            for name in ("minimal", "regionkms")
        },
        "micro": None,
    }


def test_the_table_has_a_column_per_server_and_the_measured_totals() -> None:
    table = markdown(_results())
    lines = table.splitlines()
    assert lines[0] == "| Encrypt 1 KiB, c=32: CPU us per request | minimal (b) | regionkms |"
    assert "| SigV4 and authentication | 10 | 15 |" in lines
    assert "| PostgreSQL | — | 50 |" in lines
    assert "| rest of the process tree (supervisor) | 1 | 1 |" in lines


def test_update_readme_replaces_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- cpu-table -->\nold table\n<!-- /cpu-table -->\nafter\n")
    update_readme("| new |\n", "<!-- run -->", readme)
    assert readme.read_text() == "before\n<!-- cpu-table -->\n<!-- run -->\n\n| new |\n<!-- /cpu-table -->\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        update_readme("| new |\n", "", readme)
