"""IoT scenario: telemetry ingest rate of one edge core and device→alert latency.

``python -m bench iot [--devices N] [--duration S] [--batch B] [--out DIR]``

Three measurements, each bounded in count and time:

1. **pipeline**: the sans-I/O pipeline alone in this process (validation,
   windows with quantile sketches, EWMA + MAD detectors): samples/s of one core.
2. **edge ingest**: a real edge process (with Redis; the uplink sends rollups to
   it) and N SDK devices in this process sending batches of B samples as fast as
   acknowledgements allow (at most ``window`` unacknowledged batches per device).
   Reports acknowledged samples/s and samples per edge CPU-second (= per core,
   the edge being single-threaded).
3. **alert latency**: devices send one sample per frame (no batching delay) and
   inject a spike every 40 samples; a service client joined to the edge's alerts
   room times each alert from the moment the spike was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil

from bench.latency import Latency
from client_sdk import connect
from client_sdk.device import Device
from client_sdk.protocol import mint_token
from edge_node.iot import IotSettings, Pipeline
from edge_node.local.launch import spawn_edge
from edge_node.local.redis_server import start_redis

__all__ = ["add_parser", "run_pipeline", "run_edge"]

SECRET = b"bench-iot-secret"


def run_pipeline(samples: int = 400_000, devices: int = 500, batch: int = 100) -> dict[str, Any]:
    """Samples/s through :class:`Pipeline` in this process (one core)."""
    p = Pipeline(IotSettings())
    v = p.validator((("temp", -40.0, 85.0),))
    rng = random.Random(1)
    now = time.time_ns() // 1_000_000
    batches = []
    for b in range(samples // batch):
        batches.append(tuple(("temp", 20 + rng.gauss(0, 1), now + b * 10 + i)
                             for i in range(batch)))
    t0 = time.process_time()
    for i, smp in enumerate(batches):
        p.ingest(f"d{i % devices}", v, i, smp, now)
        if i % devices == devices - 1:
            for name, r in p.close_due(now + i * 10):
                p.submitted(name, r, i)
            p.ready_acks(i)
    cpu = time.process_time() - t0
    return {"samples": p.accepted, "cpu_s": round(cpu, 3),
            "samples_per_s": round(p.accepted / cpu), "rollups": p.rollups}


async def _ingest(url: str, devices: int, batch: int, window: int, duration: float,
                  edge_pid: int) -> dict[str, Any]:
    now = time.time()
    devs = [await Device.connect(url, mint_token(SECRET, f"bench-dev-{i}", "device",
                                                 [f"bench-dev-{i}"], now=now),
                                 batch_max=batch, linger=0.05, resend_after=60.0)
            for i in range(devices)]
    proc = psutil.Process(edge_pid)
    stop = time.monotonic() + duration
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    acked0 = sum(d.acked_samples for d in devs)

    async def drive(d: Device) -> None:
        rng = random.Random(id(d))
        while time.monotonic() < stop:
            if d.buffered >= window * batch:
                await asyncio.sleep(0.005)
                continue
            ts = time.time_ns() // 1_000_000
            for _ in range(batch):
                d.send_telemetry("temp", 20 + rng.gauss(0, 1), ts)
            await asyncio.sleep(0)

    await asyncio.gather(*(drive(d) for d in devs))
    elapsed = time.monotonic() - t0
    cpu1 = proc.cpu_times()
    acked = sum(d.acked_samples for d in devs) - acked0
    edge_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    for d in devs:
        await d.close()
    return {"devices": devices, "batch": batch, "seconds": round(elapsed, 2),
            "samples_acked": acked, "samples_per_s": round(acked / elapsed),
            "edge_cpu_percent": round(100 * edge_cpu / elapsed, 1),
            "samples_per_edge_cpu_s": round(acked / edge_cpu) if edge_cpu else None}


async def _alerts(url: str, devices: int, spikes: int, timeout: float) -> dict[str, Any]:
    now = time.time()
    watcher = await connect(url, mint_token(SECRET, "ops", "service", ["alerts"], now=now))
    sent: dict[tuple[str, int], int] = {}
    lat = Latency()

    def on_alert(m: Any) -> None:
        a = msgpack.unpackb(m.payload)
        t = sent.pop((a["device"], a["ts"]), None)
        if a["state"] == "raised" and t is not None:
            lat.record_ns(time.perf_counter_ns() - t)

    await watcher.join("alerts", on_message=on_alert)
    devs = [await Device.connect(url, mint_token(SECRET, f"bench-alert-{i}", "device",
                                                 [f"bench-alert-{i}"], now=now),
                                 batch_max=1, linger=0.01)
            for i in range(devices)]
    deadline = time.monotonic() + timeout

    async def drive(i: int, d: Device) -> None:
        rng = random.Random(i)
        ts = time.time_ns() // 1_000_000 - 100_000
        n = 0
        done = 0
        while done < spikes and time.monotonic() < deadline:
            n += 1
            ts += 10
            spike = n > 60 and n % 40 == 0
            v = 20 + rng.gauss(0, 0.5) + (15 if spike else 0)
            if spike:
                sent[(f"bench-alert-{i}", ts)] = time.perf_counter_ns()
                done += 1
            d.send_telemetry("temp", v, ts)
            await asyncio.sleep(0.002)

    await asyncio.gather(*(drive(i, d) for i, d in enumerate(devs)))
    await asyncio.sleep(0.5)
    for d in devs:
        await d.close()
    await watcher.close()
    s = lat.summary()
    return {"spikes": devices * spikes, "alerts_timed": lat.count,
            "latency_ms": {k: round(v / 1000, 3) for k, v in s.items() if k != "count"}}


def run_edge(devices: int, batch: int, window: int, duration: float, alert_devices: int,
             spikes: int, log_dir: Path) -> dict[str, Any]:
    """Start Redis and one edge; measure ingest and alert latency against it."""
    redis = start_redis()
    try:
        edge = spawn_edge(redis_url=redis.url, secret=SECRET, edge_id="bench-iot",
                          extra_args=["--rate", "100000", "--burst", "100000"],
                          log_path=str(log_dir / "bench-iot-edge.log"))
        try:
            ingest = asyncio.run(_ingest(edge.url, devices, batch, window, duration,
                                         edge.pid))
            alerts = asyncio.run(_alerts(edge.url, alert_devices, spikes, duration + 20))
        finally:
            edge.stop()
    finally:
        redis.stop()
    return {"edge_ingest": ingest, "alert_latency": alerts}


def add_parser(subs: Any, default_out: str) -> None:
    """Register ``iot`` on the bench CLI's subcommands."""
    p = subs.add_parser(
        "iot", help="telemetry ingest rate of one edge core and device->alert latency",
        description="IoT: pipeline samples/s in process, a real edge's acknowledged "
        "samples/s and samples per edge CPU-second, and device->alert latency.")
    p.add_argument("--devices", type=int, default=50, help="ingest devices (default: 50)")
    p.add_argument("--batch", type=int, default=100, help="samples per batch (default: 100)")
    p.add_argument("--window", type=int, default=8,
                   help="unacknowledged batches per device (default: 8)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="ingest seconds (default: 10); acks come after a window closes "
                   "(about 1.5 s), so give it a few seconds")
    p.add_argument("--alert-devices", type=int, default=20, help="(default: 20)")
    p.add_argument("--spikes", type=int, default=10, help="spikes per alert device "
                   "(default: 10)")
    p.add_argument("--out", type=Path, default=Path(default_out),
                   help=f"report directory (default: {default_out})")
    p.set_defaults(func=_cmd)


