"""Figures of a cluster run, from the load processes' raw observations (numpy).

Latency percentiles here are exact (computed from every delivery in the
measurement window), not HDR estimates: the cluster scenarios keep every delivery.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.cluster_load import ClusterPlan

PCTS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
#: Silence measured from this long before the fault.
GAP_LEAD_S = 0.5
#: The steady-state gaps (the noise floor a fault's gaps compare with) are taken over
#: this long before the fault's gap window.
STEADY_S = 2.0


def _pct(sorted_vals: npt.NDArray[Any], q: float) -> float:
    """Nearest-rank percentile of an ascending array (0 when empty)."""
    n = len(sorted_vals)
    if n == 0:
        return 0.0
    k = min(n - 1, max(0, int(np.ceil(q / 100.0 * n)) - 1))
    return float(sorted_vals[k])


def summary_us(lat_ns: npt.NDArray[np.int64]) -> dict[str, float]:
    """count, p50/p90/p99/p99.9, max, mean of latencies given in ns, in µs."""
    vals = np.sort(lat_ns) / 1000.0
    out: dict[str, float] = {"count": float(len(vals))}
    for label, q in PCTS:
        out[label] = round(_pct(vals, q), 1)
    out["max"] = round(float(vals[-1]), 1) if len(vals) else 0.0
    out["mean"] = round(float(vals.mean()), 1) if len(vals) else 0.0
    return out


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    arr = np.sort(np.asarray(values, dtype=float))
    return {"p50": round(_pct(arr, 50), 4), "p99": round(_pct(arr, 99), 4),
            "max": round(float(arr[-1]), 4)}


def deliveries(results: list[dict[str, Any]]) -> tuple[npt.NDArray[np.uint32],
                                                         npt.NDArray[np.int64],
                                                         npt.NDArray[np.int64]]:
    """(client index, receive ns, latency ns) of every unique delivery of the run."""
    c = np.concatenate([np.frombuffer(r["d_client"], dtype=np.uint32) for r in results])
    rv = np.concatenate([np.frombuffer(r["d_recv"], dtype=np.int64) for r in results])
    lat = np.concatenate([np.frombuffer(r["d_lat"], dtype=np.int64) for r in results])
    return c, rv, lat


def analyse(plan: ClusterPlan, results: list[dict[str, Any]], t0: int, fault_ns: int,
            affected: set[int]) -> dict[str, Any]:
    """Merge the workers' observations into one run result (no server figures)."""
    sched = plan.schedule(t0)
    c, rv, lat = deliveries(results)
    intended = rv - lat
    win = (intended >= sched.window_start_ns) & (intended < sched.end_ns)
    rooms = sorted({s.room for s in plan.clients})
    room_id = {r: i for i, r in enumerate(rooms)}
    room_of_client = np.array([room_id[s.room] for s in plan.clients], dtype=np.int64)
    receivers_per_room = Counter(s.room for s in plan.clients if s.receives)
    offered = sum(plan.hz * (receivers_per_room[s.room] - (1 if s.receives else 0))
                  for s in plan.clients if s.publisher >= 0)
    clients = [cl for r in results for cl in r["clients"]]
    out: dict[str, Any] = {
        "throughput": {
            "offered_publishes_per_s": round(plan.hz * plan.publishers, 1),
            "offered_deliveries_per_s": round(offered, 1),
            "delivered_per_s": round(int(win.sum()) / sched.window_s, 1),
            "deliveries_window": int(win.sum()),
            "window_s": sched.window_s,
        },
        "latency_us": summary_us(lat[win]),
    }
    out["messages"] = _losses(plan, results, clients)
    out["rooms"] = _per_room(lat[win], room_of_client[c[win]], len(rooms), out["messages"])
    out["timeline"] = _timeline(rv, lat, t0, plan, fault_ns)
    if fault_ns:
        out["failover"] = _failover(plan, clients, c, rv, sched.end_ns, fault_ns, affected)
    return out


