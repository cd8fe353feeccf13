"""PNG plots of one results JSON: throughput vs concurrency, and latency percentiles.

matplotlib is a test extra (``pip install -e '.[test]'``); without it the runner still
writes the JSON and says the plots were skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {
    "regionkms": "#1f77b4",
    "regionkms_async": "#17becf",
    "minimal": "#2ca02c",
    "minimal_audit": "#bcbd22",
    "floor": "#7f7f7f",
    "moto": "#d62728",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_vs_concurrency(results: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for server, by_level in results["summary"]["sweep"].items():
        levels = sorted(int(c) for c in by_level)
        if not levels:
            continue
        ax.plot(levels, [by_level[str(c)]["rps"] for c in levels], marker="o", label=server, color=COLORS.get(server))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrency (connections, closed loop)")
    ax.set_ylabel("requests/s (log scale)")
    ax.set_title(
        f"Encrypt 1 KiB throughput ({results['machine']['cores']} cores, {results['config']['workers']} workers)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def latency_percentiles(results: dict[str, Any], path: Path) -> Path:
    """Grouped bars: p50/p90/p99 at concurrency 32 for each server (Encrypt 1 KiB) and regionkms op."""
    plt = _pyplot()
    s = results["summary"]
    groups: list[tuple[str, dict[str, Any]]] = [(f"{name}\nEncrypt 1K", f) for name, f in s["headline"].items() if f]
    for op, by in s["per_operation"].items():
        if op != "encrypt_1k" and "regionkms" in by:
            groups.append((f"regionkms\n{op}", by["regionkms"]))
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(groups)), 4.8), dpi=110)
    width = 0.27
    for i, pct in enumerate(("p50_ms", "p90_ms", "p99_ms")):
        xs = [g + (i - 1) * width for g in range(len(groups))]
        ax.bar(xs, [f[pct] for _, f in groups], width, label=pct.replace("_ms", ""))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label for label, _ in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency percentiles at concurrency 32 (all requests)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def targets_chart(results: dict[str, Any], path: Path) -> Path:
    """One bar per measured target: how far it is from its bound, as a multiple of what meets it exactly
    (value / bound for ``>=``, bound / value for ``<=``): 1 or more is met. Reported figures are left out."""
    plt = _pyplot()
    rows = []
    for t in results["summary"]["targets"]:
        if t.get("met") is None or not t.get("value"):
            continue
        bound = float(t["target"].split()[1])
        score = t["value"] / bound if t["target"].startswith(">=") else bound / t["value"]
        rows.append((t["name"], score, bool(t["met"])))
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(3, len(rows)) + 1.2), dpi=110)
    ys = range(len(rows))
    ax.barh(list(ys), [r[1] for r in rows], color=["#2ca02c" if r[2] else "#d62728" for r in rows])
    for y, (_, score, _) in zip(ys, rows, strict=True):
        ax.text(score, y, f" {score:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("measured / bound (1 = just met; below 1: missed by that factor)")
    ax.set_title("Targets (audit_durability = sync)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], stem: Path) -> list[Path]:
    """Write ``<stem>-throughput.png``, ``<stem>-latency.png`` and ``<stem>-targets.png``; [] if matplotlib
    is missing."""
    try:
        _pyplot()
    except ImportError:
        return []
    out = [throughput_vs_concurrency(results, stem.with_name(stem.name + "-throughput.png"))]
    out.append(latency_percentiles(results, stem.with_name(stem.name + "-latency.png")))
    out.append(targets_chart(results, stem.with_name(stem.name + "-targets.png")))
    return out
