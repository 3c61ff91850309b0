"""Where a drained client's silent time goes: ``python -m bench.scenarios.failover_trace``.

A local cluster (embedded Redis, 3 edges, no origin); ``--clients`` SDK clients on edge 1
in ``--rooms`` rooms; one publisher per room on the other edges publishes every
``--rooms / --rate`` seconds (open loop, the rooms' schedules staggered).  At ``--at`` s
edge 1 is drained (SIGTERM).  Per client it records every arrival (intended send time,
arrival time, the edge that delivered it) and the steps of its handoff, and prints:

- ``handoff_to_welcome_ms``: HANDOFF received -> WELCOME from the new edge (TCP + WebSocket
  handshake + HELLO/resume on the new edge);
- ``welcome_to_first_ms``: WELCOME -> the first message taken after the switch;
- ``switch_silence_ms``: last message before the switch -> first one after it;
- ``gap_before_ms`` / ``gap_ms``: each client's longest silence in the ``--at`` s before the
  drain (the noise floor: one publish interval plus latency jitter) and from the drain to
  the end of publishing; ``excess_ms``: the longest silence beyond the publish schedule
  (arrival gap minus intended-send gap), before and after;
- ``latency_max_ms`` by 100 ms of intended send time around the drain, and the latency
  of every delivery before the drain and once all clients have moved (p50, max);
- the load generator's event-loop lag, and CPU (% of one core) of the load generator, each
  edge, Redis and everything else on the host (other processes), by 100 ms.

Figures are medians and maxima over clients.  Bounded: publishing lasts ``--duration`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import signal
import statistics
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edge_node.runtime.gc_tuning import freeze_heap

__all__ = ["TraceParams", "run_trace", "main"]

_P = struct.Struct("!IIq")  # room, seq, intended send (ns, perf_counter)


@dataclass
class TraceParams:
    """Parameters of one traced drain (see the module docstring)."""

    clients: int = 200
    rooms: int = 10
    rate: float = 200.0
    at: float = 3.0
    duration: float = 6.0
    edge_args: list[str] = field(default_factory=list)
    #: Move the load generator's set-up objects (clients, connections) out of the GC's
    #: reach before publishing starts: its full collections then take a few ms, not
    #: tens (measured; see docs/drain.md).
    gc_freeze: bool = True


@dataclass
class _Rec:
    arrivals: list[tuple[float, float, str]] = field(default_factory=list)  # arr, due, edge
    handoff_rx: float | None = None
    welcome: float | None = None


def _cpu_seconds(pid: int, tck: float) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tck
    except (OSError, IndexError, ValueError):
        return None


def _host_busy_seconds(tck: float) -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / tck


class _CpuSampler:
    """Samples CPU seconds of named pids and of the whole host every 50 ms (a thread)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tck = float(os.sysconf("SC_CLK_TCK"))
        self.samples: list[tuple[float, dict[str, float | None], float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(),
                                 {k: _cpu_seconds(p, self.tck) for k, p in self.pids.items()},
                                 _host_busy_seconds(self.tck)))
            time.sleep(0.05)

    def __enter__(self) -> _CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_100ms(self, t0: float, lo: float, hi: float) -> list[dict[str, Any]]:
        """CPU % of one core per process, ``other`` = the host minus ours, per 100 ms."""
        out = []
        s = self.samples
        for k in range(2, len(s), 2):
            (ta, a, ha), (tb, b, hb) = s[k - 2], s[k]
            if not lo <= tb - t0 <= hi:
                continue
            dt = tb - ta
            row: dict[str, Any] = {"t_ms": round((tb - t0) * 1000)}
            ours = 0.0
            for name in self.pids:
                x, y = a[name], b[name]
                if x is not None and y is not None:
                    row[name] = round(100 * (y - x) / dt)
                    ours += y - x
            row["other"] = max(0, round(100 * ((hb - ha) - ours) / dt))
            out.append(row)
        return out


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(values) * 1000, 1),
            "max": round(max(values) * 1000, 1)}


