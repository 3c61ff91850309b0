"""Measure the uplink and the origin: ``python -m origin.uplink_bench --help``.

Scenarios (each on a fresh embedded Redis, workers as real processes):

- ``lag``: one edge submits ``--rate`` telemetry samples/s for ``--duration`` s; prints
  the origin's edge->origin lag p50/p99 (10 % buckets) and how much was applied;
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

import redis.asyncio as aioredis

from edge_node.redis_server import start_redis
from edge_node.uplink import Uplink, UplinkSettings

from .launch import spawn_worker
from .settings import OriginSettings
from .view import origin_stats

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
        await up.start()
        if a.scenario == "lag":
            n = await _paced(up, a.rate, a.duration)
            await _wait_applied(r, s, n, 120)
            st = await origin_stats(r, s)
            out |= {"rate": a.rate, "submitted": n, "applied": st["applied"],
                    "duplicates_ignored": st["duplicates_ignored"], "lag_ms": st["lag_ms"]}
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
    p = argparse.ArgumentParser(prog="python -m origin.uplink_bench", description=__doc__,
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
