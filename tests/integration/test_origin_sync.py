"""Edge -> origin sync end to end: real Redis servers, real worker processes.

Each test starts its own Redis server (it may pause it, and origin counters are global).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_node.local.origin_api import spawn_worker
from edge_node.local.redis_server import RedisServer, free_port, start_redis
from edge_node.uplink import Uplink, UplinkSettings
from edge_node.uplink.wire import Entry, unpack_batch
from origin.keys import ShardKeys
from origin.settings import OriginSettings
from origin.view import origin_stats
from origin.worker import Worker

pytestmark = pytest.mark.timeout(60)
SHARDS = 4


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis server for these tests alone (they may pause or cut it)."""
    with start_redis() as s:  # stopped (and resumed first) on exit
        yield s


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    yield c
    await c.aclose()


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 20.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def uplink(url: str, edge: str = "e1", **kw: Any) -> Uplink:
    return Uplink(UplinkSettings(redis_url=url, edge_id=edge, shards=SHARDS, **kw))


async def drained(up: Uplink, timeout: float = 20.0) -> None:
    async def ok() -> bool:
        return up.backlog == 0
    await until(ok, timeout, "uplink backlog to drain")


async def stream_entries(r: aioredis.Redis) -> list[tuple[int, str, Entry]]:
    """Every entry in every uplink stream: (shard, edge, entry), stream order per shard."""
    out = []
    for i in range(SHARDS):
        for _sid, fields in await r.xrange(ShardKeys(i).stream):
            edge, entries = unpack_batch(fields)
            out.extend((i, edge, e) for e in entries)
    return out


async def stats(r: aioredis.Redis) -> dict[str, Any]:
    return await origin_stats(r, OriginSettings(shards=SHARDS))


async def rollup_totals(r: aioredis.Redis, device: str) -> tuple[float, float]:
    """(count, sum) of metric ``v`` over all of the device's minute rollups."""
    k = ShardKeys.of(device, SHARDS)
    count = total = 0.0
    async for key in r.scan_iter(match=k.dev(device, "roll:*")):
        h = await r.hgetall(key)
        count += float(h.get(b"v:count", 0))
        total += float(h.get(b"v:sum", 0))
    return count, total


@contextlib.asynccontextmanager
async def worker(url: str, name: str = "w-test", **kw: Any) -> AsyncIterator[Worker]:
    w = Worker(OriginSettings(redis_url=url, shards=SHARDS, block_ms=100, **kw), name)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(w.run(stop))
    try:
        yield w
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_exactly_once_with_duplicate_batches(server: RedisServer,
                                                   r: aioredis.Redis) -> None:
    up = uplink(server.url)
    await up.start()
    for i in range(2000):
        up.submit("telemetry", f"dev-{i % 20}", {"v": 1.0, "note": "x"})
    await drained(up)
    await up.stop()
    # Re-send every batch, as an uplink would after an XADD that timed out but landed.
    for i in range(SHARDS):
        for _sid, fields in await r.xrange(ShardKeys(i).stream):
            await r.xadd(ShardKeys(i).stream, fields)
    async with worker(server.url):
        async def done() -> bool:
            st = await stats(r)
            return bool(st["applied"] + st["duplicates_ignored"] >= 4000)
        await until(done, what="all batches processed")
    st = await stats(r)
    assert (st["applied"], st["duplicates_ignored"], st["dead"]) == (2000, 2000, 0)
    assert all(sh["pending"] == 0 for sh in st["shards"])
    for d in range(20):
        assert await rollup_totals(r, f"dev-{d}") == (100.0, 100.0)


async def test_worker_sigkilled_mid_batch_others_claim(server: RedisServer,
                                                      r: aioredis.Redis,
                                                      tmp_path: Path) -> None:
    n = 30_000
    up = uplink(server.url, batch_max=20)
    await up.start()
    for i in range(n):
        up.submit("telemetry", f"dev-{i % 50}", {"v": 2.0})
    await drained(up)
    await up.stop()
    a = spawn_worker(server.url, "w-a", "--shards", str(SHARDS), "--read-count", "200",
                     log_path=str(tmp_path / "a.log"))
    b = None
    try:
        async def started() -> bool:
            return bool((await stats(r))["applied"] > 0)
        await until(started, what="worker a to apply something")
        a.kill()
        st = await stats(r)
        assert st["applied"] < n, "worker finished before it could be killed"
        pending_a = st["pending_by_consumer"].get("w-a", 0)
        b = spawn_worker(server.url, "w-b", "--shards", str(SHARDS), "--claim-idle-ms", "300",
                         "--claim-interval", "0.2", log_path=str(tmp_path / "b.log"))

        async def finished() -> bool:
            s2 = await stats(r)
            return bool(s2["applied"] >= n and all(sh["pending"] == 0 for sh in s2["shards"]))
        await until(finished, 40, "worker b to apply everything")
    finally:
        a.kill()
        if b is not None:
            b.stop()
    st = await stats(r)
    assert st["applied"] == n
    assert pending_a > 0, "worker a was not killed mid-batch"
    assert st["claimed"] >= pending_a
    for d in range(50):
        assert await rollup_totals(r, f"dev-{d}") == (n / 50, 2.0 * n / 50)


