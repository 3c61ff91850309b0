"""The hooks runner: one consumer of group ``hooks`` on every ``er:{up:N}:hooks``
stream, run by each origin worker next to its apply loop.

For each event read it runs every target of the event's kind (origin functions,
webhook URLs) concurrently, each as a *job* with its own retries
(:class:`~origin.hooks.retry.RetryPolicy`), and acknowledges (XACK + XDEL) the event
only when every job finished: done (recorded in ``er:{up:N}:hooks:done:EVENT``) or
dead-lettered (``er:{up:N}:hooks:dead``, in the same transaction as its done record).
A redelivered event skips the targets its done record names.

Never blocking: at most ``max_inflight`` events are held at once, all shards' readers
together (more wait in the stream, durably); at most ``concurrency`` attempts run at
once; a job waiting for a retry holds no attempt slot.  Redis calls are bounded to
fit the client's pool (``HookSettings.connections``): the runner's own calls for the
events it holds queue for ``bookkeeping`` slots, a handler runs only within its
attempt slot; so a backlog of held events never exhausts the pool (redis-py's pool
fails a call beyond its size instead of waiting; a blocking pool would wait, but costs
about 40 µs per call, measured).  A worker that stops or dies leaves its events pending: when it
starts again (same consumer name) it reads its own pending entries first; if it does
not, another worker claims them after ``claim_idle_ms``.  While an event is held, its
entry's idle time is reset every ``claim_interval`` (XCLAIM JUSTID) so no other worker
claims an event whose retries are still running here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from origin.hooks.record import (
    HOOKS_GROUP,
    EventDecodeError,
    OriginEvent,
    dead_fields,
    dead_stream,
    done_key,
    hooks_stream,
)
from origin.hooks.retry import GiveUp, RetryPolicy
from origin.hooks.stats import HookStats
from origin.hooks.target import Target
from origin.retrying import until_stopped

__all__ = ["HookRunner", "HookSettings"]

log = logging.getLogger("origin.hooks")

_FAMILY = {"function": "fn", "webhook": "wh"}


@dataclass(frozen=True, slots=True)
class HookSettings:
    """Bounds of the hooks pipeline (flags in docs/webhooks.md)."""

    #: Approximate cap of each hooks stream and each dead-letter stream, entries.
    maxlen: int = 100_000
    dead_maxlen: int = 100_000
    #: Events held per worker; attempts running at once per worker.
    max_inflight: int = 1000
    concurrency: int = 64
    #: Another worker's events are claimed after this idle time, ms.
    claim_idle_ms: int = 60_000
    claim_interval: float = 1.0
    read_count: int = 100
    block_ms: int = 1000
    #: How long done records are kept (the redelivery deduplication window), ms.
    done_ttl_ms: int = 24 * 3600 * 1000
    #: Origin functions: retries and the timeout of one call, seconds.
    function_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(
        max_attempts=5, base=0.5, cap=30.0, max_elapsed=300.0))
    function_timeout: float = 30.0

    #: The runner's own Redis calls for the events it holds (done records, acks) at once.
    bookkeeping: int = 16

    def connections(self, shards: int) -> int:
        """Size of the hooks' Redis pool: one per running attempt (a handler's
        ``ctx.redis`` calls, one at a time), the runner's bookkeeping calls, one read per
        shard and a few for the claim and stats turn."""
        return self.concurrency + self.bookkeeping + shards + 4


class HookRunner:
    """Run with ``await runner.run(stop)`` (see the module docstring).

    ``targets``: kind (or ``*``) -> targets; ``retry``: family (``function``,
    ``webhook``) -> policy."""

    def __init__(self, r: aioredis.Redis, rb: aioredis.Redis, shards: int, consumer: str,
                 targets: Mapping[str, Sequence[Target]], retry: Mapping[str, RetryPolicy],
                 settings: HookSettings, stats: HookStats,
                 rng: Callable[[], float] = random.random) -> None:
        self.r, self.rb = r, rb
        self.shards = shards
        self.consumer = consumer
        self.targets = {k: list(v) for k, v in targets.items()}
        self.retry = dict(retry)
        self.s = settings
        self.stats = stats
        self.rng = rng
        self.inflight: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        #: Events asked for by reads in flight (counted against ``max_inflight``).
        self._reserved = 0
        self._sem = asyncio.Semaphore(settings.concurrency)
        self._io = asyncio.Semaphore(settings.bookkeeping)
        self.acked = self.claimed = self.errors = 0
        #: The most events held at once since the start (never above ``max_inflight``).
        self.held_peak = 0

    def targets_of(self, kind: str) -> list[Target]:
        """The targets an event of ``kind`` goes to."""
        return self.targets.get(kind, []) + self.targets.get("*", [])

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; Redis errors are logged and retried.  On return
        the events still held are left pending (picked up again as described above)."""
        async def step() -> None:
            await self._setup()
            await self._serve(stop)

        def count() -> None:
            self.errors += 1

        try:
            await until_stopped(stop, step, "hooks runner", count)
        finally:
            tasks = list(self.inflight.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await self.stats.flush(self.r)

    async def _setup(self) -> None:
        for i in range(self.shards):
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await self.r.xgroup_create(hooks_stream(i), HOOKS_GROUP, id="0",
                                           mkstream=True)

    async def _serve(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.ensure_future(self._read(stop, i)) for i in range(self.shards)]
        tasks.append(asyncio.ensure_future(self._keep(stop)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _free(self) -> int:
        """Events that may still be read: ``max_inflight`` less those held and those
        asked for by reads in flight (the shards' readers run concurrently)."""
        return self.s.max_inflight - len(self.inflight) - self._reserved

    async def _wait_room(self, stop: asyncio.Event) -> bool:
        """Wait until another event may be read; False when stopping."""
        while self._free() <= 0:
            if stop.is_set():
                return False
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 0.5)
        return not stop.is_set()

    async def _read(self, stop: asyncio.Event, shard: int) -> None:
        stream = hooks_stream(shard)
        own = "0"  # this consumer's pending entries first (a restart), then new ones
        # A shard reads at most its share of the bound, so one shard's blocking read
        # cannot hold every free slot while another shard has events waiting.
        share = max(1, self.s.max_inflight // self.shards)
        while await self._wait_room(stop):
            count = min(self._free(), self.s.read_count, share)
            self._reserved += count
            try:
                if own:
                    reply: Any = await self.r.xreadgroup(HOOKS_GROUP, self.consumer,
                                                         {stream: own}, count=count)
                else:
                    reply = await self.rb.xreadgroup(HOOKS_GROUP, self.consumer,
                                                     {stream: ">"}, count=count,
                                                     block=self.s.block_ms)
                entries = reply[0][1] if reply else []
                if own:
                    if not entries:
                        own = ""
                        continue
                    own = entries[-1][0]
                for sid, fields in entries:
                    self._reserved -= 1
                    count -= 1
                    await self._start(shard, sid, fields)
            finally:
                self._reserved -= count
                self._room.set()

    async def _start(self, shard: int, sid: bytes | str, fields: dict[bytes, bytes] | None
                     ) -> None:
        sid_s = sid.decode() if isinstance(sid, bytes) else sid
        if (shard, sid_s) in self.inflight:
            return
        if not fields:  # deleted from the stream (trimmed) while pending
            self.stats.counts["trimmed"] += 1
            await self._ack(shard, sid_s)
            return
        task = asyncio.ensure_future(self._process(shard, sid_s, fields))
        self.inflight[(shard, sid_s)] = task
        self.held_peak = max(self.held_peak, len(self.inflight))
        task.add_done_callback(functools.partial(self._finished, (shard, sid_s)))

    def _finished(self, key: tuple[int, str], _task: asyncio.Task[None]) -> None:
        self.inflight.pop(key, None)
        self._room.set()

    async def _process(self, shard: int, sid: str, fields: dict[bytes, bytes]) -> None:
        try:
            try:
                ev = OriginEvent.from_fields(shard, sid, fields)
            except EventDecodeError as exc:
                self.stats.counts["undecodable"] += 1
                bad = {"event": "?", "target": "?", "reason": "undecodable",
                       "error": str(exc)[:1000], "stream_id": sid,
                       "dead_ms": str(int(time.time() * 1000))}
                async with self._io:
                    await self.r.xadd(dead_stream(shard), bad,  # type: ignore[arg-type]
                                      maxlen=self.s.dead_maxlen, approximate=True)
                await self._ack(shard, sid)
                return
            targets = self.targets_of(ev.kind)
            if targets:
                async with self._io:
                    done: Any = await self.r.hgetall(done_key(shard, ev.id))
                finished = {k.decode() if isinstance(k, bytes) else k for k in done}
                await asyncio.gather(*(self._job(ev, t) for t in targets
                                       if t.name not in finished))
            await self._ack(shard, sid)
        except (RedisError, RedisClusterException, OSError) as exc:
            # Left pending: read again after a restart of the loop, or claimed.
            self.errors += 1
            log.warning("hooks: event %s left pending: %r", sid, exc)

    async def _job(self, ev: OriginEvent, t: Target) -> None:
        loop = asyncio.get_running_loop()
        policy = self.retry[t.family]
        fam = _FAMILY[t.family]
        first = loop.time()
        first_ms = int(time.time() * 1000)
        attempts = 0
        while True:
            async with self._sem:
                out = await t.attempt(ev, attempts + 1, loop.time())
            now = loop.time()
            if out.not_before is not None:
                self.stats.count(fam, "deferred", ev.kind)
                decision = policy.defer(out.not_before, first)
            else:
                attempts += 1
                if out.latency is not None and fam == "wh":
                    self.stats.latency(ev.kind, out.latency)
                if out.ok:
                    self.stats.count(fam, "ok", ev.kind)
                    await self._mark(ev, t.name, "ok")
                    return
                self.stats.count(fam, "error" if fam == "fn" else "failed", ev.kind)
                decision = policy.decide(attempts, first, now, permanent=out.permanent,
                                         rng=self.rng)
            if isinstance(decision, GiveUp):
                self.stats.count(fam, "dead", ev.kind)
                log.warning("hooks: %s dead-lettered for %s after %d attempt(s) (%s): %s",
                            ev.id, t.name, attempts, decision.reason, out.error)
                await self._mark(ev, t.name, "dead", dead_fields(
                    ev, t.name, attempts, decision.reason, out.error, first_ms,
                    int(time.time() * 1000)))
                return
            await asyncio.sleep(max(0.0, decision.at - loop.time()))

    async def _mark(self, ev: OriginEvent, target: str, status: str,
                    dead: dict[str, str] | None = None) -> None:
        """Record the job finished (and its dead letter) in one transaction."""
        key = done_key(ev.shard, ev.id)
        pipe = self.r.pipeline(transaction=True)
        if dead is not None:
            pipe.xadd(dead_stream(ev.shard), dead,  # type: ignore[arg-type]
                      maxlen=self.s.dead_maxlen, approximate=True)
        pipe.hset(key, target, status)
        pipe.pexpire(key, self.s.done_ttl_ms)
        async with self._io:
            await pipe.execute()

    async def _ack(self, shard: int, sid: str) -> None:
        # One group on the hooks stream: an acknowledged entry is not needed any more.
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(hooks_stream(shard), HOOKS_GROUP, sid)
        pipe.xdel(hooks_stream(shard), sid)
        async with self._io:
            await pipe.execute()
        self.acked += 1

    async def _keep(self, stop: asyncio.Event) -> None:
        """Every ``claim_interval``: keep held events ours, claim idle ones, flush stats."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.s.claim_interval)
            await self.touch()
            await self.claim_once()
            await self.stats.flush(self.r)

    async def touch(self) -> None:
        """Reset the idle time of the entries this worker holds."""
        by_shard: dict[int, list[Any]] = {}
        for shard, sid in list(self.inflight):
            by_shard.setdefault(shard, []).append(sid)
        for shard, ids in by_shard.items():
            for i in range(0, len(ids), 500):
                await self.r.xclaim(hooks_stream(shard), HOOKS_GROUP, self.consumer, 0,
                                    ids[i:i + 500], justid=True)

    async def claim_once(self) -> int:
        """Claim entries other workers left idle longer than ``claim_idle_ms`` (as many
        as there is room for) and start them; returns how many."""
        total = 0
        for shard in range(self.shards):
            start: Any = "0-0"
            for _ in range(100):  # bounded scan of the pending list
                count = min(self._free(), 100)
                if count <= 0:
                    break
                self._reserved += count
                try:
                    res: Any = await self.r.xautoclaim(
                        hooks_stream(shard), HOOKS_GROUP, self.consumer,
                        self.s.claim_idle_ms, start, count=count)
                finally:
                    self._reserved -= count
                start, claimed, *rest = res
                # Claimed events first: _start holds them before its first await.
                for sid, fields in claimed:
                    if sid is None:
                        continue
                    total += 1
                    await self._start(shard, sid, fields)
                for sid in rest[0] if rest else []:
                    await self._start(shard, sid, None)  # trimmed: acked and counted
                if start in (b"0-0", "0-0"):
                    break
        self.claimed += total
        return total
