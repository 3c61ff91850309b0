"""The apply script's own operations against a real Redis server: last-writer-wins in
any order, rollups (``ROLL``) equal to field-by-field arithmetic, lag measured when the
script runs, and one pipeline for several shards.

Entries are applied straight through :class:`origin.apply.Applier` (no uplink, no worker
process) so each test states exactly which entries reach the script in which order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from edge_node.local.redis_server import RedisServer, start_redis
from edge_node.uplink.wire import pack_batch, pack_entry, shard_of
from origin.apply import Applier
from origin.effects import EffectSettings, bucket_ms, lag_bucket
from origin.keys import GROUP, ShardKeys
from origin.settings import OriginSettings
from origin.view import device_view, lag_quantiles, origin_stats
from origin.worker import Worker

pytestmark = pytest.mark.timeout(60)
SHARDS = 4


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis server of this module's tests alone (origin counters are global)."""
    with start_redis() as s:
        yield s


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    for i in range(SHARDS):
        with contextlib.suppress(ResponseError):
            await c.xgroup_create(ShardKeys(i).stream, GROUP, id="0", mkstream=True)
    yield c
    await c.aclose()


@pytest.fixture
async def ap(r: aioredis.Redis) -> Applier:
    a = Applier(EffectSettings())
    await a.load(r)
    return a


class Seq:
    """Idempotency ids for the entries of one test."""

    def __init__(self) -> None:
        self.n = 0

    def entry(self, kind: str, key: str, ts_ms: int, body: Any) -> bytes:
        self.n += 1
        return pack_entry(self.n, kind, key, ts_ms, body)


async def run(r: aioredis.Redis, ap: Applier, key: str, *entries: bytes) -> list[int]:
    """Apply ``entries`` (all for ``key``'s shard) as one stream entry; [applied, dups, dead]."""
    shard = shard_of(key, SHARDS)
    fields = {k.encode(): v for k, v in pack_batch("e1", list(entries)).items()}
    p = ap.prepare(shard, "1-1", fields)
    res: Any = await r.evalsha(ap.sha, len(p.keys), *p.keys, *p.args)
    return [int(x) for x in res]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_last_writer_wins_per_field_whatever_the_apply_order(
        r: aioredis.Redis, ap: Applier) -> None:
    s, dev = Seq(), "dev-lww"
    k = ShardKeys.of(dev, SHARDS)
    # Applied newest first, then older ones: only fields the older entry has newer
    # values for may change.
    assert await run(r, ap, dev, s.entry("shadow", dev, 300, {"b": 3, "c": 3})) == [1, 0, 0]
    assert await run(r, ap, dev, s.entry("shadow", dev, 100, {"a": 1, "b": 1}),
                     s.entry("shadow", dev, 200, {"a": 2, "b": 2, "d": 2})) == [2, 0, 0]
    rep = await r.hgetall(k.dev(dev, "reported"))
    assert rep == {b"a": b"2", b"b": b"3", b"c": b"3", b"d": b"2"}
    ts = await r.hgetall(k.dev(dev, "reported_ts"))
    assert ts == {b"a": b"200", b"b": b"300", b"c": b"300", b"d": b"200"}
    # An equal timestamp wins (the later apply), as field by field did.
    await run(r, ap, dev, s.entry("shadow", dev, 300, {"c": "same-ts"}))
    assert await r.hget(k.dev(dev, "reported"), "c") == b'"same-ts"'
    # Everything older than what is stored: nothing written.
    await run(r, ap, dev, s.entry("shadow", dev, 50, {"a": 0, "b": 0}))
    assert await r.hmget(k.dev(dev, "reported"), ["a", "b"]) == [b"2", b"3"]


async def test_rollup_equals_count_sum_min_max_of_the_samples(
        r: aioredis.Redis, ap: Applier) -> None:
    s, dev = Seq(), "dev-roll"
    k = ShardKeys.of(dev, SHARDS)
    t0 = 1_700_000_040_000  # one minute: t0 // 60000
    values = [(21.5, 3), (-4.25, 7), (30.0, -2), (0.1, 0), (0.2, 5)]
    entries = [s.entry("telemetry", dev, t0 + i, {"temp": v, "n": n, "bad": "x"})
               for i, (v, n) in enumerate(values)]
    assert await run(r, ap, dev, *entries[:2]) == [2, 0, 0]
    assert await run(r, ap, dev, *entries) == [3, 2, 0]  # two were applied already
    h = await r.hgetall(k.dev(dev, f"roll:{t0 // 60000}"))
    got = {f.decode(): float(v) for f, v in h.items()}
    temps = [v for v, _ in values]
    ns = [float(n) for _, n in values]
    assert got == {"temp:count": 5.0, "temp:sum": pytest.approx(sum(temps)),
                   "temp:min": min(temps), "temp:max": max(temps),
                   "n:count": 5.0, "n:sum": sum(ns), "n:min": min(ns), "n:max": max(ns)}
    assert "bad:count" not in got  # not a number: not rolled up
    assert await r.pttl(k.dev(dev, f"roll:{t0 // 60000}")) > 0
    # The newest sample is the device's latest value (LWW by edge timestamp).
    assert await r.hgetall(k.dev(dev, "last")) == {b"temp": b"0.2", b"n": b"5"}