def _losses(plan: ClusterPlan, results: list[dict[str, Any]],
            clients: list[dict[str, Any]]) -> dict[str, Any]:
    sent: dict[int, bytes] = {}
    acked: dict[int, bytes] = {}
    seen: dict[int, dict[int, bytes]] = {}
    for r in results:
        sent.update(r["sent"])
        acked.update(r["acked"])
        seen.update(r["seen"])
    expected_map = acked if plan.reliable else sent
    exp_arr = {p: np.frombuffer(b, dtype=np.uint8) for p, b in expected_map.items()}
    expected = lost = 0
    lost_by_room: Counter[str] = Counter()
    for spec in plan.clients:
        got = seen.get(spec.idx)
        if got is None:
            continue
        for p, bm in got.items():
            e = exp_arr.get(p)
            if e is None:
                continue
            s = np.frombuffer(bm, dtype=np.uint8)
            n_exp = int(e.sum())
            missing = int(np.count_nonzero(e & (s ^ 1)))
            expected += n_exp
            lost += missing
            lost_by_room[spec.room] += missing
    errs = [r["publish_last_error"] for r in results if r["publish_last_error"]]
    return {
        "sent": sum(int(np.frombuffer(b, dtype=np.uint8).sum()) for b in sent.values()),
        "publish_acked": sum(int(np.frombuffer(b, dtype=np.uint8).sum())
                             for b in acked.values()),
        "publish_errors": sum(int(r["publish_errors"]) for r in results),
        "publish_last_error": errs[0] if errs else "",
        "expected": expected,
        "delivered": sum(int(cl["unique"]) for cl in clients),
        "lost": lost,
        "duplicates": sum(int(cl["dups"]) for cl in clients),
        "invalid": sum(int(cl["invalid"]) for cl in clients),
        "disconnected_clients": sum(1 for cl in clients if not cl["connected"]),
        "rooms_with_loss": sum(1 for v in lost_by_room.values() if v),
    }


def _per_room(lat: npt.NDArray[np.int64], rooms: npt.NDArray[np.int64], n_rooms: int,
              msgs: dict[str, Any]) -> dict[str, Any]:
    """Per-room p99 (over the rooms that had deliveries): median and worst."""
    if len(lat) == 0:
        return {"count": n_rooms, "with_deliveries": 0, "rooms_with_loss":
                msgs["rooms_with_loss"]}
    order = np.lexsort((lat, rooms))
    lat_s, rooms_s = lat[order] / 1000.0, rooms[order]
    bounds = np.flatnonzero(np.diff(rooms_s)) + 1
    p99s, p50s = [], []
    for chunk in np.split(lat_s, bounds):
        p99s.append(_pct(chunk, 99.0))
        p50s.append(_pct(chunk, 50.0))
    p99 = np.sort(np.asarray(p99s))
    return {
        "count": n_rooms,
        "with_deliveries": len(p99s),
        "p99_us_median": round(_pct(p99, 50.0), 1),
        "p99_us_worst": round(float(p99[-1]), 1),
        "p50_us_median": round(_pct(np.sort(np.asarray(p50s)), 50.0), 1),
        "rooms_with_loss": msgs["rooms_with_loss"],
    }


