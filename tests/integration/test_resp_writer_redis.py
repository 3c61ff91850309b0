"""RoomSync's append path over the lean writer (:mod:`edge_node.redis_io.resp_writer`)
against a private embedded Redis: durable ACKs in order with no loss or
duplicate while connections are killed from the server side, appends that
survive a flushed script cache, and fencing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_node.local.redis_server import RedisServer
from edge_node.redis_io import keys as K
from edge_node.store.history import Entry
from edge_node.store.redis_sync import Lease, RoomSync
from tests.helpers import uid


class _Stats:
    def __getattr__(self, name: str) -> int:
        return 0


class _Listener:
    def __init__(self) -> None:
        self.durable: list[tuple[str, int, int]] = []
        self.lost: list[str] = []

    def on_durable(self, room: str, epoch: int, seq: int) -> None:
        self.durable.append((room, epoch, seq))

    def on_lease_lost(self, room: str) -> None:
        self.lost.append(room)

    def on_remote_message(self, room: str, e: Entry) -> None: ...
    def on_forwarded_publish(self, *a: Any) -> None: ...
    def on_remote_ack(self, *a: Any) -> None: ...
    def on_live(self, *a: Any) -> None: ...
    def on_lease_acquired(self, room: str, lease: Lease) -> None: ...
    def on_owner_changed(self, room: str, owner_edge: str) -> None: ...




@pytest.fixture
async def sync(server: RedisServer) -> AsyncIterator[tuple[RoomSync, _Listener]]:
    lis = _Listener()
    s = RoomSync(server.url, uid("edge"), lis, lease_ms=2000, stream_maxlen=100_000,
                 append_batch=50, stats=_Stats())
    await s.start()
    assert s.appends.writer is not None  # the lean writer carries the appends
    yield s, lis
    await s.stop()


async def _until(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _ids(admin: aioredis.Redis, room: str) -> list[tuple[int, int]]:
    out = []
    entries: Any = await admin.xrange(K.room_log(room))
    for eid, _ in entries:
        e, s = eid.decode().split("-")
        out.append((int(e), int(s)))
    return out


def _check_acks(lis: _Listener, room: str, epoch: int, n: int) -> None:
    acks = [(e, s) for r, e, s in lis.durable if r == room]
    assert acks == sorted(acks), "durable ACKs out of order"
    assert acks[-1] == (epoch, n)


async def test_appends_survive_killed_connections(sync: tuple[RoomSync, _Listener],
                                                  admin: aioredis.Redis) -> None:
    s, lis = sync
    room = uid("rwk")
    lease = await s.activate(room)
    assert lease.mine
    n = 0
    for round_ in range(6):
        for _ in range(40):
            n += 1
            s.append(room, lease.epoch, n, b"m%d" % n)
            if n % 7 == 0:
                await asyncio.sleep(0)  # let some flushes go out one by one
        if round_ % 2 == 0:
            await admin.client_kill_filter(_type="normal")  # every client but this one
        await asyncio.sleep(0.01)
    await _until(lambda: s.last_queued(room) is None, what="all appends durable")
    _check_acks(lis, room, lease.epoch, n)
    assert await _ids(admin, room) == [(lease.epoch, i) for i in range(1, n + 1)]
    assert s.appends.writer is not None and s.appends.writer.connects >= 2
    assert lis.lost == []


async def test_appends_after_script_flush(sync: tuple[RoomSync, _Listener],
                                          admin: aioredis.Redis) -> None:
    s, lis = sync
    room = uid("rws")
    lease = await s.activate(room)
    for i in range(1, 11):
        s.append(room, lease.epoch, i, b"a")
    await s.flush()
    await admin.script_flush()  # e.g. an operator, or a failover to a fresh replica
    for i in range(11, 21):
        s.append(room, lease.epoch, i, b"b")
    await s.flush()
    _check_acks(lis, room, lease.epoch, 20)
    assert await _ids(admin, room) == [(lease.epoch, i) for i in range(1, 21)]
    assert s.stats.stream_errors == 0


async def test_fenced_append_loses_the_lease(sync: tuple[RoomSync, _Listener],
                                             admin: aioredis.Redis) -> None:
    s, lis = sync
    room = uid("rwf")
    lease = await s.activate(room)
    s.append(room, lease.epoch, 1, b"ok")
    await s.flush()
    await admin.set(K.room_owner(room), "other-edge:99", px=5000)  # the lease moved on
    s.append(room, lease.epoch, 2, b"stale")
    await s.flush()
    assert lis.lost == [room] and not s.owns(room)
    assert await _ids(admin, room) == [(lease.epoch, 1)]
    assert [(e, q) for r, e, q in lis.durable if r == room] == [(lease.epoch, 1)]


async def test_connection_lost_mid_append_is_retried(sync: tuple[RoomSync, _Listener],
                                                     admin: aioredis.Redis) -> None:
    """An append in flight when the connection dies raises SyncUnavailable inside the
    append loop, which backs off and re-sends it: no loss, no duplicate, ACKs in order."""
    s, lis = sync
    room = uid("rwm")
    lease = await s.activate(room)
    s.append(room, lease.epoch, 1, b"first")
    await s.flush()
    await admin.client_pause(300, all=False)  # holds the EVALSHA (a write) in Redis
    for i in range(2, 12):
        s.append(room, lease.epoch, i, b"x")
    await asyncio.sleep(0.05)
    assert s.last_queued(room) == (lease.epoch, 11)  # still waiting for Redis
    await admin.client_kill_filter(_type="normal")
    await _until(lambda: s.last_queued(room) is None, what="the retried append")
    assert s.stats.stream_errors >= 1
    _check_acks(lis, room, lease.epoch, 11)
    assert await _ids(admin, room) == [(lease.epoch, i) for i in range(1, 12)]


async def test_refused_append_is_retried_without_spinning(sync: tuple[RoomSync, _Listener],
                                                          admin: aioredis.Redis) -> None:
    """A batch Redis refuses (OOM, a wrong key type) stays queued and is re-sent after a
    pause, not in a tight loop; it becomes durable once Redis accepts it."""
    s, lis = sync
    room = uid("rwr")
    lease = await s.activate(room)
    await admin.set(K.room_log(room), "not a stream")
    s.append(room, lease.epoch, 1, b"x")
    await asyncio.sleep(0.5)
    assert s.last_queued(room) == (lease.epoch, 1)
    assert 1 <= s.stats.stream_errors <= 15  # ~one attempt per 50 ms, not thousands
    await admin.delete(K.room_log(room))
    await _until(lambda: s.last_queued(room) is None, what="the append once accepted")
    _check_acks(lis, room, lease.epoch, 1)
    assert await _ids(admin, room) == [(lease.epoch, 1)]
