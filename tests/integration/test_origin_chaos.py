"""Edge -> origin with real edge processes, a real origin worker and a Redis that goes away.

Each test starts its own Redis server (it is paused or cut off) and its own origin worker.
The edge must keep serving its clients locally while Redis is unreachable, spool what the
origin needs, and once Redis is back every accepted message must reach the origin exactly
once in effect and every publisher must get its acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from client_sdk import connect
from edge_node.local.origin_api import spawn_worker
from edge_node.local.redis_server import RedisServer, start_redis
from edge_node.redis_io import keys as K
from origin.settings import OriginSettings
from origin.view import origin_stats
from tests.faultproxy import FaultProxy
from tests.helpers import Recorder, wait_until

pytestmark = pytest.mark.timeout(90)
_P = struct.Struct(">II")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis server for these tests alone (they may pause or cut it)."""
    with start_redis() as s:  # stopped (and resumed first) on exit
        yield s


async def _origin_kind(url: str, kind: str) -> int:
    """Entries of ``kind`` the origin has applied (each idempotency id once)."""
    r = aioredis.Redis.from_url(url, socket_timeout=5.0)
    try:
        stats: dict[str, Any] = await origin_stats(r, OriginSettings(redis_url=url))
    finally:
        await r.aclose()
    return int(stats["by_kind"].get(kind, 0))


async def _history_payloads(url: str, room: str) -> list[bytes]:
    r = aioredis.Redis.from_url(url, socket_timeout=5.0)
    try:
        entries = await r.xrange(K.room_log(room))
    finally:
        await r.aclose()
    return [msgpack.unpackb(fields[b"d"])[1] for _id, fields in entries]


async def _publish_through_outage(edge_factory: Any, token: Any, tmp_path: Any,
                                  redis_url: str, outage: Any, restore: Any,
                                  n: int = 120, rate: float = 20.0) -> None:
    """Publish ``n`` reliable messages at ``rate``/s; Redis is away from message n/6 to
    5n/6 (4 s: twice the room lease).  Checks local service during the outage, then
    exactly-once at the origin."""
    start, end = n // 6, 5 * n // 6
    # In a thread: starting blocks until healthy, and a proxy may serve this loop.
    e = await asyncio.to_thread(edge_factory, "edge-oc", "--uplink-rooms", "oc:*",
                                "--uplink-spool", str(tmp_path / "spool.db"),
                                redis_url=redis_url)
    pub = await connect(e.url, token("pub"), ping_interval=0.5, ping_timeout=30.0)
    sub = await connect(e.url, token("sub"), ping_interval=0.5, ping_timeout=30.0)
    try:
        rec = Recorder()
        await sub.join("oc:1", on_message=rec)
        await pub.join("oc:1", echo=False)
        acks: list[asyncio.Future[tuple[int, int]]] = []
        during: list[int] = []
        for k in range(n):
            if k == start:
                await outage()
                t_out = time.monotonic()
            acks.append(pub.publish_nowait("oc:1", _P.pack(1, k)))
            await asyncio.sleep(1.0 / rate)
            if start <= k < end:
                during.append(len(rec.seen))
            if k == end:
                # Messages published while Redis is away reached the local subscriber.
                assert during[-1] - during[0] >= (end - start) // 2, (during[0], during[-1])
                assert time.monotonic() - t_out >= 3.0
                await restore()
        await wait_until(lambda: len(rec.seen) >= n, 30, "every message at the subscriber")
        assert rec.seen == [(1, k) for k in range(n)]
        positions = await asyncio.wait_for(asyncio.gather(*acks), 30)
        assert len(set(positions)) == n  # every publish acknowledged once, distinct positions
        deadline = time.monotonic() + 30
        while (got := await _origin_kind(redis_url, "room_event")) < n:
            assert time.monotonic() < deadline, f"origin applied {got} of {n} room events"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything extra (a double apply) would show up by now
        assert await _origin_kind(redis_url, "room_event") == n
        # The room's history (what a resuming client replays) holds each message once.
        assert await _history_payloads(redis_url, "oc:1") == [_P.pack(1, k) for k in range(n)]
    finally:
        await pub.close()
        await sub.close()


async def test_redis_paused_mid_stream_edge_serves_and_origin_gets_all_once(
        server: RedisServer, edge_factory: Any, token: Any, tmp_path: Any) -> None:
    """Redis frozen (SIGSTOP) for several seconds mid-stream, longer than the room lease."""
    worker = spawn_worker(server.url, "w1", "--shards", "4")
    try:
        async def outage() -> None:
            server.pause()

        async def restore() -> None:
            server.resume()

        await _publish_through_outage(edge_factory, token, tmp_path, server.url,
                                      outage, restore)
    finally:
        worker.stop()


async def test_edge_cut_from_redis_keeps_serving_local_rooms(
        server: RedisServer, edge_factory: Any, token: Any, tmp_path: Any) -> None:
    """Only the edge's link to Redis is cut (a fault proxy between them); the origin
    worker still reaches Redis.  The edge serves its clients, spools, and catches up."""
    proxy = await FaultProxy("127.0.0.1", server.port).start()
    worker = spawn_worker(server.url, "w1", "--shards", "4")
    try:
        async def outage() -> None:
            proxy.blackhole()

        async def restore() -> None:
            proxy.cut()  # the half-open connections are gone for good
            proxy.restore()

        await _publish_through_outage(edge_factory, token, tmp_path,
                                      f"redis://127.0.0.1:{proxy.port}/0", outage, restore)
        # The origin, which never lost Redis, saw every entry exactly once in effect.
        with contextlib.suppress(Exception):
            await proxy.stop()
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await proxy.stop()


