"""PNG plots of a report (matplotlib, Agg backend; optional)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LATENCY_POINTS: tuple[tuple[str, str], ...] = (
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p99.9", "p99_9"),
    ("max", "max"),
)
LATENCY_SERIES: tuple[tuple[str, str], ...] = (
    ("latency_us", "from intended send"),
    ("service_latency_us", "from actual send"),
)


def plot_latency(report: Mapping[str, Any], path: Path) -> Path | None:
    """Bar chart of latency percentiles (medians) per target; None if nothing to plot.

    Returns None as well when matplotlib is not installed (it is an optional extra).
    """
    plt = pyplot()
    if plt is None:
        return None
    targets: Mapping[str, Any] = report["targets"]
    series: list[tuple[str, list[float]]] = []
    for kind, data in targets.items():
        med: Mapping[str, float] = data["median"]
        for prefix, what in LATENCY_SERIES:
            values = [med.get(f"{prefix}.{key}", 0.0) / 1000.0 for _, key in LATENCY_POINTS]
            if any(values):
                series.append((f"{kind} ({what})", values))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(series)
    xs = range(len(LATENCY_POINTS))
    for n, (label, values) in enumerate(series):
        ax.bar([x + n * width for x in xs], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in xs])
    ax.set_xticklabels([label for label, _ in LATENCY_POINTS])
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    meta = report["meta"]
    params = meta["params"]
    detail = ", ".join(
        f"{k}={params[k]}" for k in ("subscribers", "publishers", "rate") if k in params
    )
    ax.set_title(f"{meta['scenario']} latency percentiles (medians) {detail}")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


MISSING = ("matplotlib is not installed: no PNG plots "
           "(pip install 'edge-relay[plots]' to get them)")


def plot_timeline(report: Mapping[str, Any], path: Path) -> Path | None:
    """Delivered messages/s and latency p50/p99 over time, one line per run, with the
    fault (kill, drain, ...) marked; None without a timeline or without matplotlib."""
    runs = [r for t in report["targets"].values() for r in t["runs"]
            if "timeline" in r and any(r["timeline"]["delivered_per_s"])]
    if not runs:
        return None
    plt = pyplot()
    if plt is None:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for k, run in enumerate(runs):
        tl = run["timeline"]
        label = f"run {k + 1}"
        ax1.plot(tl["t_s"], tl["delivered_per_s"], lw=1, label=label)
        p99 = [v if v > 0 else float("nan") for v in tl["latency_p99_ms"]]
        p50 = [v if v > 0 else float("nan") for v in tl["latency_p50_ms"]]
        line = ax2.plot(tl["t_s"], p99, lw=1, label=f"{label} p99")[0]
        ax2.plot(tl["t_s"], p50, lw=1, ls=":", color=line.get_color(), label=f"{label} p50")
        for ev in tl.get("events", []):
            for ax in (ax1, ax2):
                ax.axvline(ev["t_s"], color="red", ls="--", lw=1)
            ax1.annotate(ev["what"], (ev["t_s"], 0), xytext=(3, 3),
                         textcoords="offset points", color="red", fontsize=8)
    ax1.set_ylabel("delivered messages/s")
    ax2.set_ylabel("latency ms (log)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds since the start of publishing (by receive time)")
    meta = report["meta"]
    fault = meta["params"].get("fault")
    ax1.set_title(f"{meta['scenario']} over time" + (f" — {fault} marked" if fault else ""))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reports(reports: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Latency percentiles (medians) of several reports side by side: one group per
    (scenario, target or transport). None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    series: list[tuple[str, list[float]]] = []
    for rep in reports:
        scenario = rep["meta"]["scenario"]
        transport = rep["meta"]["params"].get("transport")
        for kind, data in rep["targets"].items():
            med = data["median"]
            values = [med.get(f"latency_us.{key}", 0.0) / 1000.0 for _, key in LATENCY_POINTS]
            if any(values):
                label = f"{scenario} / {kind}" + (f" / {transport}" if transport else "")
                series.append((label, values))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(series)
    xs = range(len(LATENCY_POINTS))
    for n, (label, values) in enumerate(series):
        ax.bar([x + n * width for x in xs], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in xs])
    ax.set_xticklabels([label for label, _ in LATENCY_POINTS])
    ax.set_yscale("log")
    ax.set_ylabel("latency from intended send (ms, log scale)")
    ax.set_title("latency percentiles by scenario and target/transport (medians)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