async def test_rollup_pieces_add_to_the_same_minute_once(r: aioredis.Redis,
                                                         ap: Applier) -> None:
    s, dev = Seq(), "dev-piece"
    k = ShardKeys.of(dev, SHARDS)
    w = 1_700_000_100_000
    body = {"w": w, "len": 1000, "n": 10,
            "p": [[1, {"temp": [4, 80.0, 19.0, 21.0]}], [2, {"temp": [6, 126.0, 20.0, 22.5]}]]}
    await run(r, ap, dev, s.entry("telemetry", dev, w, {"temp": 25.0}))
    await run(r, ap, dev, s.entry("rollup", dev, w + 1000, body))
    # The same pieces again from another edge/batch: counted once (ONCE).
    await run(r, ap, dev, s.entry("rollup", dev, w + 1000, body))
    h = await r.hgetall(k.dev(dev, f"roll:{w // 60000}"))
    assert {f.decode(): float(v) for f, v in h.items()} == {
        "temp:count": 11.0, "temp:sum": 231.0, "temp:min": 19.0, "temp:max": 25.0}
    st = await origin_stats(r, OriginSettings(shards=SHARDS))
    assert st["iot"]["samples"] == 10 and st["iot"]["pieces_duplicate"] == 2


async def test_lag_is_counted_when_the_script_runs(r: aioredis.Redis, ap: Applier) -> None:
    s, dev = Seq(), "dev-lag"
    old = now_ms() - 5_000
    await run(r, ap, dev, *(s.entry("telemetry", dev, old, {"v": 1}) for _ in range(10)))
    await run(r, ap, dev, s.entry("telemetry", dev, now_ms() + 60_000, {"v": 1}))
    st = await origin_stats(r, OriginSettings(shards=SHARDS))
    buckets = st["lag_buckets"]
    assert buckets.get(0) == 1  # a timestamp from the future counts as no lag
    late = {b: n for b, n in buckets.items() if b}
    assert sum(late.values()) == 10
    (b,) = late
    # At least the 5 s the entries were old when submitted, at most a few seconds more.
    assert lag_bucket(5_000) <= b <= lag_bucket(15_000)
    assert lag_quantiles(late)["p99.9"] == round(bucket_ms(b), 3)


async def test_one_pipeline_applies_several_shards_in_order(server: RedisServer,
                                                            r: aioredis.Redis) -> None:
    w = Worker(OriginSettings(redis_url=server.url, shards=SHARDS), "w-apply")
    try:
        await w.setup()
        s = Seq()
        parts = []
        for shard in range(SHARDS):
            dev = next(f"d{i}" for i in range(1000) if shard_of(f"d{i}", SHARDS) == shard)
            for b in range(3):
                data = [s.entry("shadow", dev, 1000 * b + j, {"x": 1000 * b + j})
                        for j in range(5)]
                await r.xadd(ShardKeys(shard).stream,
                             {k.encode(): v for k, v in pack_batch("e1", data).items()})
            parts.append((shard, dev))
        reply: Any = await r.xreadgroup(GROUP, "w-apply", {ShardKeys(i).stream: ">"
                                                           for i in range(SHARDS)})
        assert sum(len(es) for _, es in reply) == 3 * SHARDS
        await w.apply_many([(w.streams[st.decode()], es) for st, es in reply])
        assert (w.applied, w.duplicates, w.dead, w.batches) == (15 * SHARDS, 0, 0, 3 * SHARDS)
        for shard, dev in parts:
            k = ShardKeys(shard)
            assert await r.hget(k.dev(dev, "reported"), "x") == b"2004"  # the newest
            pending: Any = await r.xpending(k.stream, GROUP)
            assert pending["pending"] == 0  # every stream entry acknowledged
    finally:
        await w.r.aclose()
        await w.rb.aclose()


async def test_a_device_view_is_one_moment_of_the_shadow(server: RedisServer,
                                                          ap: Applier) -> None:
    """Reports applied on one connection while the view is read on another: every view
    shows the reported fields of the version it shows (the view once read ``reported``
    before a report was applied and ``version`` after it, and the iot test polling for
    version 5 saw the fields of version 4)."""
    writer = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    reader = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    s, dev, views = Seq(), "dev-moment", 0  # a hundred views while reports apply
    mismatched: list[tuple[int, Any]] = []
    done = False

    async def write() -> None:
        v = 0
        while not done and v < 20_000:
            v += 1
            await run(writer, ap, dev, s.entry("shadow", dev, now_ms(), {"fw": v, "_v": v}))

    async def read() -> None:
        nonlocal views, done
        settings = OriginSettings(shards=SHARDS)
        while views < 100:
            view = await device_view(reader, settings, dev)
            if view is not None:
                views += 1
                if view["reported"].get("fw") != view["version"]:
                    mismatched.append((view["version"], view["reported"]))
        done = True
    try:
        await asyncio.wait_for(asyncio.gather(write(), read()), 30.0)
    finally:
        await writer.aclose()
        await reader.aclose()
    assert mismatched == []
