"""An origin worker: one consumer in the ``origin`` group of every uplink stream.

Loop: XREADGROUP (on a dedicated connection with no socket timeout, so a BLOCK read is
never cut short and silently retried), apply each stream entry with the atomic
apply-and-XACK script (:mod:`origin.apply`), then push pending commands to devices
that came online.  Every ``claim_interval`` it XAUTOCLAIMs entries that another worker
left pending for longer than ``claim_idle_ms`` (a crashed worker) and applies them;
ids the stream has trimmed meanwhile come back in XAUTOCLAIM's third element: they are
XACKed and counted (``trimmed``), never retried.

Counters (plain attributes): ``applied``, ``duplicates``, ``dead``, ``claimed``,
``trimmed``, ``batches``, ``errors``.  Cluster-wide totals are in each shard's stats hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from edge_node.contract import claim_shard_count
from edge_node.redis_io import conn as redis_conn
from origin.apply import Applier, Prepared
from origin.downlink import deliver_pending
from origin.effects import EffectSettings
from origin.hooks.setup import HookConfig, build_runner
from origin.keys import GROUP, ShardKeys
from origin.retrying import until_stopped
from origin.settings import OriginSettings

__all__ = ["Worker"]

log = logging.getLogger("origin.worker")


class Worker:
    """Run with ``await worker.run(stop_event)``; returns after ``stop_event`` is set.

    ``hooks``: origin functions and webhooks; with any, the apply step queues the
    events of their kinds and a :class:`~origin.hooks.runner.HookRunner` (consumer
    ``consumer`` of group ``hooks``) runs next to the apply loop."""

    def __init__(self, settings: OriginSettings, consumer: str,
                 hooks: HookConfig | None = None) -> None:
        self.s = settings
        self.consumer = consumer
        hooks = hooks or HookConfig()
        self.applier = Applier(EffectSettings(settings.events_keep, settings.alerts_keep,
                                              settings.dead_keep, settings.rollup_ttl_ms),
                               settings.seen_ttl_ms, hooks.kinds(), hooks.settings.maxlen)
        self.streams = {ShardKeys(i).stream: i for i in range(settings.shards)}
        self.applied = self.duplicates = self.dead = 0
        self.claimed = self.trimmed = self.batches = self.errors = 0
        self.r: aioredis.Redis = redis_conn.connect(settings.redis_url, socket_timeout=10.0)
        # PITFALLS: a socket timeout shorter than BLOCK makes redis-py retry silently.
        self.rb: aioredis.Redis = redis_conn.connect(settings.redis_url, socket_timeout=None)
        # On a Redis Cluster each uplink stream is in its own slot: one XREADGROUP per
        # stream (a multi-stream read would be refused with CROSSSLOT).
        self.cluster = redis_conn.is_cluster(settings.redis_url)
        # The hooks get their own client, its pool sized to the calls the runner lets
        # run at once (HookSettings.connections).
        self.rh: aioredis.Redis | None = None
        self.hooks = None
        if hooks:
            self.rh = redis_conn.connect(
                settings.redis_url, socket_timeout=10.0,
                max_connections=hooks.settings.connections(settings.shards))
            self.hooks = build_runner(hooks, self.rh, self.rb, settings.shards, consumer)

    async def setup(self) -> None:
        """Create the consumer groups (idempotent), load the script, record the shard count."""
        for stream in self.streams:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
        await self.applier.load(self.r)
        await claim_shard_count(self.r, self.s.shards, "--shards")

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; Redis errors are logged and retried."""
        hooks = (asyncio.ensure_future(self.hooks.run(stop)) if self.hooks is not None
                 else None)
        async def step() -> None:
            await self.setup()
            await self._loop(stop)

        def count() -> None:
            self.errors += 1

        try:
            await until_stopped(stop, step, "worker", count)
        finally:
            if hooks is not None:
                if not stop.is_set():  # cancelled: stop the runner too
                    hooks.cancel()
                await asyncio.gather(hooks, return_exceptions=True)
            await self.r.aclose()
            await self.rb.aclose()
            if self.rh is not None:
                await self.rh.aclose()

    async def _loop(self, stop: asyncio.Event) -> None:
        if not self.cluster:
            await self._read(stop, list(self.streams), claim=True)
            return
        # One reader per stream (concurrent blocking reads on the cluster client's
        # per-node pools); the first one also claims.  One failing fails all (retried).
        tasks = [asyncio.ensure_future(self._read(stop, [k], claim=i == 0))
                 for i, k in enumerate(self.streams)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, stop: asyncio.Event, keys: list[str], *, claim: bool) -> None:
        loop = asyncio.get_running_loop()
        next_claim = 0.0 if claim else float("inf")
        streams: Any = {k: ">" for k in keys}
        while not stop.is_set():
            if loop.time() >= next_claim:
                await self.claim_once()
                next_claim = loop.time() + self.s.claim_interval
            reply: Any = await self.rb.xreadgroup(GROUP, self.consumer, streams,
                                                  count=self.s.read_count,
                                                  block=self.s.block_ms)
            if reply:
                # The streams of the reply are applied concurrently (one pipeline each):
                # the last stream's entries do not wait for the others' round trips.
                await self.apply_many([(self.streams[stream.decode()], entries)
                                       for stream, entries in reply])

    async def claim_once(self) -> int:
        """XAUTOCLAIM every stream once (to the end); apply what was claimed."""
        total = 0
        for stream, shard in self.streams.items():
            start = "0-0"
            while True:
                res: Any = await self.r.xautoclaim(stream, GROUP, self.consumer,
                                                   self.s.claim_idle_ms, start, count=100)
                next_id, claimed, *rest = res
                deleted = rest[0] if rest else []
                live = [(i, f) for i, f in claimed if i is not None and f is not None]
                if deleted:
                    await self.r.xack(stream, GROUP, *deleted)
                    await self.r.hincrby(ShardKeys(shard).stats, "trimmed", len(deleted))
                    self.trimmed += len(deleted)
                if live:
                    self.claimed += len(live)
                    total += len(live)
                    await self.r.hincrby(ShardKeys(shard).stats, "claimed", len(live))
                    await self.apply(shard, live)
                nid = next_id.decode() if isinstance(next_id, bytes) else str(next_id)
                if nid == "0-0":
                    break
                start = nid
        return total

    async def apply(self, shard: int, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Apply (and XACK) stream entries of one shard, in order, in one pipeline."""
        await self.apply_many([(shard, entries)])

    async def apply_many(self, parts: list[tuple[int, list[tuple[bytes, dict[bytes, bytes]]]]]
                         ) -> None:
        """Apply (and XACK) the stream entries of several shards: one pipeline per shard
        (one script call per stream entry, each shard's in order), sent as soon as that
        shard is prepared, so Redis applies one shard while this process prepares the
        next; returns when all are applied.  The first failure is raised (the others
        still finish: unacknowledged entries are claimed again later)."""
        tasks: list[asyncio.Future[None]] = []
        try:
            for shard, entries in parts:
                preps = [self.applier.prepare(shard, sid.decode(), fields)
                         for sid, fields in entries]
                if preps:
                    tasks.append(asyncio.ensure_future(self._apply_prepared(preps)))
                    await asyncio.sleep(0)  # let it write its pipeline first
        finally:
            done = await asyncio.gather(*tasks, return_exceptions=True)
        for res in done:
            if isinstance(res, BaseException):
                raise res

    async def _apply_prepared(self, preps: list[Prepared]) -> None:
        for attempt in (0, 1):
            pipe = self.r.pipeline(transaction=False)
            for p in preps:
                # execute_command: redis-py's cluster pipeline blocks evalsha().
                pipe.execute_command("EVALSHA", self.applier.sha, len(p.keys), *p.keys,
                                     *p.args)
            try:
                results: Any = await pipe.execute()
                break
            except NoScriptError:
                if attempt:
                    raise
                await self.applier.load(self.r)  # Redis restarted without our script
        for a, d, x in results:
            self.applied += int(a)
            self.duplicates += int(d)
            self.dead += int(x)
        self.batches += len(preps)
        for p in preps:
            for device, edge in p.online_devices:
                await deliver_pending(self.r, self.s, device, edge)
