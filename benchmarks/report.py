"""From measured runs to figures: averages over rounds, ratios against baselines, targets.

The targets are those of issue 8 (2 cores, concurrency 32, 1 KiB Encrypt, audit on):

    regionkms / moto_server          >= 25      (throughput)
    regionkms / minimal (b)          >= 0.8     (throughput, same number of workers)
    regionkms p99 / minimal p99      <= 2
    100,000 keys / 1 key             >= 0.8     (throughput)
    GenerateDataKey, Decrypt         >= 0.9 x Encrypt 1 KiB (throughput, "within 10 %")
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HEADLINE_WORKLOAD = "encrypt_1k"
HEADLINE_CONCURRENCY = 32


@dataclass
class Run:
    """One measured run as stored in the results JSON."""

    block: str
    server: str
    workload: str
    concurrency: int
    keys: int
    round: int
    result: dict[str, Any]
    rss_mb: float = 0.0
    postgres_rss_mb: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return float(self.result["rps"])


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.fmean(vals) if vals else 0.0


# Which blocks' runs make a figure: the keys block measures regionkms after a restart, so its one-key
# run is compared with its other key counts only, never averaged into the headline.
NOT_KEYS = ("headline", "ops", "sweep")


def figure(
    runs: list[Run], server: str, workload: str, concurrency: int, keys: int = 1, blocks: tuple[str, ...] = NOT_KEYS
) -> dict[str, float] | None:
    """Mean throughput and latency of the matching runs of ``blocks`` (all rounds), or None if none ran."""
    match = [
        r
        for r in runs
        if (r.server, r.workload, r.concurrency, r.keys) == (server, workload, concurrency, keys) and r.block in blocks
    ]
    if not match:
        return None
    return {
        "rps": round(_mean(r.rps for r in match), 1),
        "p50_ms": round(_mean(r.result["p50_ms"] for r in match), 3),
        "p90_ms": round(_mean(r.result["p90_ms"] for r in match), 3),
        "p99_ms": round(_mean(r.result["p99_ms"] for r in match), 3),
        "max_ms": round(max(r.result["max_ms"] for r in match), 3),
        "errors": sum(int(r.result["errors"]) for r in match),
        "runs": len(match),
        "rss_mb": round(max(r.rss_mb for r in match), 1),
        "server_us_per_request": round(_mean(r.cpu.get("server_us_per_request", 0.0) for r in match), 1),
        "postgres_us_per_request": round(_mean(r.cpu.get("postgres_us_per_request", 0.0) for r in match), 1),
        "other_cores": round(_mean(r.cpu.get("other_cores", 0.0) for r in match), 2),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _target(name: str, value: float | None, op: str, bound: float) -> dict[str, Any]:
    met = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return {"name": name, "value": value, "target": f"{op} {bound}", "met": met}


def summarize(runs: list[Run]) -> dict[str, Any]:
    c = HEADLINE_CONCURRENCY
    head = {
        s: figure(runs, s, HEADLINE_WORKLOAD, c, blocks=("headline",))
        for s in ("regionkms", "minimal", "minimal_audit", "floor", "moto")
    }

    def rps(server: str, workload: str = HEADLINE_WORKLOAD) -> float | None:
        f = head.get(server) if workload == HEADLINE_WORKLOAD else figure(runs, server, workload, c)
        return f["rps"] if f else None

    def ops_rps(workload: str) -> float | None:
        """regionkms in the ops block (Encrypt 1 KiB there too, when it ran: same stretch of time)."""
        f = figure(runs, "regionkms", workload, c, blocks=("ops",))
        return f["rps"] if f else rps("regionkms", workload)

    def keys_rps(keys: int) -> float | None:
        f = keys_fig.get(keys)
        return f["rps"] if f else None

    rk, rk_fig, b_fig = rps("regionkms"), head["regionkms"], head["minimal"]
    key_counts = sorted({r.keys for r in runs if r.block == "keys"})
    keys_fig = {n: figure(runs, "regionkms", HEADLINE_WORKLOAD, c, n, blocks=("keys",)) for n in key_counts}
    ops = sorted({r.workload for r in runs if r.block in ("ops", "headline")})
    per_op = {
        op: {s: figure(runs, s, op, c) for s in ("regionkms", "minimal", "moto") if figure(runs, s, op, c)}
        for op in ops
    }
    ratios = {
        "regionkms_vs_moto": _ratio(rk, rps("moto")),
        "regionkms_vs_minimal": _ratio(rk, rps("minimal")),
        "regionkms_vs_floor": _ratio(rk, rps("floor")),
        "minimal_vs_floor": _ratio(rps("minimal"), rps("floor")),
        # Diagnosis, not a target: (b) plus regionkms's durable audit writer. Its ratio to (b) is what
        # that writer alone leaves of (b); regionkms's ratio to it is what everything else costs.
        "minimal_audit_vs_minimal": _ratio(rps("minimal_audit"), rps("minimal")),
        "regionkms_vs_minimal_audit": _ratio(rk, rps("minimal_audit")),
        "regionkms_p99_vs_minimal_p99": _ratio(
            rk_fig["p99_ms"] if rk_fig else None, b_fig["p99_ms"] if b_fig else None
        ),
        "keys_100000_vs_1": _ratio(keys_rps(100_000), keys_rps(1)),
        "generate_data_key_vs_encrypt": _ratio(ops_rps("generate_data_key"), ops_rps(HEADLINE_WORKLOAD)),
        "decrypt_vs_encrypt": _ratio(ops_rps("decrypt"), ops_rps(HEADLINE_WORKLOAD)),
    }
    targets = [
        _target("throughput vs moto_server", ratios["regionkms_vs_moto"], ">=", 25),
        _target("throughput vs minimal server (b)", ratios["regionkms_vs_minimal"], ">=", 0.8),
        _target("p99 vs minimal server (b) p99", ratios["regionkms_p99_vs_minimal_p99"], "<=", 2),
        _target("100,000 keys vs 1 key throughput", ratios["keys_100000_vs_1"], ">=", 0.8),
        _target("GenerateDataKey vs Encrypt throughput", ratios["generate_data_key_vs_encrypt"], ">=", 0.9),
        _target("Decrypt vs Encrypt throughput", ratios["decrypt_vs_encrypt"], ">=", 0.9),
    ]
    sweep = {
        s: {
            str(r.concurrency): figure(runs, s, HEADLINE_WORKLOAD, r.concurrency)
            for r in runs
            if r.server == s and r.workload == HEADLINE_WORKLOAD and r.keys == 1 and r.block in NOT_KEYS
        }
        for s in sorted({r.server for r in runs if r.block in NOT_KEYS})
    }
    return {
        "headline": head,
        "per_operation": per_op,
        "keys": {str(n): f for n, f in keys_fig.items()},
        "keys_restart": {
            str(n): f
            for n in key_counts
            if (f := figure(runs, "regionkms", HEADLINE_WORKLOAD, c, n, blocks=("keys_restart",)))
        },
        "sweep": sweep,
        "ratios": ratios,
        "targets": targets,
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """The tables benchmarks/README.md shows, from one results JSON."""
    s = results["summary"]
    lines = [
        "| server (c=32, Encrypt 1 KiB) | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU us/req | others' cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in s["headline"].items():
        if f:
            lines.append(
                f"| {name} | {_fmt(f['rps'])} | {_fmt(f['p50_ms'], 2)} | {_fmt(f['p90_ms'], 2)} "
                f"| {_fmt(f['p99_ms'], 2)} | {_fmt(f['max_ms'], 1)} | {f['errors']} "
                f"| {_fmt(f.get('server_us_per_request'), 0)} | {_fmt(f.get('other_cores'), 2)} |"
            )
    lines += [
        "",
        "| operation (c=32) | regionkms req/s | p99 ms | minimal (b) req/s | p99 ms | regionkms / (b) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for op, by in s["per_operation"].items():
        rk, b = by.get("regionkms"), by.get("minimal")
        ratio = _ratio(rk["rps"] if rk else None, b["rps"] if b else None)
        lines.append(
            f"| {op} | {_fmt(rk['rps'] if rk else None)} | {_fmt(rk['p99_ms'] if rk else None, 2)} "
            f"| {_fmt(b['rps'] if b else None)} | {_fmt(b['p99_ms'] if b else None, 2)} | {_fmt(ratio, 2)} |"
        )
    if s["keys"]:
        lines += [
            "",
            "| keys (Encrypt 1 KiB, c=32) | req/s | p99 ms | regiond RSS MiB | right after a restart: req/s (p99 ms) |",
            "|---:|---:|---:|---:|---:|",
        ]
        restart = s.get("keys_restart", {})
        for n, f in s["keys"].items():
            if f:
                r = restart.get(n)
                after = f"{_fmt(r['rps'])} ({_fmt(r['p99_ms'], 1)})" if r else "—"
                lines.append(
                    f"| {int(n):,} | {_fmt(f['rps'])} | {_fmt(f['p99_ms'], 2)} | {_fmt(f['rss_mb'])} | {after} |"
                )
    lines += [
        "",
        "| concurrency | " + " | ".join(f"{srv} req/s (p99 ms)" for srv in s["sweep"]) + " |",
        "|---:|" + "---:|" * len(s["sweep"]),
    ]
    levels = sorted({int(c) for by in s["sweep"].values() for c in by})
    for level in levels:
        cells = []
        for by in s["sweep"].values():
            f = by.get(str(level))
            cells.append(f"{_fmt(f['rps'])} ({_fmt(f['p99_ms'], 1)})" if f else "—")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    lines += ["", "| target | value | bound | met |", "|---|---:|---|---|"]
    for t in s["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['name']} | {_fmt(t['value'], 2)} | {t['target']} | {met} |")
    r = s["ratios"]
    if r.get("minimal_audit_vs_minimal") is not None:
        lines += [
            "",
            "| diagnosis (c=32, Encrypt 1 KiB) | ratio |",
            "|---|---:|",
            f"| ((b) + regionkms's durable audit writer) / (b) | {_fmt(r['minimal_audit_vs_minimal'], 2)} |",
            f"| regionkms / ((b) + audit writer): all but the audit | {_fmt(r.get('regionkms_vs_minimal_audit'), 2)} |",
        ]
    return "\n".join(lines)
