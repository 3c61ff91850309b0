"""PNG plots of a report (matplotlib, Agg backend; optional)."""

from __future__ import annotations

from collections.abc import Mapping
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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
