"""``sweep``: the highest ``fanout`` rate at which p99 latency stays under a bound with
zero loss.

The rate starts at ``--start-rate`` and grows by ``--factor`` after each passing
step, for at most ``--steps`` steps; after the first failing step it bisects between
the last pass and the first failure ``--refine`` times. Each step is one ``fanout``
run (fresh server) against one ``--target``. A step passes when
``latency_us.p99 <= --p99-ms`` and no delivery was lost, duplicated or refused. The
total number of runs is bounded by ``--steps + --refine``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import report
from bench.errors import BenchError
from bench.runner import RunOptions
from bench.targets import TARGETS
from bench.validators import non_negative_float, positive_float, positive_int

ROWS = [
    ("highest passing rate (publishes/s)", "sweep.max_rate"),
    ("deliveries/s at that rate", "sweep.max_deliveries_per_s"),
    ("p99 µs at that rate", "sweep.p99_us_at_max"),
    ("server CPU µs per delivery at that rate", "sweep.cpu_us_per_delivery_at_max"),
    ("steps run", "sweep.steps"),
]


def register(subs: Any) -> None:
    sp = subs.add_parser(
        "sweep", help="highest fanout rate with p99 under a bound and zero loss",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--target", choices=TARGETS, default="edge", help="(default: edge)")
    sp.add_argument("--p99-ms", type=positive_float, default=10.0,
                    help="p99 latency bound, ms (default: 10)")
    sp.add_argument("--start-rate", type=positive_float, default=100.0,
                    help="first rate, publishes/s (default: 100)")
    sp.add_argument("--factor", type=positive_float, default=1.5,
                    help="rate multiplier after a passing step, > 1 (default: 1.5)")
    sp.add_argument("--steps", type=positive_int, default=8,
                    help="most growing steps (default: 8)")
    sp.add_argument("--refine", type=int, default=2,
                    help="bisection steps after the first failure (default: 2)")
    sp.add_argument("--subscribers", type=positive_int, default=50, help="(default: 50)")
    sp.add_argument("--publishers", type=positive_int, default=5, help="(default: 5)")
    sp.add_argument("--payload-size", type=positive_int, default=88, help="(default: 88)")
    sp.add_argument("--duration", type=positive_float, default=5.0,
                    help="seconds per step (default: 5)")
    sp.add_argument("--warmup", type=non_negative_float, default=1.0, help="(default: 1)")
    sp.add_argument("--drain", type=non_negative_float, default=2.0, help="(default: 2)")
    sp.add_argument("--receiver", choices=["sdk", "lean"], default="sdk",
                    help="edge subscribers, as for fanout (default: sdk)")
    sp.add_argument("--procs", type=positive_int, default=1, help="(default: 1)")
    sp.add_argument("--pin", action="store_true", help="as for fanout")
    sp.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="report directory (default: bench-results)")
    sp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sp.set_defaults(func=cmd)


def passes(run: dict[str, Any], p99_ms: float) -> bool:
    """A step passes: p99 within the bound, nothing lost, repeated or refused."""
    m = run["messages"]
    return bool(run["latency_us"]["p99"] <= p99_ms * 1000 and m["lost"] == 0
            and m["duplicates"] == 0 and m["publish_errors"] == 0
            and m["disconnected_clients"] == 0)


def next_rate(history: list[tuple[float, bool]], factor: float) -> float | None:
    """The rate of the next step from ``(rate, passed)`` so far, or None when done
    growing (a failure happened: bisection is driven by :func:`bisect`)."""
    if not history:
        raise ValueError("history is empty")
    rate, ok = history[-1]
    return rate * factor if ok and all(p for _, p in history) else None


def bisect(history: list[tuple[float, bool]]) -> float | None:
    """Midpoint between the highest pass and the lowest failure above it."""
    good = [r for r, ok in history if ok]
    lo = max(good) if good else 0.0
    bad = [r for r, ok in history if not ok and r > lo]
    if not bad:
        return None
    return (lo + min(bad)) / 2 if lo else min(bad) / 2


def cmd(args: argparse.Namespace) -> int:
    from bench.scenarios.fanout import run_fanout, validate
    from bench.scenarios.fanout_load import FanoutParams

    if args.factor <= 1:
        raise BenchError("--factor must be greater than 1")
    if args.refine < 0:
        raise BenchError("--refine must not be negative")
    opts = RunOptions(targets=(args.target,), runs=1, procs=args.procs, pin=args.pin,
                      out=args.out, quiet=args.quiet, plot=False)

    def params(rate: float) -> FanoutParams:
        return FanoutParams(args.subscribers, args.publishers, rate, args.payload_size,
                            args.duration, args.warmup, args.drain, args.receiver)

    validate(params(args.start_rate), args.procs)
    history: list[tuple[float, bool]] = []
    steps: list[dict[str, Any]] = []
    warnings: list[str] = []

    def step(rate: float) -> None:
        doc = run_fanout(params(round(rate, 1)), opts)
        run = doc["targets"][args.target]["runs"][0]
        ok = passes(run, args.p99_ms)
        history.append((rate, ok))
        steps.append({"rate": round(rate, 1), "passed": ok,
                      "deliveries_per_s": run["throughput"]["delivered_per_s"],
                      "p99_us": run["latency_us"]["p99"], "lost": run["messages"]["lost"],
                      "cpu_us_per_delivery": run["server"]["cpu_us_per_delivery"],
                      "loadgen_cpu_percent_max": run["loadgen"]["cpu_percent_max"]})
        warnings.extend(f"rate {rate:.1f}: {w}" for w in run.get("warnings", []))
        if not args.quiet:
            print(f"sweep: rate {rate:.1f}/s p99 {run['latency_us']['p99'] / 1000:.2f} ms "
                  f"lost {run['messages']['lost']} -> {'pass' if ok else 'fail'}",
                  file=sys.stderr)

    rate: float | None = args.start_rate
    for _ in range(args.steps):
        assert rate is not None
        step(rate)
        rate = next_rate(history, args.factor)
        if rate is None:
            break
    for _ in range(args.refine):
        mid = bisect(history)
        if mid is None:
            break
        step(mid)
    doc = _document(args, steps, warnings)
    md = report.markdown(doc, ROWS)
    md += "\n| rate/s | deliveries/s | p99 µs | lost | CPU µs/delivery | pass |\n"
    md += "|---:|---:|---:|---:|---:|---|\n"
    for s in sorted(steps, key=lambda s: s["rate"]):
        md += (f"| {s['rate']:,} | {s['deliveries_per_s']:,} | {s['p99_us']:,} | {s['lost']} | "
               f"{s['cpu_us_per_delivery']} | {'yes' if s['passed'] else 'no'} |\n")
    json_path, _ = report.write(doc, args.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    return 0


def _document(args: argparse.Namespace, steps: list[dict[str, Any]],
              warnings: list[str]) -> dict[str, Any]:
    good = [s for s in steps if s["passed"]]
    best = max(good, key=lambda s: s["rate"]) if good else None
    params = {k: v for k, v in vars(args).items() if k != "func"}
    params["out"] = str(args.out)
    summary = {
        "max_rate": best["rate"] if best else 0.0,
        "max_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        "p99_us_at_max": best["p99_us"] if best else None,
        "cpu_us_per_delivery_at_max": best["cpu_us_per_delivery"] if best else None,
        "steps": len(steps),
    }
    run = {"sweep": summary, "steps": steps, "warnings": []}
    return {"schema": report.SCHEMA,
            "meta": report.make_meta("sweep", params, report.timestamp()),
            "targets": {args.target: {"runs": [run], "median": report.medians([run])}},
            "ratios": {}, "warnings": warnings}
