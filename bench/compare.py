"""``bench compare OLD.json NEW.json``: the change of every figure between two reports."""

from __future__ import annotations

import os
from typing import Any

from bench import report
from bench.errors import BenchError


def _fmt(x: float) -> str:
    return f"{x:,.6g}"


def compare(
    old_path: str | os.PathLike[str], new_path: str | os.PathLike[str], show_all: bool = True
) -> str:
    """Return a text table of every numeric figure: old, new, change and change in %.

    Per target the medians are compared, then the ratios. Raises :class:`BenchError`
    if a file is not a report or the two are of different scenarios.
    """
    old, new = report.load(old_path), report.load(new_path)
    if old["meta"]["scenario"] != new["meta"]["scenario"]:
        raise BenchError(
            f"different scenarios: {old['meta']['scenario']} vs {new['meta']['scenario']}"
        )
    lines = [
        f"compare {old['meta']['scenario']}: {old['meta']['timestamp']} -> "
        f"{new['meta']['timestamp']}",
    ]
    changed = _param_changes(old["meta"]["params"], new["meta"]["params"])
    if changed:
        lines.append("parameters differ: " + ", ".join(changed))
    sections: list[tuple[str, dict[str, float], dict[str, float]]] = []
    for kind in sorted(set(old["targets"]) | set(new["targets"])):
        sections.append((
            kind,
            old["targets"].get(kind, {}).get("median", {}),
            new["targets"].get(kind, {}).get("median", {}),
        ))
    sections.append(("ratios", report.flatten(old.get("ratios", {})),
                     report.flatten(new.get("ratios", {}))))
    for name, a, b in sections:
        rows = _rows(a, b, show_all)
        if not rows:
            continue
        width = max(len(r[0]) for r in rows)
        lines += ["", f"[{name}]", f"{'figure':<{width}}  {'old':>14}  {'new':>14}  "
                  f"{'change':>14}  {'change %':>9}"]
        for fig, va, vb, delta, pct in rows:
            lines.append(f"{fig:<{width}}  {va:>14}  {vb:>14}  {delta:>14}  {pct:>9}")
    return "\n".join(lines) + "\n"


def _rows(
    a: dict[str, float], b: dict[str, float], show_all: bool
) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    for fig in sorted(set(a) | set(b)):
        va, vb = a.get(fig), b.get(fig)
        if va is None or vb is None:
            rows.append((fig, "-" if va is None else _fmt(va),
                         "-" if vb is None else _fmt(vb), "", ""))
            continue
        delta = vb - va
        if delta == 0 and not show_all:
            continue
        pct = f"{100.0 * delta / abs(va):+.1f}%" if va else ""
        rows.append((fig, _fmt(va), _fmt(vb), f"{delta:+,.6g}", pct))
    return rows


def _param_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