async def test_cut_edge_loses_its_room_to_a_neighbour_nothing_lost_or_doubled(
        redis_url: str, edge_factory: Any, token: Any) -> None:
    """Split brain: the owner edge is cut from Redis (not from its clients) longer than
    its lease; a neighbour takes the room over.  When the link returns the old owner is
    fenced; what it served meanwhile but could not store is re-published through the new
    owner: every message ends up in the history once and every member sees it once."""
    proxy = await FaultProxy("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0])
                             ).start()
    room = f"sb:{time.monotonic_ns()}"
    try:
        ea = await asyncio.to_thread(edge_factory, "edge-sa", "--lease-ms", "1000",
                                     redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        eb = await asyncio.to_thread(edge_factory, "edge-sb", "--lease-ms", "1000")
        kw: dict[str, Any] = {"ping_interval": 0.5, "ping_timeout": 30.0}
        pa = await connect(ea.url, token("pa"), **kw)
        sa = await connect(ea.url, token("sa"), **kw)
        sb = await connect(eb.url, token("sb"), **kw)
        pb = await connect(eb.url, token("pb"), **kw)
        try:
            ra, rb = Recorder(), Recorder()
            await pa.join(room, echo=False)
            await sa.join(room, on_message=ra)
            await sb.join(room, on_message=rb)
            await pb.join(room, echo=False)
            acks = [pa.publish_nowait(room, _P.pack(1, k)) for k in range(10)]
            await asyncio.wait_for(asyncio.gather(*acks), 10)
            proxy.blackhole()
            for k in range(10, 30):  # served locally on edge-sa only
                acks.append(pa.publish_nowait(room, _P.pack(1, k)))
                await asyncio.sleep(0.05)
            await wait_until(lambda: len(ra.seen) >= 30, 10, "local delivery during the cut")
            await asyncio.sleep(2.0)  # edge-sa's lease lapses; edge-sb takes the room
            for k in range(5):
                await asyncio.wait_for(pb.publish(room, _P.pack(2, k)), 10)
            proxy.cut()
            proxy.restore()
            positions = await asyncio.wait_for(asyncio.gather(*acks), 30)
            assert len(set(positions)) == 30
            want_a = [(1, k) for k in range(30)]
            want_b = [(2, k) for k in range(5)]
            for rec in (ra, rb):
                await wait_until(lambda rec=rec: len(rec.seen) >= 35, 20,
                                 f"every message at {'sa' if rec is ra else 'sb'}")
                await asyncio.sleep(0.5)
                assert sorted(rec.seen) == sorted(want_a + want_b)  # each once
                assert [m for m in rec.seen if m[0] == 1] == want_a  # in order per sender
            history = await _history_payloads(redis_url, room)
            assert sorted(history) == sorted(_P.pack(*m) for m in want_a + want_b)
        finally:
            for c in (pa, sa, sb, pb):
                await c.close()
    finally:
        await proxy.stop()


async def test_edge_restarted_with_a_non_empty_spool_drains_it(
        server: RedisServer, edge_factory: Any, token: Any, tmp_path: Any) -> None:
    """Sessions come and go while the edge cannot reach Redis: their entries wait in
    the on-disk spool.  The edge is stopped, then restarted on the same spool with Redis
    reachable again: the origin gets every entry exactly once."""
    proxy = await FaultProxy("127.0.0.1", server.port).start()
    worker = spawn_worker(server.url, "w1", "--shards", "4")
    spool = str(tmp_path / "spool.db")
    args = ("edge-rs", "--uplink-spool", spool)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    try:
        e = await asyncio.to_thread(edge_factory, *args, redis_url=url)
        proxy.blackhole()
        n = 6
        for i in range(n):  # each one: an "online" and an "offline" entry
            c = await connect(e.url, token(f"rs{i}"), reconnect=False)
            await c.close()

        async def spooled() -> float:
            from tests.helpers import http_get
            _, _, body = await http_get(e.http_url + "/metrics")
            return sum(float(x.rsplit(" ", 1)[1]) for x in body.decode().splitlines()
                       if x.startswith("edge_uplink_spool_size"))

        deadline = time.monotonic() + 20
        while await spooled() < 2 * n:
            assert time.monotonic() < deadline, "session entries did not reach the spool"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(e.stop)
        assert await _origin_kind(server.url, "session") == 0
        proxy.cut()
        proxy.restore()
        await asyncio.to_thread(edge_factory, *args, redis_url=url)
        deadline = time.monotonic() + 30
        while (got := await _origin_kind(server.url, "session")) < 2 * n:
            assert time.monotonic() < deadline, f"origin applied {got} of {2 * n}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        assert await _origin_kind(server.url, "session") == 2 * n
    finally:
        worker.stop()
        await proxy.stop()
