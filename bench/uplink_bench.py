"""Measure the uplink and the origin: ``python -m bench.uplink_bench --help``.

Scenarios (each on a fresh embedded Redis, workers as real processes; the load starts
once every worker reads every uplink stream, so no figure counts their start-up):

- ``lag``: one edge submits ``--rate`` telemetry samples/s for ``--duration`` s; prints
  the origin's edge->origin lag p50/p90/p99/p99.9 (from the edge's submit to the
  origin's apply, Redis clock; 10 % buckets), how much was applied, and the CPU of
  the edge (this process), Redis, each worker and everything else on the host (from
  the start of the load until all was applied);
- ``max``: one edge submits as fast as it can (one core); prints sent entries/s;
- ``outage``: ``--rate`` samples/s; Redis is paused (SIGSTOP) for ``--outage`` s;
  prints the spool peak and the time from resume to an empty uplink backlog and to
  everything applied at the origin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import psutil
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from edge_node.local.origin_api import spawn_worker
from edge_node.local.redis_server import start_redis
from edge_node.uplink import Uplink, UplinkSettings
from origin.settings import OriginSettings
from origin.view import origin_stats

__all__ = ["main"]


async def _paced(up: Uplink, rate: float, seconds: float, on_tick: Any = None) -> int:
    """Open-loop: submit ``rate``/s in 1 ms ticks for ``seconds``; returns entries submitted."""
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate)
        while n < due:
            up.submit("telemetry", f"dev-{n % 1000}", {"t": 20.0 + n % 7, "h": n % 100})
            n += 1
        if on_tick is not None:
            on_tick()
        await asyncio.sleep(0.001)
    return n


async def _backlog_at_most(up: Uplink, limit: int) -> None:
    while True:
        if up.backlog <= limit:
            return
        await asyncio.sleep(0.001)


class _Cpu:
    """CPU of this process (the edge's uplink), Redis and the workers over the load, and
    of everything else on the host (``other``: the host was not quiet if it is high)."""

    def __init__(self, redis_pid: int, worker_pids: list[int]) -> None:
        self.procs = {"edge": psutil.Process(), "redis": psutil.Process(redis_pid),
                      **{f"worker{i}": psutil.Process(p) for i, p in enumerate(worker_pids)}}
        self.t0, self.c0, self.h0 = time.monotonic(), self._ours(), self._host()

    def _ours(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            t = p.cpu_times()
            out[name] = float(t.user + t.system)
        return out

    @staticmethod
    def _host() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system)

    def figures(self, entries: int) -> dict[str, Any]:
        """Percent of a core per role, µs per entry, ``other_percent`` of a core."""
        wall = time.monotonic() - self.t0
        c1 = self._ours()
        used = {k: c1[k] - self.c0[k] for k in c1}
        other = self._host() - self.h0 - sum(used.values())
        return {"window_s": round(wall, 2),
                "percent": {k: round(100 * v / wall, 1) for k, v in used.items()},
                "us_per_entry": {k: round(v / entries * 1e6, 2) for k, v in used.items()}
                if entries else {},
                "other_percent": round(max(0.0, 100 * other / wall), 1)}


async def _workers_reading(r: aioredis.Redis, s: OriginSettings, names: list[str],
                           timeout: float = 60.0) -> None:
    """Wait until every worker is a consumer of every uplink stream (it has read once):
    a lag measured from a cold start would count the workers' own start-up."""
    from origin.keys import GROUP, ShardKeys

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        seen: set[str] | None = None
        for i in range(s.shards):
            try:
                got: Any = await r.xinfo_consumers(ShardKeys(i).stream, GROUP)
            except ResponseError:  # no stream or group yet
                got = []
            mine = {c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
                    for c in got}
            seen = mine if seen is None else seen & mine
        if seen is not None and set(names) <= seen:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"origin workers did not start reading within {timeout} s")


async def _wait_applied(r: aioredis.Redis, s: OriginSettings, n: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (await origin_stats(r, s))["applied"] >= n:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise RuntimeError(f"origin did not apply {n} entries in {timeout} s")


async def run(a: argparse.Namespace) -> dict[str, Any]:
    server = start_redis()
    s = OriginSettings(redis_url=server.url, shards=a.shards)
    workers = [spawn_worker(server.url, f"bench-{i}", "--shards", str(a.shards))
               for i in range(a.workers if a.scenario != "max" else 0)]
    r = aioredis.Redis.from_url(server.url, socket_timeout=30)
    up = Uplink(UplinkSettings(redis_url=server.url, edge_id="bench", shards=a.shards,
                               spool_path=a.spool, call_timeout=0.5,
                               spool_max_entries=10_000_000, max_memory_entries=1_000_000))
    out: dict[str, Any] = {"scenario": a.scenario, "shards": a.shards, "workers": a.workers}
    try:
        await _workers_reading(r, s, [w.name for w in workers])
        await up.start()
        if a.scenario == "lag":
            cpu = _Cpu(server.pid, [w.pid for w in workers])
            n = await _paced(up, a.rate, a.duration)
            await _wait_applied(r, s, n, 120)
            st = await origin_stats(r, s)
            out |= {"rate": a.rate, "submitted": n, "applied": st["applied"],
                    "duplicates_ignored": st["duplicates_ignored"], "lag_ms": st["lag_ms"],
                    "cpu": cpu.figures(n)}
        elif a.scenario == "max":
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < a.duration:
                for _ in range(1000):
                    up.submit("telemetry", f"dev-{n % 1000}", {"t": 20.0, "h": n % 100})
                    n += 1
                await _backlog_at_most(up, 20_000)
                await asyncio.sleep(0)
            await _backlog_at_most(up, 0)
            el = time.monotonic() - t0
            out |= {"sent": up.sent, "seconds": round(el, 2),
                    "entries_per_s": round(up.sent / el), "batches": up.batches}
        else:
            peak = 0

            def tick() -> None:
                nonlocal peak
                peak = max(peak, up.spool_size)
            n = await _paced(up, a.rate, 2.0)
            server.pause()
            try:
                n += await _paced(up, a.rate, a.outage, tick)
            finally:
                server.resume()
            t0 = time.monotonic()
            await _backlog_at_most(up, 0)
            drain = time.monotonic() - t0
            applied_after = await _wait_applied(r, s, n, 600) + drain
            st = await origin_stats(r, s)
            out |= {"rate": a.rate, "outage_s": a.outage, "submitted": n, "spool_peak": peak,
                    "spooled": up.spooled, "drain_s": round(drain, 2),
                    "all_applied_after_resume_s": round(applied_after, 2),
                    "applied": st["applied"], "duplicates_ignored": st["duplicates_ignored"]}
    finally:
        await up.stop()
        await r.aclose()
        for w in workers:
            w.stop()
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m bench.uplink_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["lag", "max", "outage"])
    p.add_argument("--rate", type=float, default=20_000.0, help="samples/s (lag, outage)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (lag, max)")
    p.add_argument("--outage", type=float, default=60.0, help="Redis pause, seconds")
    p.add_argument("--workers", type=int, default=2, help="origin worker processes")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--spool", default=":memory:", help="spool file (default in memory)")
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(a)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
