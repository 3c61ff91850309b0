"""Detection quality on a generated data set with injected anomalies.

Each series is a noisy sensor at 10 samples/s: a slow sine (the daily cycle,
squeezed) plus Gaussian noise and a few heavy-tailed glitches that are *not*
anomalies (|noise| up to ~4.5 sigma).  Injected anomalies, at random places:

- **spikes**: one sample off by 8 to 14 sigma;
- **level shifts**: the level moves by 6 to 10 sigma for 150 to 400 samples.

An alert (a ``raised`` verdict) is a true positive when it falls inside an
anomaly (from its start to ``tolerance`` samples after its end), else a false
positive.  An anomaly is detected when an alert is raised within ``tolerance``
samples of its start.  Precision = TP / alerts, recall = detected / anomalies.

Run: ``python -m edge_node.iot.evaluate [--seeds 1 2 3] [--series 50] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, replace
from typing import Any

from edge_node.iot.detect import MODES, Detector, DetectorSettings

__all__ = ["Series", "generate", "evaluate", "main"]


@dataclass(frozen=True, slots=True)
class Series:
    """One generated series and its anomalies ``(kind, start, end)`` (sample indexes)."""

    values: list[float]
    anomalies: list[tuple[str, int, int]]


def generate(seed: int, n: int = 3000, spikes: int = 3, shifts: int = 1,
             clean: bool = False) -> Series:
    """A series of ``n`` samples; ``clean`` = noise only, no anomalies."""
    rng = random.Random(seed)
    sigma, base, amp = 1.0, rng.uniform(10, 40), rng.uniform(0.5, 3.0)
    period = rng.uniform(600, 3000)
    vals = []
    for i in range(n):
        noise = rng.gauss(0, sigma)
        if rng.random() < 0.002:  # glitches: heavy tail, still not an anomaly
            noise = math.copysign(rng.uniform(3.0, 4.5), noise) * sigma
        vals.append(base + amp * math.sin(2 * math.pi * i / period) + noise)
    anomalies: list[tuple[str, int, int]] = []
    if not clean:
        taken: list[tuple[int, int]] = []

        def free(a: int, b: int) -> bool:
            return all(b + 100 < x or a > y + 100 for x, y in taken)

        for _ in range(shifts):
            for _try in range(100):
                d = rng.randint(150, 400)
                p = rng.randint(300, n - d - 100)
                if free(p, p + d):
                    off = rng.choice((-1, 1)) * rng.uniform(6, 10) * sigma
                    for i in range(p, p + d):
                        vals[i] += off
                    taken.append((p, p + d))
                    anomalies.append(("level_shift", p, p + d))
                    break
        for _ in range(spikes):
            for _try in range(100):
                p = rng.randint(300, n - 100)
                if free(p, p):
                    vals[p] += rng.choice((-1, 1)) * rng.uniform(8, 14) * sigma
                    taken.append((p, p))
                    anomalies.append(("spike", p, p))
                    break
    anomalies.sort(key=lambda a: a[1])
    return Series(vals, anomalies)


def evaluate(settings: DetectorSettings, seeds: list[int], series: int = 50,
             tolerance: int = 30) -> dict[str, Any]:
    """Precision/recall of ``settings`` over ``series`` series per seed, plus the
    false alerts on as many clean series."""
    tp = fp = detected = total = clean_alerts = samples = 0
    by_kind: dict[str, list[int]] = {}
    for seed in seeds:
        for k in range(series):
            s = generate(seed * 100_003 + k)
            det = Detector(settings)
            raised = [i for i, x in enumerate(s.values)
                      if (v := det.update(x)) is not None and v.state == "raised"]
            samples += len(s.values)
            for i in raised:
                if any(a <= i <= b + tolerance for _, a, b in s.anomalies):
                    tp += 1
                else:
                    fp += 1
            for kind, a, _b in s.anomalies:
                hit = any(a <= i <= a + tolerance for i in raised)
                total += 1
                detected += hit
                by_kind.setdefault(kind, [0, 0])
                by_kind[kind][0] += hit
                by_kind[kind][1] += 1
            c = generate(seed * 100_003 + k, clean=True)
            det = Detector(settings)
            clean_alerts += sum(1 for x in c.values
                                if (v := det.update(x)) is not None and v.state == "raised")
            samples += len(c.values)
    alerts = tp + fp + clean_alerts
    return {
        "mode": settings.mode, "seeds": seeds, "series": series * len(seeds) * 2,
        "samples": samples, "anomalies": total, "alerts": alerts,
        "true_positives": tp, "false_positives": fp + clean_alerts,
        "clean_series_alerts": clean_alerts,
        "precision": round(tp / alerts, 4) if alerts else 1.0,
        "recall": round(detected / total, 4) if total else 1.0,
        "recall_by_kind": {k: round(h / n, 4) for k, (h, n) in by_kind.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints a table (or JSON) of precision/recall per mode."""
    ap = argparse.ArgumentParser(prog="python -m edge_node.iot.evaluate",
                                 description="Detector precision/recall on generated data.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--series", type=int, default=30, help="series per seed (default 30)")
    ap.add_argument("--mode", choices=MODES, action="append",
                    help="detector mode (repeatable; default: all)")
    ap.add_argument("--z-on", type=float, default=None, help="raise threshold")
    ap.add_argument("--json", action="store_true", help="print JSON")
    a = ap.parse_args(argv)
    if a.series < 1:
        ap.error("--series must be >= 1")
    base = DetectorSettings()
    if a.z_on is not None:
        if a.z_on <= base.z_off:
            ap.error(f"--z-on must be above z_off ({base.z_off})")
        base = replace(base, z_on=a.z_on)
    results = [evaluate(replace(base, mode=m), a.seeds, a.series) for m in (a.mode or MODES)]
    if a.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'mode':6} {'precision':>9} {'recall':>7} {'spike':>6} {'shift':>6} "
          f"{'alerts':>7} {'FP':>4} {'anomalies':>9}")
    for r in results:
        rk = r["recall_by_kind"]
        print(f"{r['mode']:6} {r['precision']:9.3f} {r['recall']:7.3f} "
              f"{rk.get('spike', 0):6.3f} {rk.get('level_shift', 0):6.3f} {r['alerts']:7d} "
              f"{r['false_positives']:4d} {r['anomalies']:9d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
