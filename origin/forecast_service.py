"""The forecast loop of the origin API process: sample the edge registry, forecast, persist.

Every ``step`` seconds :class:`ForecastService` reads the live edges (the registry the
edges heartbeat into, :func:`edge_node.neighbours.registry.live_edges`), sums per region the
connections and the message rate (the delta of each edge's ``msgs_out`` counter; a
smaller value than last time is a restarted edge, counted from zero), and feeds
:class:`origin.forecast.Forecaster`.  The latest recommendations are served by
``GET /v1/forecast`` and ``/metrics`` (``origin_recommended_replicas{region}``, ...).

The models are saved to ``er:{forecast}:state`` (JSON) every ``save_every`` steps and
loaded at start, so a restarted API keeps what it learned of the season; the steps it
missed are filled with the models' own forecasts (up to one season; a longer gap
starts afresh).  Several API replicas each run the loop on the same input and compute
the same figures (the last one to save wins; Prometheus takes ``max`` over them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge_node.contract import live_edges
from origin.forecast import Forecaster, ForecastSettings, Recommendation

__all__ = ["ForecastService", "STATE_KEY"]

log = logging.getLogger("origin.forecast")

#: Where the models are saved (one key; its own hash tag on Redis Cluster).
STATE_KEY = "er:{forecast}:state"


class ForecastService:
    """Start with :meth:`start`, stop with :meth:`stop`; :meth:`tick` is one step."""

    def __init__(self, r: aioredis.Redis, settings: ForecastSettings, edge_ttl: float = 5.0,
                 save_every: int = 4) -> None:
        self.r = r
        self.settings = settings
        self.edge_ttl = edge_ttl
        self.save_every = max(1, save_every)
        self.forecaster = Forecaster(settings)
        self.updated = 0.0  # wall clock of the last step
        self.steps = 0
        self.errors = 0
        self._counters: dict[str, float] = {}
        self._last_sample = 0.0
        self._task: asyncio.Task[None] | None = None

    def latest(self) -> list[Recommendation]:
        """The last recommendation of every region."""
        return self.forecaster.latest()

    def as_dict(self) -> dict[str, Any]:
        """The ``/v1/forecast`` body."""
        s = self.settings
        return {"updated": self.updated, "step": s.step, "season": s.season,
                "horizon": s.horizon, "capacity_connections": s.capacity_connections,
                "capacity_messages": s.capacity_messages, "headroom": s.headroom,
                "regions": [r.as_dict() for r in self.latest()]}

    async def load(self, now: float) -> None:
        """Load saved models; fill the steps missed since they were saved."""
        raw: Any = await self.r.get(STATE_KEY)
        if not raw:
            return
        try:
            st = json.loads(raw)
            saved_at = float(st["updated"])
            if float(st["step"]) != self.settings.step:
                raise ValueError("another step")
            n = self.forecaster.load_state(st["regions"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("saved forecast state ignored: %s", exc)
            return
        missed = int((now - saved_at) // self.settings.step)
        if missed > self.settings.season_steps or missed < 0:
            log.warning("saved forecast state is older than a season: starting afresh")
            self.forecaster = Forecaster(self.settings)
            return
        for sr in self.forecaster.regions.values():
            for _ in range(missed):
                sr.conn.skip()
                sr.msgs.skip()
        self.updated = saved_at
        log.info("forecast state loaded: %d regions, %d missed steps filled", n, missed)

    async def save(self) -> None:
        """Save the models (JSON)."""
        st = {"updated": self.updated, "step": self.settings.step,
              "regions": self.forecaster.to_state()}
        await self.r.set(STATE_KEY, json.dumps(st, separators=(",", ":")))

    async def tick(self, now: float) -> list[Recommendation]:
        """One step: read the registry, update every region's models."""
        edges = await live_edges(self.r, self.edge_ttl)
        dt = now - self._last_sample if self._last_sample else 0.0
        conns: dict[str, float] = {}
        msgs: dict[str, float] = {}
        counters: dict[str, float] = {}
        for e in edges:
            region = e.get("region") or "default"
            try:
                c = float(e.get("connections", 0) or 0)
                out = float(e.get("msgs_out", 0) or 0)
            except ValueError:
                continue
            conns[region] = conns.get(region, 0.0) + c
            eid = e.get("id", "")
            counters[eid] = out
            prev = self._counters.get(eid)
            delta = 0.0 if prev is None else (out - prev if out >= prev else out)
            msgs[region] = msgs.get(region, 0.0) + (delta / dt if dt > 0 else 0.0)
        self._counters = counters
        self._last_sample = now
        # Regions seen before but with no live edge now have zero load.
        for region in self.forecaster.regions:
            conns.setdefault(region, 0.0)
            msgs.setdefault(region, 0.0)
        recs = [self.forecaster.observe(region, conns[region], msgs[region])
                for region in sorted(conns)]
        self.updated = time.time()
        self.steps += 1
        return recs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RedisError, OSError):
            await self.load(time.time())
        next_at = loop.time()
        while True:
            next_at += self.settings.step
            try:
                await self.tick(time.time())
                if self.steps % self.save_every == 0:
                    await self.save()
            except (RedisError, OSError) as exc:
                self.errors += 1
                log.warning("forecast step failed: %r", exc)
                for sr in self.forecaster.regions.values():  # keep the season's phase
                    sr.conn.skip()
                    sr.msgs.skip()
            except Exception:
                self.errors += 1
                log.exception("forecast step failed")
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def start(self) -> None:
        """Run the loop in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="forecast")

    async def stop(self) -> None:
        """Stop the loop and save the models (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.steps:
            with contextlib.suppress(RedisError, OSError):
                await self.save()
