"""``anomaly``: the edge's anomaly detector scored by NAB's rules on labelled series.

Runs the detector the edge runs (``edge_node.iot.detect``, built from ``--detector`` and
``--z-on`` exactly as the edge builds it from ``--iot-detector`` / ``--iot-z-on``) over
every series of a NAB-format directory, one sample at a time through
``Detector.update``, as the edge's pipeline does.  Each sample gets a score in [0, 1]:
a graded detector (``Detector.graded`` true: mode ``likelihood``, the edge's default)
scores every sample, and its ``Detector.last_score`` is read after each update; a
binary one (the z-score modes) gives 1.0 on an alert's raising sample and 0.0
elsewhere.  Scoring: ``bench.nab`` (NAB v1.1's rules; its docstring lists
the choices).

Reports, per profile (standard, reward_low_FP, reward_low_FN), the normalised NAB
score at the threshold the edge deploys (0.5: an alert is a detection) and at NAB's
optimised threshold; a per-category table; µs per sample (``Detector.update`` alone, plus
the ``last_score`` read of a graded detector:
median over series, and the total); memory per series (a deep ``sys.getsizeof`` walk of
each detector after its series, the shared settings left out); detections inside and
outside the windows; and a PNG of up to ``--series`` series (windows shaded, learning
period grey, score and alerts).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import nab, report
from bench.errors import BenchError
from bench.progress import Progress
from bench.validators import positive_float, positive_int
from edge_node.iot.detect import MODES, Detector, DetectorSettings

_EPOCH = datetime(1970, 1, 1)

__all__ = ["register", "cmd", "edge_detector", "sample_score", "deep_size", "evaluate",
           "DEPLOYED_THRESHOLD", "ROWS"]

#: A binary detector's alert is 1.0, anything else 0.0: any threshold in (0, 1] is the
#: deployed behaviour (an alert is a detection).
DEPLOYED_THRESHOLD = 0.5
SHORT = {"standard": "standard", "reward_low_FP": "low FP", "reward_low_FN": "low FN"}

ROWS: list[tuple[str, str]] = [
    *[row for prof, short in SHORT.items() for row in (
        (f"{short}: NAB score, deployed threshold", f"scores.{prof}.deployed"),
        (f"{short}: NAB score, optimised threshold", f"scores.{prof}.optimised"),
        (f"{short}: optimised threshold", f"scores.{prof}.optimised_threshold"))],
    ("series", "series"),
    ("samples", "samples"),
    ("anomaly windows", "windows"),
    ("windows detected (deployed)", "detections.windows_detected"),
    ("detections inside windows (all)", "detections.in_windows"),
    ("detections outside windows (false positives)", "detections.outside_windows"),
    ("alerts in the learning periods (ignored)", "detections.in_learning_period"),
    ("µs per sample, median over series", "us_per_sample.median"),
    ("detector time, all series (s)", "us_per_sample.total_s"),
    ("detector memory per series, median (bytes, getsizeof walk)", "memory_bytes.median"),
    ("detector memory per series, max (bytes, getsizeof walk)", "memory_bytes.max"),
]


def register(subs: Any) -> None:
    sp = subs.add_parser(
        "anomaly", help="the edge's anomaly detector scored by NAB's rules (labelled series)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get("NAB_DATA")
    sp.add_argument("--data", type=Path, default=Path(env) if env else None,
                    help="NAB-format directory: data/<category>/<name>.csv and "
                    "windows.json (default: the NAB_DATA environment variable"
                    + (f", now {env}" if env else ", unset: then --data is required") + ")")
    default = _edge_default()
    sp.add_argument("--detector", choices=MODES, default=default,
                    help=f"detector mode, as the edge's --iot-detector (default: {default})")
    sp.add_argument("--z-on", type=positive_float, default=6.0,
                    help="z-score that raises an alert in the z modes, as the edge's "
                    "--iot-z-on (at least "
                    f"{DetectorSettings().z_off:g}; default: 6.0)")
    sp.add_argument("--plot", type=Path, default=None,
                    help="PNG to write (default: OUT/anomaly-<timestamp>.png)")
    sp.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    sp.add_argument("--series", type=positive_int, default=6,
                    help="series in the PNG, one per category in turn (default: 6)")
    sp.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="report directory (default: bench-results)")
    sp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sp.set_defaults(func=cmd)


def _edge_default() -> str:
    from edge_node.config import EdgeSettings

    return EdgeSettings().iot_detector


def edge_detector(mode: str, z_on: float) -> DetectorSettings:
    """The detector settings an edge started with ``--iot-detector mode --iot-z-on z_on``
    uses (through ``EdgeSettings`` and ``iot_settings``, the edge's own path)."""
    from edge_node.config import EdgeSettings
    from edge_node.iot.service import iot_settings

    z_off = DetectorSettings().z_off
    if not z_on >= z_off:  # the edge's CLI refuses it too
        raise BenchError(f"--z-on must be at least {z_off:g} (alerts clear below "
                         f"{z_off:g}), not {z_on:g}")
    try:
        return iot_settings(replace(EdgeSettings(), iot_detector=mode, iot_z_on=z_on)).detector
    except ValueError as exc:
        raise BenchError(str(exc)) from None


def sample_score(verdict: Any) -> float:
    """A sample's score in [0, 1] from what ``Detector.update`` returned.

    Binary detectors (the z modes): 1.0 on the sample that raises an alert, 0.0
    elsewhere (a clearing verdict included); their ``Verdict.score`` is a z-score,
    unbounded and only present on state changes, so it is not used.  A verdict marked
    ``graded = True`` has its ``score`` (in [0, 1]) used as is; a graded detector's
    samples without a verdict are scored from ``Detector.last_score`` instead (see
    :func:`run_series`).
    """
    if verdict is None:
        return 0.0
    if getattr(verdict, "graded", False):
        s = float(verdict.score)
        if not 0.0 <= s <= 1.0:
            raise BenchError(f"a graded verdict's score must be in [0, 1], not {s!r}")
        return s
    return 1.0 if verdict.state == "raised" else 0.0


def deep_size(obj: object, skip: Sequence[object] = ()) -> int:
    """Bytes of ``obj`` and everything it references (``sys.getsizeof`` of each object
    once: slots, ``__dict__``, lists, tuples, deques, dicts, sets), but ``skip``."""
    seen = {id(o) for o in skip}
    todo = [obj]
    size = 0
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        size += sys.getsizeof(o)
        if isinstance(o, dict):
            todo.extend(o.keys())
            todo.extend(o.values())
        elif isinstance(o, list | tuple | deque | set | frozenset):
            todo.extend(o)
        elif not isinstance(o, str | bytes | int | float | bool | type(None)):
            for cls in type(o).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(o, name):
                        todo.append(getattr(o, name))
            if hasattr(o, "__dict__"):
                todo.append(vars(o))
    return size


@dataclass(frozen=True, slots=True)
class SeriesRun:
    scores: list[float]
    ns: int
    memory: int
    raised: int


def epoch_seconds(timestamps: Sequence[datetime]) -> list[float]:
    """NAB's naive wall-clock timestamps as seconds since 1970-01-01 (same wall clock)."""
    return [(t - _EPOCH).total_seconds() for t in timestamps]


def run_series(values: Sequence[float], settings: DetectorSettings,
               times: Sequence[float] | None = None) -> SeriesRun:
    """The detector over one series, sample by sample, as the edge's pipeline drives it
    (with each sample's timestamp, seconds, when ``times`` is given); a graded detector's
    ``last_score`` is read after every update (inside the timing)."""
    det = Detector(settings)
    update = det.update
    if det.graded:  # a score for every sample: read after each update
        scores = []
        verdicts = []
        ts: Sequence[float | None] = times if times is not None else [None] * len(values)
        t0 = time.perf_counter_ns()
        for x, t in zip(values, ts, strict=True):
            verdicts.append(update(x, t))
            scores.append(det.last_score)
        ns = time.perf_counter_ns() - t0
        for sc in scores:
            if not 0.0 <= sc <= 1.0:
                raise BenchError(f"a graded detector's score must be in [0, 1], not {sc!r}")
    else:
        t0 = time.perf_counter_ns()
        verdicts = [update(x) for x in values]
        ns = time.perf_counter_ns() - t0
        scores = [sample_score(v) for v in verdicts]
    raised = sum(1 for v in verdicts if v is not None and v.state == "raised")
    return SeriesRun(scores, ns, deep_size(det, skip=(settings,)), raised)


def evaluate(corpus: Sequence[nab.Series], settings: DetectorSettings,
             progress: Progress | None = None) -> tuple[dict[str, Any], list[SeriesRun]]:
    """Run the detector over ``corpus`` and score it; the run's figures."""
    runs: list[SeriesRun] = []
    truths: list[nab.Truth] = []
    for k, s in enumerate(corpus):
        if progress is not None:
            progress.update(f"{k + 1}/{len(corpus)} {s.name}", force=True)
        runs.append(run_series(s.values, settings, epoch_seconds(s.timestamps)))
        truths.append(nab.truth(len(s.values), s.windows))
    scores = [r.scores for r in runs]
    deployed = [nab.score(t, sc, DEPLOYED_THRESHOLD) for t, sc in zip(truths, scores,
                                                                       strict=True)]
    dep = nab.total(deployed)
    points = nab.sweep(truths, scores)
    by_profile: dict[str, Any] = {}
    for prof, p in nab.PROFILES.items():
        thr, opt = nab.optimise(points, p)
        by_profile[prof] = {
            "deployed": _r(dep.normalised(p)), "optimised": _r(opt.normalised(p)),
            "optimised_threshold": thr, "raw_deployed": _r(dep.raw(p)),
            "raw_optimised": _r(opt.raw(p)), "null": dep.null(p), "perfect": dep.perfect(p),
            "optimised_windows_detected": opt.detected,
            "optimised_false_positives": opt.false_positives}
    cats: dict[str, Any] = {}
    for s, t in zip(corpus, deployed, strict=True):
        c = cats.setdefault(s.category, {"series": 0, "tally": nab.Tally()})
        c["series"] += 1
        c["tally"] = c["tally"] + t
    categories = {
        name: {"series": c["series"], "windows": c["tally"].windows,
               "windows_detected": c["tally"].detected,
               "false_positives": c["tally"].false_positives,
               **{prof: _r(c["tally"].normalised(p)) for prof, p in nab.PROFILES.items()},
               "raw_standard": _r(c["tally"].raw(nab.PROFILES["standard"]))}
        for name, c in cats.items()}
    samples = sum(len(s.values) for s in corpus)
    learning = sum(1 for t, r in zip(truths, runs, strict=True)
                   for x in r.scores[:t.learning] if x >= DEPLOYED_THRESHOLD)
    per_us = [r.ns / 1000 / len(s.values) for s, r in zip(corpus, runs, strict=True)]
    mem = [r.memory for r in runs]
    out = {
        "series": len(corpus), "samples": samples, "windows": dep.windows,
        "scores": by_profile,
        "detections": {"alerts_raised": sum(r.raised for r in runs),
                       "in_learning_period": learning, "in_windows": dep.in_windows,
                       "windows_detected": dep.detected,
                       "outside_windows": dep.false_positives},
        "us_per_sample": {"median": round(statistics.median(per_us), 3),
                          "mean": round(sum(r.ns for r in runs) / 1000 / samples, 3),
                          "total_s": round(sum(r.ns for r in runs) / 1e9, 3)},
        "memory_bytes": {"median": round(statistics.median(mem)), "max": max(mem)},
        "categories": categories,
        "per_series": [
            {"name": s.name, "samples": len(s.values), "windows": t.windows,
             "alerts": r.raised, "windows_detected": d.detected,
             "false_positives": d.false_positives,
             "raw_standard": _r(d.raw(nab.PROFILES["standard"])),
             "us_per_sample": round(u, 3), "memory_bytes": r.memory}
            for s, t, r, d, u in zip(corpus, truths, runs, deployed, per_us, strict=True)],
    }
    return out, runs


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def cmd(args: argparse.Namespace) -> int:
    if args.data is None:
        raise BenchError("--data DIR is required (or set NAB_DATA): a NAB-format "
                         "directory with data/<category>/<name>.csv and windows.json")
    settings = edge_detector(args.detector, args.z_on)
    corpus, warnings = nab.load(args.data)
    progress = Progress(enabled=not args.quiet)
    progress.label = "anomaly"
    run, runs = evaluate(corpus, settings, progress)
    progress.done(f"{run['series']} series, {run['samples']:,} samples scored")
    params = {"data": str(args.data), "detector": settings.mode, "z_on": settings.z_on,
              "z_off": settings.z_off, "alpha": settings.alpha, "warmup": settings.warmup,
              "deployed_threshold": DEPLOYED_THRESHOLD}
    stamp = report.timestamp()
    doc = {"schema": report.SCHEMA, "meta": report.make_meta("anomaly", params, stamp),
           "targets": {"edge": {"runs": [run], "median": report.medians([run])}},
           "ratios": {}, "warnings": warnings}
    md = report.markdown(doc, ROWS) + _category_table(run)
    json_path, md_path = report.write(doc, args.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    print(f"summary: {md_path}", file=sys.stderr)
    if not args.no_plot:
        from bench.plots import MISSING, pyplot

        path = args.plot or json_path.with_suffix(".png")
        if pyplot() is None:
            print(f"note: {MISSING}", file=sys.stderr)
        elif plot(corpus, runs, args.series, path, settings) is not None:
            print(f"plot: {path}", file=sys.stderr)
    return 0


def _category_table(run: dict[str, Any]) -> str:
    lines = ["", "NAB score per category at the deployed threshold (normalised within "
             "the category; '-' without windows):", "",
             "| category | series | windows | detected | false positives | standard "
             "| low FP | low FN |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in sorted(run["categories"].items()):
        cells = [name, c["series"], c["windows"], c["windows_detected"],
                 c["false_positives"], *(c[p] for p in SHORT)]
        lines.append("| " + " | ".join("-" if x is None else str(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def _pick(corpus: Sequence[nab.Series], n: int) -> list[int]:
    """Up to ``n`` series, one per category in turn (name order within a category)."""
    by_cat: dict[str, list[int]] = {}
    for k, s in enumerate(corpus):
        by_cat.setdefault(s.category, []).append(k)
    out: list[int] = []
    depth = 0
    while len(out) < min(n, len(corpus)):
        for ks in by_cat.values():
            if depth < len(ks) and len(out) < n:
                out.append(ks[depth])
        depth += 1
    return out


def plot(corpus: Sequence[nab.Series], runs: Sequence[SeriesRun], n: int, path: Path,
         settings: DetectorSettings) -> Path | None:
    """Values, windows (shaded), learning period (grey), score and alerts of up to ``n``
    series; None without matplotlib."""
    from bench.plots import pyplot

    plt = pyplot()
    if plt is None:
        return None
    chosen = _pick(corpus, n)
    fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.3 * len(chosen)), squeeze=False)
    for ax, k in zip(axes[:, 0], chosen, strict=True):
        s, r = corpus[k], runs[k]
        ts = s.timestamps
        ax.plot(ts, s.values, lw=0.6, color="tab:blue")
        learning = nab.learning_period(len(ts))
        if learning:
            ax.axvspan(ts[0], ts[learning - 1], color="grey", alpha=0.2, lw=0)
        for a, b in s.windows:
            ax.axvspan(ts[a], ts[b], color="tab:orange", alpha=0.3, lw=0)
        hits = [i for i, x in enumerate(r.scores) if x >= DEPLOYED_THRESHOLD]
        ax.plot([ts[i] for i in hits], [s.values[i] for i in hits], "v", color="red", ms=5)
        ax2 = ax.twinx()
        ax2.plot(ts, r.scores, lw=0.5, color="tab:red", alpha=0.5)
        ax2.set_ylim(0, 1.05)
        ax2.set_yticks([0, 1])
        ax.set_title(f"{s.name}: {r.raised} alerts", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax2.tick_params(labelsize=7)
    fig.suptitle(f"edge detector ({settings.mode}, z_on {settings.z_on:g}) on NAB series: "
                 "windows orange, learning period grey, alerts red, score right axis",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