def _cmd(a: argparse.Namespace) -> int:
    from bench.errors import BenchError

    for name in ("devices", "batch", "window", "alert_devices", "spikes"):
        if getattr(a, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if not a.duration > 0:
        raise BenchError("--duration must be positive")
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"scenario": "iot", "pipeline": run_pipeline(),
           **run_edge(a.devices, a.batch, a.window, a.duration, a.alert_devices, a.spikes,
                      a.out)}
    path = a.out / f"iot-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    p, e, al = doc["pipeline"], doc["edge_ingest"], doc["alert_latency"]
    print("| figure | value |\n|---|---|")
    print(f"| pipeline samples/s (1 core, in process) | {p['samples_per_s']:,} |")
    print(f"| edge: acknowledged samples/s | {e['samples_per_s']:,} |")
    print(f"| edge: CPU % of one core | {e['edge_cpu_percent']} |")
    per_cpu = e["samples_per_edge_cpu_s"]
    print(f"| edge: samples per edge CPU-second | "
          f"{'n/a (no CPU time measured)' if per_cpu is None else f'{per_cpu:,}'} |")
    lm = al["latency_ms"]
    print(f"| device->alert latency p50 / p99 (ms) | {lm.get('p50')} / {lm.get('p99')} |")
    print(f"| alerts timed / spikes | {al['alerts_timed']} / {al['spikes']} |")
    print(f"report: {path}", file=sys.stderr)
    return 0
