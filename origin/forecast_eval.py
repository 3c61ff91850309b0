"""Evaluate the demand forecast on a generated load curve (``python -m origin forecast-eval``).

The curve: a daily pattern (a lunch and a larger evening peak) with day-to-day
variation and per-step noise, plus a flash sale (a surge reached within two
minutes, held, then fading) at the same hour on chosen days; fixed seed, one
sample per ``step`` seconds (simulated time: days run in milliseconds).

Two scalers see the same samples:

* **reactive**: the replicas the load observed *now* needs (an HPA on the current
  load, granted zero metric and sync delay, which flatters it);
* **forecast**: :class:`origin.forecast.Forecaster`'s recommendation.

A *scale-up event* is the first step at which the load needs ``N`` replicas after
needing fewer for at least ``--quiet`` seconds.  The forecast's **lead** at an event is
how long before it the recommendation had already reached ``N`` (without dropping
below since).  With a pod start-up delay ``D`` (replicas ordered at ``t`` serve from
``t + D``), ``under_target_s`` counts the seconds each scaler's ready replicas were
below what the load needed, and ``overloaded_s`` the seconds the load exceeded the
ready capacity itself (no headroom).  ``replica_hours`` is the cost.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from dataclasses import dataclass
from typing import Any

from origin.forecast import Forecaster, ForecastSettings, ForecastSettingsError, replicas_for

__all__ = ["LoadCurve", "generate", "evaluate", "main"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class LoadCurve:
    """Samples of one region: time (s), connections, messages/s; sale windows (s)."""

    step: float
    t: list[float]
    connections: list[float]
    messages: list[float]
    sales: list[tuple[float, float]]


def _bump(hour: float, centre: float, width: float) -> float:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # circular distance in hours
    return math.exp(-0.5 * (d / width) ** 2)


def generate(days: int = 8, step: float = 15.0, seed: int = 7,
             sale_days: tuple[int, ...] = (2, 3, 4, 5, 6, 7), sale_hour: float = 18.0,
             sale_extra: float = 25_000.0, noise: float = 0.02) -> LoadCurve:
    """A deterministic load curve (same arguments, same samples).

    Daily: 3,000 connections at night, +8,000 around 12:30, +20,000 around 20:30,
    each day scaled by 0.9..1.1.  A sale on each day in ``sale_days`` (0-based) adds
    ``sale_extra`` connections at ``sale_hour``: ramp 2 min, hold 15 min, fade 10 min;
    sale shoppers send 4 messages/s, everyone else 1.5.  Noise: connections
    +- sqrt(connections), messages +- ``noise`` (relative), per sample.
    """
    rng = random.Random(seed)
    day_scale = [rng.uniform(0.9, 1.1) for _ in range(days)]
    n = int(days * DAY / step)
    ts: list[float] = []
    conns: list[float] = []
    msgs: list[float] = []
    sales = [(d * DAY + sale_hour * 3600, d * DAY + sale_hour * 3600 + 27 * 60)
             for d in sale_days if d < days]
    for i in range(n):
        t = i * step
        day, hour = int(t // DAY), (t % DAY) / 3600.0
        base = day_scale[day] * (3_000 + 8_000 * _bump(hour, 12.5, 1.5)
                                 + 20_000 * _bump(hour, 20.5, 2.0))
        extra = 0.0
        for start, _end in sales:
            x = t - start
            if 0 <= x < 120:
                extra += sale_extra * x / 120
            elif 120 <= x < 1020:
                extra += sale_extra
            elif 1020 <= x < 1620:
                extra += sale_extra * (1 - (x - 1020) / 600)
        # Connection counts move like a sum of arrivals and departures (Poisson-like
        # spread); message rates are burstier (``noise`` relative).
        c = max(0.0, base + extra + rng.gauss(0, math.sqrt(base + extra)))
        m = max(0.0, (base * 1.5 + extra * 4.0) * (1 + rng.gauss(0, noise)))
        ts.append(t)
        conns.append(float(round(c)))
        msgs.append(m)
    return LoadCurve(step, ts, conns, msgs, sales)


def _delayed(order: list[int], delay_steps: int, first: int) -> list[int]:
    return [order[i - delay_steps] if i >= delay_steps else first for i in range(len(order))]


def evaluate(curve: LoadCurve, settings: ForecastSettings, pod_start: float = 60.0,
             quiet: float = 600.0, warmup_days: int = 1) -> dict[str, Any]:
    """Run both scalers over ``curve``; figures from day ``warmup_days`` on (the first
    day trains the seasonal model and is left out of every figure)."""
    if abs(settings.step - curve.step) > 1e-9:
        raise ValueError("settings.step must equal the curve's step")
    fc = Forecaster(settings)
    need, rec = [], []
    for c, m in zip(curve.connections, curve.messages, strict=True):
        r = fc.observe("eval", c, m)
        need.append(r.reactive_replicas)
        rec.append(r.replicas)
    step = curve.step
    start = int(warmup_days * DAY / step)
    quiet_steps = max(1, int(quiet / step))
    delay = round(pod_start / step)
    ready = {"reactive": _delayed(need, delay, need[0]), "forecast": _delayed(rec, delay, rec[0])}
    orders = {"reactive": need, "forecast": rec}

    def in_sale(t: float) -> int | None:
        for k, (a, b) in enumerate(curve.sales):
            if a - 600 <= t <= b:
                return k
        return None

    daily: list[float] = []
    sale_leads: dict[int, list[float]] = {k: [] for k in range(len(curve.sales))}
    for i in range(max(start, quiet_steps), len(need)):
        n = need[i]
        if n <= need[i - 1] or any(v >= n for v in need[i - quiet_steps:i]):
            continue
        j = i
        while j > 0 and rec[j - 1] >= n:
            j -= 1
        lead = (i - j) * step
        k = in_sale(curve.t[i])
        (daily if k is None else sale_leads[k]).append(lead)

    cap = settings.capacity_connections
    cap_m = settings.capacity_messages
    out: dict[str, Any] = {"scalers": {}}
    for name in ("reactive", "forecast"):
        rd = ready[name][start:]
        nd = need[start:]
        under = sum(step for a, b in zip(rd, nd, strict=True) if a < b)
        over = sum(step for a, c, m in zip(rd, curve.connections[start:],
                                           curve.messages[start:], strict=True)
                   if c > a * cap or m > a * cap_m)
        out["scalers"][name] = {
            "under_target_s": under, "overloaded_s": over,
            "replica_hours": round(sum(orders[name][start:]) * step / 3600, 1)}
    r_h = out["scalers"]["reactive"]["replica_hours"]
    out["extra_cost_pct"] = round(100 * (out["scalers"]["forecast"]["replica_hours"] - r_h)
                                  / r_h, 1) if r_h else 0.0

    def summary(xs: list[float]) -> dict[str, Any]:
        if not xs:
            return {"events": 0}
        return {"events": len(xs), "median_s": statistics.median(xs), "min_s": min(xs),
                "max_s": max(xs), "mean_s": round(statistics.fmean(xs), 1)}

    out["daily_lead"] = summary(daily)
    out["sale_lead"] = [{"day": int(curve.sales[k][0] // DAY), **summary(v)}
                        for k, v in sale_leads.items()]
    out["settings"] = {"step": settings.step, "season": settings.season,
                       "horizon": settings.horizon, "alpha": settings.alpha,
                       "beta": settings.beta, "gamma": settings.gamma, "phi": settings.phi,
                       "capacity_connections": cap, "headroom": settings.headroom,
                       "pod_start": pod_start, "quiet": quiet, "warmup_days": warmup_days}
    out["peak_replicas"] = {"reactive": max(need[start:]), "forecast": max(rec[start:]),
                            "max_load_replicas": replicas_for(max(curve.connections), 0,
                                                              settings)}
    return out


def _text(res: dict[str, Any]) -> str:
    lines = ["forecast evaluation (generated curve; lead = seconds the forecast asked for "
             "N replicas before the load needed N)"]
    d = res["daily_lead"]
    if d["events"]:
        lines.append(f"  daily ramps   {d['events']:4d} scale-up events  lead median "
                     f"{d['median_s']:.0f} s  min {d['min_s']:.0f} s  max {d['max_s']:.0f} s")
    for s in res["sale_lead"]:
        if s["events"]:
            lines.append(f"  sale (day {s['day']})  {s['events']:4d} scale-up events  lead "
                         f"median {s['median_s']:.0f} s  min {s['min_s']:.0f} s  "
                         f"max {s['max_s']:.0f} s")
        else:
            lines.append(f"  sale (day {s['day']})  no scale-up event")
    pod = res["settings"]["pod_start"]
    for name, v in res["scalers"].items():
        lines.append(f"  {name:9s} below target {v['under_target_s']:7.0f} s  overloaded "
                     f"{v['overloaded_s']:6.0f} s  replica-hours {v['replica_hours']:8.1f}"
                     f"  (pods ready {pod:.0f} s after the order)")
    lines.append(f"  forecast extra cost: {res['extra_cost_pct']:+.1f} % replica-hours")
    return "\n".join(lines)


def build_parser(prog: str = "python -m origin forecast-eval") -> argparse.ArgumentParser:
    """Command-line flags."""
    d = ForecastSettings()
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the demand forecast and a reactive scaler over a generated load "
        "curve (daily pattern + flash sales, fixed seed) and report the forecast's lead.")
    p.add_argument("--days", type=int, default=8, help="days simulated (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    p.add_argument("--step", type=float, default=d.step, help="seconds per sample")
    p.add_argument("--sale-days", default="2,3,4,5,6,7",
                   help="0-based days with a flash sale at 18:00 (default %(default)s)")
    p.add_argument("--horizon", type=float, default=d.horizon,
                   help="forecast look-ahead, s (default %(default)s)")
    p.add_argument("--pod-start", type=float, default=60.0,
                   help="seconds from ordering a replica to it serving (default %(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help="level smoothing factor, 0..1 (default %(default)s)")
    p.add_argument("--beta", type=float, default=d.beta,
                   help="trend smoothing factor, 0..1 (default %(default)s)")
    p.add_argument("--gamma", type=float, default=d.gamma,
                   help="season smoothing factor, 0..1 (default %(default)s)")
    p.add_argument("--phi", type=float, default=d.phi,
                   help="trend damping, 0..1 (1 = none; default %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m origin forecast-eval") -> int:
    """Entry point; 2 on a usage error."""
    a = build_parser(prog).parse_args(argv)
    try:
        sale_days = tuple(int(x) for x in a.sale_days.split(",") if x.strip())
        if a.days < 2:
            raise ValueError("--days must be >= 2 (the first day trains the model)")
        s = ForecastSettings(step=a.step, horizon=a.horizon, alpha=a.alpha, beta=a.beta,
                             gamma=a.gamma, phi=a.phi)
        if a.pod_start < 0:
            raise ValueError("--pod-start must be >= 0")
    except (ValueError, ForecastSettingsError) as exc:
        print(f"forecast_eval: error: {exc}", file=sys.stderr)
        return 2
    res = evaluate(generate(a.days, a.step, a.seed, sale_days), s, a.pod_start)
    print(_text(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
