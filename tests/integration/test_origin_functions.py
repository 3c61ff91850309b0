"""Origin functions end to end against a real Redis server.

In this process (a :class:`~origin.worker.Worker` task): each event runs its handler
once, also when the edge re-sent the batch; a handler that keeps raising is retried
the bounded number of times and dead-lettered, without holding up other events; a
handler raising ``DeadLetter`` is dead-lettered at once.

With real worker processes (``python -m origin worker --functions
test_origin_functions:functions``): the worker running an event is SIGKILLed while one
of the event's two handlers is still running; another worker claims the event: the
handler that had finished does not run again, the interrupted one runs again (at
least once) and finishes; each finishes exactly once.

The handlers below are this module's ``functions``: they count in Redis under
``fntest:*`` keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_node.local.redis_server import RedisServer, start_redis
from edge_node.uplink.wire import pack_batch, pack_entry, shard_of, stream_key
from origin.functions import (
    DeadLetter,
    FunctionContext,
    OriginEvent,
    OriginFunctions,
    load_functions,
)
from origin.hooks.record import STATS_KEY, dead_stream, hooks_stream
from origin.hooks.retry import RetryPolicy
from origin.hooks.runner import HookSettings
from origin.hooks.setup import HookConfig
from origin.settings import OriginSettings
from origin.worker import Worker

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 2

functions = OriginFunctions()


@functions.on("room_event", name="count")
async def count(ctx: FunctionContext, event: OriginEvent) -> None:
    """Counts runs per event; fails as the event's body asks."""
    r = ctx.redis
    await r.hincrby(f"fntest:{event.key}:count:started", event.id, 1)
    body = event.body if isinstance(event.body, dict) else {}
    if body.get("fail") == "always":
        raise RuntimeError("this handler always fails")
    if body.get("fail") == "dead":
        raise DeadLetter("not for us")
    await r.hincrby(f"fntest:{event.key}:count:done", event.id, 1)


@functions.on("alert", name="fast")
async def fast(ctx: FunctionContext, event: OriginEvent) -> None:
    await ctx.redis.hincrby(f"fntest:{event.key}:fast:done", event.id, 1)


@functions.on("alert", name="slow")
async def slow(ctx: FunctionContext, event: OriginEvent) -> None:
    """Waits (at most 60 s) for the test's release key, then finishes."""
    r = ctx.redis
    await r.hincrby(f"fntest:{event.key}:slow:started", event.id, 1)
    for _ in range(600):
        if await r.exists(f"fntest:{event.key}:release"):
            break
        await asyncio.sleep(0.1)
    await r.hincrby(f"fntest:{event.key}:slow:done", event.id, 1)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with start_redis() as s:
        yield s


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    await c.flushall()
    yield c
    await c.aclose()


def config(*, attempts: int = 3, claim_idle_ms: int = 60_000) -> HookConfig:
    regs = [x for x in functions.handlers if x.name == "count"]
    return HookConfig(regs, settings=HookSettings(
        claim_interval=0.2, block_ms=100, claim_idle_ms=claim_idle_ms,
        function_retry=RetryPolicy(attempts, base=0.05, cap=0.2, max_elapsed=30.0)))


@contextlib.asynccontextmanager
async def running(url: str, hooks: HookConfig, consumer: str = "w-1"
                  ) -> AsyncIterator[Worker]:
    w = Worker(OriginSettings(redis_url=url, shards=SHARDS, block_ms=100,
                              claim_interval=0.2), consumer, hooks)
    stop = asyncio.Event()
    task = asyncio.ensure_future(w.run(stop))
    try:
        yield w
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def send(r: aioredis.Redis, key: str, *bodies: Any, kind: str = "room_event",
               seq0: int = 1, edge: str = "edge-t") -> list[str]:
    packed = [pack_entry(seq0 + i, kind, key, int(time.time() * 1000), b)
              for i, b in enumerate(bodies)]
    await r.xadd(stream_key(shard_of(key, SHARDS)), pack_batch(edge, packed))  # type: ignore[arg-type]
    return [f"{edge}:{seq0 + i}" for i in range(len(bodies))]


