"""Benchmark reports: the JSON document, medians, ratios and the Markdown summary.

The JSON schema is documented in ``docs/bench.md``. Figures are addressed by dotted
paths into a run's result (``latency_us.p99``, ``server.cpu_us_per_delivery``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.procstats import cpu_count

SCHEMA = "edge-relay-bench/1"
#: Keys of a run result that hold no comparable figures.
NON_FIGURES = frozenset({"histograms", "warnings", "errors"})


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Return every numeric leaf of ``data`` by dotted path (booleans and lists skipped)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        if key in NON_FIGURES:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def medians(runs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Median of every figure over ``runs`` (figures missing from a run are skipped)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, value in flatten(run).items():
            values.setdefault(key, []).append(value)
    return {key: _round(statistics.median(vals)) for key, vals in values.items()}


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def make_meta(scenario: str, params: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ws_version = version("websockets")
    except PackageNotFoundError:
        ws_version = "unknown"
    return {
        "scenario": scenario,
        "params": dict(params),
        "timestamp": stamp,
        "host": {
            "cpu_count": cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        },
        "python": sys.version.split()[0],
        "websockets": ws_version,
        "git_commit": git_commit(),
    }


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report; raise :class:`BenchError` if it is missing or not a report."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BenchError(f"{path} is not a bench report (schema {SCHEMA!r} expected)")
    return data


def write(report: Mapping[str, Any], out_dir: Path, markdown: str) -> tuple[Path, Path]:
    """Write ``<scenario>-<timestamp>.json`` and ``.md`` into ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = report["meta"]
    stem = f"{meta['scenario']}-{meta['timestamp']}"
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


# --- Markdown -----------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.3g}"


def markdown(report: Mapping[str, Any], rows: list[tuple[str, str]]) -> str:
    """The summary: one row per ``(label, figure path)``, a column per target, ratios last."""
    meta = report["meta"]
    targets: dict[str, Any] = report["targets"]
    kinds = list(targets)
    all_ratios: dict[str, dict[str, float | None]] = report.get("ratios", {})
    params = ", ".join(f"{k}={v}" for k, v in meta["params"].items())
    lines = [
        f"# bench {meta['scenario']} — {meta['timestamp']}",
        "",
        f"{params}",
        "",
        f"host: {meta['host']['cpu_count']} CPUs, Python {meta['python']}, "
        f"websockets {meta['websockets']}, commit {meta['git_commit'] or 'none'}. "
        f"Medians of {max(len(t['runs']) for t in targets.values())} run(s).",
        "",
    ]
    header = ["figure", *kinds, *all_ratios]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for label, path in rows:
        cells = [label] + [_fmt(targets[k]["median"].get(path)) for k in kinds]
        cells += [_fmt(r.get(path)) for r in all_ratios.values()]
        lines.append("| " + " | ".join(cells) + " |")
    warnings = report.get("warnings", [])
    if warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"