def _timeline(rv: npt.NDArray[np.int64], lat: npt.NDArray[np.int64], t0: int,
              plan: ClusterPlan, fault_ns: int) -> dict[str, Any]:
    """Delivered/s and latency p50/p99 per bucket of receive time (for the plots)."""
    span = plan.duration + plan.drain
    if len(rv):
        span = max(span, (int(rv.max()) - t0) / 1e9 + 0.1)  # late replays after a resume
    bucket = 0.1 if span <= 60 else span / 600
    n = int(np.ceil(span / bucket))
    t = (rv - t0) / 1e9
    idx = np.clip((t / bucket).astype(np.int64), 0, n)
    keep = (t >= 0) & (idx < n)
    idx, lat_k = idx[keep], lat[keep] / 1000.0
    counts = np.bincount(idx, minlength=n)[:n]
    p50 = [0.0] * n
    p99 = [0.0] * n
    if len(idx):
        order = np.lexsort((lat_k, idx))
        idx_s, lat_s = idx[order], lat_k[order]
        starts = np.searchsorted(idx_s, np.arange(n))
        ends = np.searchsorted(idx_s, np.arange(n), side="right")
        for b in range(n):
            chunk = lat_s[starts[b]:ends[b]]
            if len(chunk):
                p50[b] = round(_pct(chunk, 50.0) / 1000.0, 3)
                p99[b] = round(_pct(chunk, 99.0) / 1000.0, 3)
    return {
        "bucket_s": bucket,
        "t_s": [round(b * bucket, 3) for b in range(n)],
        "delivered_per_s": [round(float(x) / bucket, 1) for x in counts],
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "fault_s": round((fault_ns - t0) / 1e9, 3) if fault_ns else None,
    }


def _failover(plan: ClusterPlan, clients: list[dict[str, Any]],
              c: npt.NDArray[np.uint32], rv: npt.NDArray[np.int64], end_ns: int,
              fault_ns: int, affected: set[int]) -> dict[str, Any]:
    hit = [cl for cl in clients if cl["idx"] in affected]
    resume = [(cl["served_ns"] - fault_ns) / 1e9 for cl in hit if cl["served_ns"]]
    receivers = {s.idx for s in plan.clients if s.receives}
    gaps_hit, gaps_all, gaps_steady = [], [], []
    order = np.lexsort((rv, c))
    c_s, rv_s = c[order], rv[order]
    w0 = fault_ns - int(GAP_LEAD_S * 1e9)
    s0 = w0 - int(STEADY_S * 1e9)
    for idx in sorted(receivers):
        lo, hi = np.searchsorted(c_s, idx), np.searchsorted(c_s, idx, side="right")
        times = rv_s[lo:hi]
        # Before the fault: the longest wait between two arrivals in a steady stretch
        # (schedule plus latency jitter: what a gap is compared with).
        steady = times[(times >= s0) & (times < w0)]
        if len(steady) > 1:
            gaps_steady.append(float(np.max(np.diff(steady))) / 1e9)
        times = times[times >= w0]
        # Silence from just before the fault to the end of publishing: the stretch
        # before the first arrival, between arrivals (replays after a resume count
        # as arrivals, however late), and after the last one if it came before the end.
        tail = [end_ns] if not len(times) or times[-1] < end_ns else []
        pts = np.concatenate(([w0], times, tail))
        gap = float(np.max(np.diff(pts))) / 1e9 if len(pts) > 1 else 0.0
        gaps_all.append(gap)
        if idx in affected:
            gaps_hit.append(gap)
    reasons = Counter(r for cl in hit for r in cl["reasons"])
    times = np.sort(np.asarray([cl["served_ns"] for cl in hit if cl["served_ns"]],
                               dtype=np.int64))
    # Most clients served again within any one second (two pointers over sorted times).
    peak = int(np.max(np.searchsorted(times, times + 1_000_000_000) - np.arange(len(times)))
               ) if len(times) else 0
    gh, ga = _spread(gaps_hit), _spread(gaps_all)
    return {
        "affected_clients": len(hit),
        "served_again": len(resume),
        "resume_s": _spread(resume),
        "gap_ms": {k: (round(v * 1000, 1) if v is not None else None) for k, v in gh.items()},
        "gap_ms_all_receivers_max": round(ga["max"] * 1000, 1) if ga["max"] else 0.0,
        # The same receivers' longest gap in the STEADY_S before the fault's window.
        "gap_ms_before_fault_max": round(max(gaps_steady) * 1000, 1) if gaps_steady else None,
        "resumes_per_s_peak": peak,
        "recovered_false": sum(int(cl["recovered_false"]) for cl in clients),
        "recovered_false_reasons": dict(reasons),
        "reconnects": sum(int(cl["reconnects"]) for cl in clients),
        "handoffs": sum(int(cl["handoffs"]) for cl in clients),
    }