def _max_gap(points: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def _max_excess(xs: list[tuple[float, float, str]]) -> float:
    return max(((b[0] - a[0]) - (b[1] - a[1]) for a, b in itertools.pairwise(xs)),
               default=0.0)


async def run_trace(p: TraceParams) -> dict[str, Any]:
    """Run one traced drain; return the figures (see the module docstring).  Starts
    (and always stops) its own cluster."""
    from client_sdk import connect
    from client_sdk.client import Client
    from client_sdk.protocol import mint_token
    from edge_node.local.cluster import LocalCluster

    recs: dict[int, _Rec] = {}
    now = time.perf_counter
    cluster = LocalCluster(3, origin=False, quic=False, edge_args=p.edge_args)
    await asyncio.to_thread(cluster.start)
    clients: list[Any] = []
    pubs: list[Any] = []
    try:
        victim, others = cluster.edges[0], cluster.edges[1:]
        wall = time.time()

        def tok(name: str, kind: str = "player") -> str:
            return mint_token(cluster.secret, name, kind, ["*"], now=wall, ttl=3600)

        sem = asyncio.Semaphore(50)

        async def make(i: int) -> Any:
            async with sem:
                c: Client = await connect([victim.url, *[e.url for e in others]], tok(f"c{i}"),
                                          ping_interval=1.0, ping_timeout=1.0,
                                          rtt_probe_interval=None)
            rec = recs[id(c)] = _Rec()

            def on_msg(m: Any, c: Client = c, rec: _Rec = rec) -> None:
                due = _P.unpack_from(m.payload)[2] / 1e9
                rec.arrivals.append((now(), due, c.edge_id))

            await c.join(f"tr{i % p.rooms}", on_message=on_msg)
            return c

        clients = list(await asyncio.gather(*(make(i) for i in range(p.clients))))
        for j in range(p.rooms):
            pc = await connect([others[j % len(others)].url], tok(f"pub{j}", "service"),
                               rtt_probe_interval=None)
            await pc.join(f"tr{j}", echo=False)
            pubs.append(pc)
        # Per-client handoff steps: wrap the SDK's own methods on these instances.
        for c in clients:
            _instrument(c, recs[id(c)], now)
        if p.gc_freeze:
            freeze_heap()
        interval = p.rooms / p.rate
        start = now()
        t_act = start + p.at
        lags: list[tuple[float, float]] = []

        async def publisher(j: int) -> None:
            k = 0
            while True:
                due = start + k * interval + j * interval / p.rooms
                if due - start >= p.duration:
                    return
                delay = due - now()
                if delay > 0:
                    await asyncio.sleep(delay)
                pubs[j].publish_nowait(f"tr{j}", _P.pack(j, k, int(due * 1e9)))
                k += 1

        async def act() -> None:
            await asyncio.sleep(t_act - now())
            victim.signal(signal.SIGTERM)

        async def lag_monitor() -> None:
            while now() < start + p.duration:
                t = now()
                await asyncio.sleep(0.005)
                lags.append((t - t_act, now() - t - 0.005))

        pids = {"loadgen": os.getpid(), "edge1": victim.pid, "edge2": others[0].pid,
                "edge3": others[1].pid}
        if cluster.redis is not None:
            pids["redis"] = cluster.redis.pid
        with _CpuSampler(pids) as cpu:
            await asyncio.gather(act(), lag_monitor(), *(publisher(j) for j in range(p.rooms)))
            await asyncio.sleep(1.0)  # the last messages
        return _figures(p, clients, recs, start, t_act, lags, cpu)
    finally:
        gc.unfreeze()
        await asyncio.gather(*(c.close() for c in [*clients, *pubs]), return_exceptions=True)
        await asyncio.to_thread(cluster.stop)


def _instrument(c: Any, rec: _Rec, now: Any) -> None:
    orig_handoff, orig_open = c._handoff, c._open

    async def handoff(url: str, *args: Any) -> None:
        rec.handoff_rx = now()
        await orig_handoff(url, *args)

    async def open_(url: str) -> Any:
        res = await orig_open(url)
        if rec.handoff_rx is not None and rec.welcome is None:
            rec.welcome = now()
        return res

    c._handoff, c._open = handoff, open_


def _figures(p: TraceParams, clients: list[Any], recs: dict[int, _Rec], start: float,
             t_act: float, lags: list[tuple[float, float]], cpu: _CpuSampler
             ) -> dict[str, Any]:
    end = start + p.duration
    h2w, w2f, switch, gap_b, gap_a, exc_b, exc_a = [], [], [], [], [], [], []
    for c in clients:
        rec = recs[id(c)]
        a = sorted(rec.arrivals)
        before = [x for x in a if start + 0.5 <= x[0] < t_act]
        after = [x for x in a if t_act <= x[0] <= end]
        gap_b.append(_max_gap([x[0] for x in before]))
        exc_b.append(_max_excess(before))
        gap_a.append(_max_gap([t_act, *(x[0] for x in after)]))
        exc_a.append(_max_excess(after))
        if rec.handoff_rx is not None and rec.welcome is not None:
            h2w.append(rec.welcome - rec.handoff_rx)
            first = next((x[0] for x in a if x[0] > rec.welcome), None)
            last = next((x[0] for x in reversed(a) if x[0] <= rec.welcome), None)
            if first is not None:
                w2f.append(first - rec.welcome)
                if last is not None:
                    switch.append(first - last)
    lat: dict[int, float] = {}
    settled = t_act + p.at / 2 + 1.0  # well after the handoffs (drain window 1 s)
    lat_before = [arr - due for rec in recs.values() for arr, due, _e in rec.arrivals
                  if start + 0.5 <= due < t_act]
    lat_after = [arr - due for rec in recs.values() for arr, due, _e in rec.arrivals
                 if settled <= due < end]
    for rec in recs.values():
        for arr, due, _edge in rec.arrivals:
            b = int((due - t_act) // 0.1) * 100
            if -500 <= b <= 2500:
                lat[b] = max(lat.get(b, 0.0), arr - due)
    return {
        "params": {"clients": p.clients, "rooms": p.rooms, "rate": p.rate,
                   "interval_ms": round(1000 * p.rooms / p.rate, 1), "at": p.at,
                   "duration": p.duration, "edge_args": p.edge_args,
                   "gc_freeze": p.gc_freeze},
        "handoffs": sum(c.handoffs for c in clients),
        "reconnects": sum(c.reconnects for c in clients),
        "overlap_messages": sum(getattr(c, "handoff_overlap_messages", 0) for c in clients),
        "duplicates_dropped": sum(s.duplicates for c in clients for s in c._subs.values()),
        "handoff_to_welcome_ms": _spread(h2w),
        "welcome_to_first_ms": _spread(w2f),
        "switch_silence_ms": _spread(switch),
        "gap_before_ms": _spread(gap_b),
        "gap_ms": _spread(gap_a),
        "excess_before_ms": _spread(exc_b),
        "excess_ms": _spread(exc_a),
        "latency_max_ms_by_100ms": {k: round(v * 1000, 1) for k, v in sorted(lat.items())},
        # Delivery latency before the drain (clients on edge 1) and once every client
        # has moved (``at / 2 + 1`` s after it): where the clients landed shows here.
        "latency_before_ms": _spread(lat_before),
        "latency_after_ms": _spread(lat_after),
        "loadgen_lag_max_ms": round(max((x for _t, x in lags), default=0.0) * 1000, 1),
        "loadgen_lags_over_10ms": [(round(t * 1000), round(x * 1000, 1))
                                   for t, x in lags if x > 0.01],
        "cpu_by_100ms": cpu.by_100ms(t_act, -0.3, 2.0),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the figures of each run as JSON lines, then medians."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.scenarios.failover_trace",
        description="Trace a drain under load: per-client handoff steps, silences, "
                    "latency and CPU around the drain (see the module docstring).")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--rate", type=float, default=200.0, help="publishes/s in total")
    ap.add_argument("--at", type=float, default=3.0, help="seconds before the drain")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of publishing")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-gc-freeze", action="store_true",
                    help="leave the load generator's garbage collector as it is")
    ap.add_argument("--edge-arg", action="append", default=[],
                    help="extra edge argument (repeat), e.g. --edge-arg=--drain-window=2")
    a = ap.parse_args(argv)
    if a.clients < 1 or a.rooms < 1 or a.rate <= 0 or a.runs < 1:
        print("error: --clients, --rooms, --runs must be >= 1 and --rate > 0", file=sys.stderr)
        return 2
    if not 0 < a.at < a.duration:
        print("error: --at must be inside the publishing time (0 < at < duration)",
              file=sys.stderr)
        return 2
    p = TraceParams(a.clients, a.rooms, a.rate, a.at, a.duration, list(a.edge_arg),
                    gc_freeze=not a.no_gc_freeze)
    runs = []
    for _ in range(a.runs):
        r = asyncio.run(run_trace(p))
        runs.append(r)
        print(json.dumps(r), flush=True)
    keys = ("handoff_to_welcome_ms", "welcome_to_first_ms", "switch_silence_ms",
            "gap_before_ms", "gap_ms", "excess_before_ms", "excess_ms")
    summary: dict[str, Any] = {
        k: {s: _median([r[k][s] for r in runs]) for s in ("p50", "max")} for k in keys}
    summary["loadgen_lag_max_ms"] = _median([r["loadgen_lag_max_ms"] for r in runs])
    print(json.dumps({"median_of_runs": summary, "runs": a.runs}), flush=True)
    return 0


def _median(values: list[Any]) -> float | None:
    vs = [float(v) for v in values if v is not None]
    return round(statistics.median(vs), 1) if vs else None


if __name__ == "__main__":
    raise SystemExit(main())
