"""Simulated IoT devices for ``edge-relay demo``: N devices at R samples/s each, a few
injected anomalies, and the exactness check at the origin.

Each device connects to the edges in a rotated order (so the demo's SIGKILL hits some
of them; they fail over with their offline buffer) and sends one ``temp`` sample every
``1/R`` s, batched by the SDK.  A few devices get one spike each, after the detector's
warm-up.  At the end every device flushes and waits for its acknowledgements, then the
origin's exact per-device sample counts are compared with what was sent:
``iot.lost`` = sent - counted (0 when nothing is lost; negative would mean double counting).

Each device runs at its own base temperature (15-30 °C).  The demo's window handler
(:mod:`edge_node.local.demo_app`) commands ``fan`` to a device whose window mean is over
29 °C; the device answers ``{"ok": true}`` and runs 6 °C cooler from then on, so the
summary can tell how many devices were hot, commanded and cooled.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass
from typing import Any

from client_sdk.device import Device
from client_sdk.protocol import Command, mint_token
from edge_node.local.demo_app import HOT
from edge_node.redis_io import conn as redis_conn

__all__ = ["DeviceFleet"]


@dataclass
class _Sim:
    idx: int
    device: Device
    base: float = 20.0
    sent: int = 0
    spike_at: int = -1
    #: ``fan`` commands received (at least once: a re-delivery counts again).
    commands: int = 0
    cooled: bool = False


class DeviceFleet:
    """``await start()``, ``await run(duration)``, then ``await summary()``."""

    def __init__(self, urls: list[str], secret: bytes, redis_url: str, *, devices: int = 500,
                 rate: float = 10.0, anomalies: int = 5, shards: int = 4,
                 seed: int = 42) -> None:
        self.urls = urls
        self.secret = secret
        self.redis_url = redis_url
        self.n = devices
        self.rate = rate
        self.anomalies = min(anomalies, devices)
        self.shards = shards
        self.rng = random.Random(seed)
        self.sims: list[_Sim] = []
        self.prefix = f"demo-dev-{int(time.time())}-"

    async def start(self) -> None:
        """Connect every device (a few at a time)."""
        now = time.time()

        async def one(i: int) -> _Sim:
            order = self.urls[i % len(self.urls):] + self.urls[:i % len(self.urls)]
            name = f"{self.prefix}{i}"
            tok = mint_token(self.secret, name, "device", [name],
                             metrics={"temp": (-40.0, 125.0)}, now=now, ttl=3600)
            d = await Device.connect(order, tok, batch_max=50, linger=2.0,
                                     client_options={"backoff_base": 0.2, "backoff_cap": 2.0})
            sim = _Sim(i, d, base=random.Random(i).uniform(15, 30))
            d.on_command = functools.partial(self._command, sim)
            return sim

        for k in range(0, self.n, 50):
            self.sims += await asyncio.gather(*(one(i) for i in range(k, min(k + 50, self.n))))
        for s in self.rng.sample(self.sims, self.anomalies):
            s.spike_at = self.rng.randint(80, 120)  # after the detector's warm-up (50)

    async def run(self, duration: float) -> None:
        """Send samples for ``duration`` seconds: one sample per device every ``1/rate`` s
        (one timer for all devices, open loop: a late tick does not shift the schedule)."""
        interval = 1.0 / self.rate
        start = time.perf_counter()
        rngs = [random.Random(s.idx) for s in self.sims]
        for r in rngs:
            r.random()  # the first draw is the device's base temperature
        k = 0
        while k * interval < duration:
            delay = start + k * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for s, rng in zip(self.sims, rngs, strict=True):
                v = s.base + rng.gauss(0, 0.3) + (20.0 if k == s.spike_at else 0.0)
                s.device.send_telemetry("temp", v)
                s.sent += 1
            k += 1

    @staticmethod
    def _command(sim: _Sim, cmd: Command) -> dict[str, Any]:
        """A command from the edge: ``fan`` cools the device by 6 °C (once)."""
        if cmd.name != "fan":
            return {"ok": False, "error": f"unknown command {cmd.name!r}"}
        sim.commands += 1
        if not sim.cooled:
            sim.cooled = True
            sim.base -= 6.0
        return {"ok": True}

    async def summary(self, timeout: float = 20.0) -> dict[str, Any]:
        """Flush, wait for acks and for the origin to settle (bounded); the ``iot`` block."""
        for s in self.sims:
            await s.device.flush()
        deadline = time.monotonic() + timeout
        for s in self.sims:
            await s.device.wait_acked(max(0.1, deadline - time.monotonic()))
        sent = sum(s.sent for s in self.sims)
        counted, rollups, alerts = await self._origin(sent, deadline)
        out = {"devices": self.n, "rate_hz": self.rate, "samples": sent,
               "samples_acked": sum(s.device.acked_samples for s in self.sims),
               "samples_at_origin": counted, "rollups_at_origin": rollups,
               "anomalies_injected": self.anomalies, "alerts": alerts,
               "lost": sent - counted,
               "resent_batches": sum(s.device.resent_batches for s in self.sims),
               "unacked": sum(s.device.buffered for s in self.sims),
               "fan_commands": sum(s.commands for s in self.sims),
               "devices_cooled": sum(1 for s in self.sims if s.cooled),
               "hot_at_end": sum(1 for s in self.sims if s.base > HOT)}
        for s in self.sims:
            await s.device.close()
        return out

    async def _origin(self, sent: int, deadline: float) -> tuple[int, int, int]:
        from origin.keys import ShardKeys
        from origin.settings import OriginSettings
        from origin.view import origin_stats, recent_alerts

        r = redis_conn.connect(self.redis_url)
        try:
            counted = 0
            while True:
                pipe = r.pipeline(transaction=False)
                for s in self.sims:
                    name = f"{self.prefix}{s.idx}"
                    pipe.hget(ShardKeys.of(name, self.shards).dev(name, "meta"), "samples")
                counted = sum(int(x or 0) for x in await pipe.execute())
                if counted >= sent or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
            st = await origin_stats(r, OriginSettings(shards=self.shards))
            alerts = [a for a in await recent_alerts(r, OriginSettings(shards=self.shards),
                                                     1000)
                      if str(a.get("key", "")).startswith(self.prefix)
                      and isinstance(a.get("body"), dict) and a["body"].get("state") == "raised"]
            return counted, int(st["iot"]["rollups"]), len(alerts)
        finally:
            await r.aclose()