async def test_redis_paused_spools_then_drains_in_order(server: RedisServer,
                                                        r: aioredis.Redis,
                                                        tmp_path: Path) -> None:
    up = uplink(server.url, spool_path=str(tmp_path / "spool.db"), call_timeout=0.2,
                failure_threshold=2, reset_timeout=0.2, max_reset_timeout=0.5)
    await up.start()
    sent = 0
    spooled_seen = 0

    async def produce(seconds: float) -> None:
        nonlocal sent, spooled_seen
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(10):
                up.submit("room_event", f"room-{sent % 7}", {"n": sent})
                sent += 1
            spooled_seen = max(spooled_seen, up.spool_size)
            await asyncio.sleep(0.005)

    await produce(0.5)
    server.pause()
    try:
        await produce(3.0)
        assert up.breaker_state in ("open", "half_open")
    finally:
        server.resume()
    await produce(0.5)
    await drained(up)
    assert spooled_seen > 0 and up.spooled > 0 and up.drained > 0
    assert up.submitted == sent and up.dropped_overflow == 0
    await up.stop()
    # Per room, the first occurrence of every n is in submit order and none is missing.
    seen: set[int] = set()
    per_room: dict[str, list[int]] = {}
    for _shard, _edge, e in await stream_entries(r):
        if e.seq in seen:
            continue  # a batch re-sent after a timeout (the origin deduplicates it)
        seen.add(e.seq)
        per_room.setdefault(e.key, []).append(e.body["n"])
    assert sum(len(v) for v in per_room.values()) == sent
    for room, ns in per_room.items():
        assert ns == sorted(ns), f"{room} out of order"
    async with worker(server.url):
        async def done() -> bool:
            return bool((await stats(r))["applied"] >= sent)
        await until(done, what="worker to apply everything")
    st = await stats(r)
    assert st["applied"] == sent
    total = 0
    for i in range(7):
        total += int((await r.hget(ShardKeys.of(f"room-{i}", SHARDS).room(f"room-{i}", "meta"),
                                   "events")) or 0)
    assert total == sent


async def test_restart_with_non_empty_spool_drains(server: RedisServer, r: aioredis.Redis,
                                                   tmp_path: Path) -> None:
    spool = str(tmp_path / "spool.db")
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: connection refused
    up1 = uplink(dead_url, spool_path=spool, call_timeout=0.2, failure_threshold=1,
                 stop_timeout=1.0)
    await up1.start()
    for i in range(500):
        up1.submit("shadow", f"dev-{i % 5}", {"n": i})
    await up1.stop()
    assert up1.spool_size == 500 and up1.sent == 0
    up2 = uplink(server.url, spool_path=spool)
    await up2.start()
    assert up2.spool_size == 500
    for i in range(500, 510):
        up2.submit("shadow", f"dev-{i % 5}", {"n": i})
    await drained(up2)
    await up2.stop()
    entries = await stream_entries(r)
    assert len(entries) == 510 and len({e.seq for _, _, e in entries}) == 510
    per_dev: dict[str, list[int]] = {}
    for _s, _e, e in entries:
        per_dev.setdefault(e.key, []).append(e.body["n"])
    for ns in per_dev.values():
        assert ns == sorted(ns)
    old = max(e.seq for _, _, e in entries if e.body["n"] < 500)
    assert min(e.seq for _, _, e in entries if e.body["n"] >= 500) > old
    async with worker(server.url):
        async def done() -> bool:
            return bool((await stats(r))["applied"] >= 510)
        await until(done, what="apply")
    dev0 = ShardKeys.of("dev-0", SHARDS)
    assert await r.hget(dev0.dev("dev-0", "meta"), "version") == b"102"
    assert await r.hget(dev0.dev("dev-0", "reported"), "n") == b"505"


@pytest.mark.parametrize("policy", ["drop_oldest", "reject_new"])
async def test_spool_overflow_policy_is_applied_and_counted(tmp_path: Path,
                                                            policy: str) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    spool = str(tmp_path / "spool.db")
    up = uplink(dead_url, spool_path=spool, spool_max_entries=100, overflow=policy,
                call_timeout=0.2, failure_threshold=1, stop_timeout=0.5)
    await up.start()
    for i in range(300):
        up.submit("alert", "dev-1", {"n": i})
        if i % 50 == 0:
            await asyncio.sleep(0.01)

    async def spooled() -> bool:
        return up.spool_size + up.dropped_overflow >= 300 and up.spool_size == 100
    await until(spooled, 10, "spool to fill")
    await up.stop()
    assert up.dropped_overflow == 200 and up.spool_size == 100
    from edge_node.uplink import Spool
    from edge_node.uplink.wire import unpack_entry
    sp = Spool(spool)
    ns = [unpack_entry(d).body["n"] for _, _, d in sp.peek(1000)]
    sp.close()
    assert ns == (list(range(200, 300)) if policy == "drop_oldest" else list(range(100)))


async def test_shard_count_mismatch_is_refused_at_start(server: RedisServer,
                                                        tmp_path: Path) -> None:
    """Edges and workers must read and write the same number of uplink streams: the
    first to start records its count; a later one with another count refuses to start
    with a clear message (exit 2, no traceback)."""
    from edge_node.local.launch import spawn_edge
    from tests.helpers import SECRET

    ok = spawn_edge(redis_url=server.url, secret=SECRET, edge_id="e-sh4",
                    extra_args=["--uplink-shards", str(SHARDS)],
                    log_path=str(tmp_path / "ok.log"))
    ok.stop()
    log = tmp_path / "bad.log"
    with pytest.raises(RuntimeError, match="exited with code 2"):
        spawn_edge(redis_url=server.url, secret=SECRET, edge_id="e-sh8",
                   extra_args=["--uplink-shards", "8"], log_path=str(log), timeout=10)
    text = log.read_text()
    assert "--uplink-shards is 8 but this deployment uses 4" in text
    assert "Traceback" not in text
    wlog = tmp_path / "worker.log"
    w = spawn_worker(server.url, "w-bad", "--shards", "2", log_path=str(wlog))
    assert w.proc.wait(timeout=15) == 2
    text = wlog.read_text()
    assert "origin: error: --shards is 2 but this deployment uses 4" in text
    assert "Traceback" not in text