async def until(pred: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def counts(r: aioredis.Redis, key: str) -> dict[str, int]:
    raw: Any = await r.hgetall(key)
    return {k.decode(): int(v) for k, v in raw.items()}


async def settled(r: aioredis.Redis) -> bool:
    return sum([await r.xlen(hooks_stream(i)) for i in range(SHARDS)]) == 0


def test_this_module_loads_as_a_spec() -> None:
    assert {x.name for x in load_functions(["test_origin_functions:functions"],
                                           entry_points=False)} == {"count", "fast", "slow"}


async def test_each_event_runs_once_also_when_the_edge_resends_it(
        server: RedisServer, r: aioredis.Redis) -> None:
    async with running(server.url, config()):
        ids = await send(r, "room-a", {"n": 1}, {"n": 2}, {"n": 3})
        # The same batch again (the edge's XADD timed out but had landed): duplicates.
        await send(r, "room-a", {"n": 1}, {"n": 2}, {"n": 3})

        async def three_done() -> bool:
            return len(await counts(r, "fntest:room-a:count:done")) == 3

        await until(three_done, "three events handled")
        await until(lambda: settled(r), "the hooks stream to drain")
        await asyncio.sleep(0.3)  # a second run would show now
    assert await counts(r, "fntest:room-a:count:started") == dict.fromkeys(ids, 1)
    assert await counts(r, "fntest:room-a:count:done") == dict.fromkeys(ids, 1)


async def test_a_failing_handler_is_retried_then_dead_lettered_without_blocking(
        server: RedisServer, r: aioredis.Redis) -> None:
    async with running(server.url, config(attempts=3)):
        bad = await send(r, "room-b", {"fail": "always"})
        refused = await send(r, "room-b", {"fail": "dead"}, seq0=2)
        good = await send(r, "room-b", {"n": 1}, seq0=3)

        async def good_done() -> bool:
            return good[0] in await counts(r, "fntest:room-b:count:done")

        await until(good_done, "the good event")
        await until(lambda: settled(r), "the hooks stream to drain")
        await asyncio.sleep(0.5)  # stats flushed every 0.2 s
    started = await counts(r, "fntest:room-b:count:started")
    assert started == {bad[0]: 3, refused[0]: 1, good[0]: 1}
    entries: Any = await r.xrange(dead_stream(shard_of("room-b", SHARDS)))
    dead = {f[b"event"].decode(): {k.decode(): v.decode() for k, v in f.items()}
            for _id, f in entries}
    assert set(dead) == {bad[0], refused[0]}
    assert dead[bad[0]]["target"] == "fn:count" and dead[bad[0]]["attempts"] == "3"
    assert dead[bad[0]]["reason"] == "attempts"
    assert "RuntimeError: this handler always fails" in dead[bad[0]]["error"]
    assert dead[refused[0]]["reason"] == "permanent"
    st = {k.decode(): int(float(v)) for k, v in (await r.hgetall(STATS_KEY)).items()}
    assert st["fn:error:room_event"] == 4 and st["fn:ok:room_event"] == 1
    assert st["fn:dead:room_event"] == 2


@pytest.mark.parametrize("max_inflight", [HookSettings().max_inflight, 7])
async def test_a_backlog_is_served_promptly_within_the_in_flight_bound(
        server: RedisServer, r: aioredis.Redis, max_inflight: int) -> None:
    """3,000 events waiting before the worker starts.  With the default bound (1,000
    held: more than redis-py's default pool of 100 connections) and with a bound
    smaller than a read: every event runs once, promptly (not after the 60 s claim
    idle), no Redis call fails, and the worker never holds more than the bound, all
    shards together."""
    n, per_batch = 3000, 250
    ids: list[str] = []
    for b in range(n // per_batch):
        ids += await send(r, "room-c", *({"n": i} for i in range(per_batch)),
                          seq0=1 + b * per_batch)
        ids += await send(r, "room-d", *({"n": i} for i in range(per_batch)),
                          seq0=1 + b * per_batch, edge="edge-u")
    hooks = config()
    hooks = HookConfig(hooks.functions, settings=dataclasses.replace(
        hooks.settings, max_inflight=max_inflight))
    assert shard_of("room-c", SHARDS) != shard_of("room-d", SHARDS)
    async with running(server.url, hooks) as w:

        async def all_done() -> bool:
            return (await r.hlen("fntest:room-c:count:done")  # type: ignore[misc]
                    + await r.hlen("fntest:room-d:count:done")) == 2 * n  # type: ignore[misc]

        await until(all_done, f"{2 * n} events handled", timeout=50.0)
        await until(lambda: settled(r), "the hooks stream to drain")
        assert w.hooks is not None
        assert (w.errors, w.hooks.errors, w.hooks.claimed) == (0, 0, 0)
        assert 0 < w.hooks.held_peak <= max_inflight
    done = {**await counts(r, "fntest:room-c:count:done"),
            **await counts(r, "fntest:room-d:count:done")}
    assert done == dict.fromkeys(ids, 1)


def spawn_worker(url: str, consumer: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests" / "integration"), str(ROOT)])}
    for var in ("ORIGIN_FUNCTIONS", "ORIGIN_WEBHOOKS"):
        env.pop(var, None)
    return subprocess.Popen(
        [sys.executable, "-m", "origin", "worker", "--redis-url", url, "--shards",
         str(SHARDS), "--consumer", consumer, "--block-ms", "100", "--claim-interval",
         "0.2", "--functions", "test_origin_functions:functions",
         "--hooks-claim-idle-ms", "1000"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def test_a_killed_worker_does_not_make_a_finished_handler_run_twice(
        server: RedisServer, r: aioredis.Redis, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a = spawn_worker(server.url, "proc-a", tmp_path / "a.log")
        procs.append(a)
        ids = await send(r, "dev-k", {"metric": "x", "ts": 1}, {"metric": "y", "ts": 2},
                         kind="alert")

        async def a_is_inside_slow() -> bool:
            fast_done = await counts(r, "fntest:dev-k:fast:done")
            slow_started = await counts(r, "fntest:dev-k:slow:started")
            return len(fast_done) == 2 and len(slow_started) == 2

        await until(a_is_inside_slow, "worker A to finish 'fast' and enter 'slow'")
        a.send_signal(signal.SIGKILL)  # mid-'slow': the events stay pending on proc-a
        await asyncio.to_thread(a.wait, 10)
        await r.set("fntest:dev-k:release", "1")
        b = spawn_worker(server.url, "proc-b", tmp_path / "b.log")
        procs.append(b)

        async def b_finished() -> bool:
            return len(await counts(r, "fntest:dev-k:slow:done")) == 2 and await settled(r)

        await until(b_finished, "worker B to claim and finish both events", 60)
        await asyncio.sleep(0.5)  # a further run would show now
        assert await counts(r, "fntest:dev-k:fast:done") == dict.fromkeys(ids, 1)
        assert await counts(r, "fntest:dev-k:slow:started") == dict.fromkeys(ids, 2)
        assert await counts(r, "fntest:dev-k:slow:done") == dict.fromkeys(ids, 1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    await asyncio.to_thread(p.wait, 10)
                except subprocess.TimeoutExpired:
                    p.kill()
