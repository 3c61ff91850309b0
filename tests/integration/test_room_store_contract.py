"""One contract suite for every room store: the in-memory one (always) and the Redis one
(:class:`~edge_node.store.redis_sync.RoomSync` against a real server), in the manner of
centrifuge's shared broker tests.

Each test drives stores directly (no edge process, no hub) through a recording
listener, and states what every implementation must do: leases and epochs, durable
appends in order, mirrors reading them, forwarding, history, handover, fencing,
takeover of a dead owner, ephemeral traffic and presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_node.local.redis_server import RedisServer
from edge_node.redis_io import keys as K
from edge_node.rooms.events import Record
from edge_node.runtime.metrics import EdgeStats
from edge_node.store.base import RoomStore
from edge_node.store.memory import MemoryBackend, MemoryRoomStore
from edge_node.store.records import Forwarded, pack_record
from edge_node.store.redis_sync import RoomSync
from edge_node.store.types import Lease
from tests.helpers import eventually, uid, wait_until

LEASE_MS = 1000


class Listener:
    """Records every upcall a store makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def of(self, kind: str, room: str | None = None) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind and (room is None or c[1] == room)]

    def on_remote_message(self, room: str, e: Record) -> None:
        self.calls.append(("message", room, e))

    def on_forwarded_publish(self, room: str, sender: str, payload: bytes, origin_edge: str,
                             req_id: int, idem: int) -> None:
        self.calls.append(("forwarded", room, sender, payload, origin_edge, req_id, idem))

    def on_remote_ack(self, sender: str, req_id: int, epoch: int, seq: int) -> None:
        self.calls.append(("ack", sender, req_id, epoch, seq))

    def on_durable(self, room: str, epoch: int, seq: int) -> None:
        self.calls.append(("durable", room, (epoch, seq)))

    def on_live(self, room: str, kind: int, body: list[Any]) -> None:
        self.calls.append(("live", room, kind, list(body)))

    def on_lease_lost(self, room: str) -> None:
        self.calls.append(("lost", room))

    def on_lease_acquired(self, room: str, lease: Lease) -> None:
        self.calls.append(("acquired", room, lease))

    def on_owner_changed(self, room: str, owner_edge: str) -> None:
        self.calls.append(("owner", room, owner_edge))


@dataclass
class Harness:
    """How to make, kill and fence stores of one implementation."""

    kind: str
    make: Callable[[str], Awaitable[tuple[RoomStore, Listener]]]
    kill: Callable[[RoomStore], Awaitable[None]]
    lapse: Callable[[str], Awaitable[None]]
    stores: list[RoomStore] = field(default_factory=list)


async def _kill_sync(sync: RoomSync, admin: aioredis.Redis) -> None:
    """Die without a word: tasks stop, nothing is flushed or released."""
    for t in sync._tasks:
        t.cancel()
    await asyncio.gather(*sync._tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await sync.pubsub.aclose()
    await sync.appends.close()
    await sync.r.aclose()
    await sync.blocking.aclose()
    await admin.zrem(K.EDGES, sync.edge_id)


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        backend = MemoryBackend()

        async def make_mem(edge_id: str) -> tuple[RoomStore, Listener]:
            lis = Listener()
            store = MemoryRoomStore(backend, edge_id, lis, stats=EdgeStats())
            await store.start()
            return store, lis

        async def kill_mem(store: RoomStore) -> None:
            backend.kill(store.edge_id)

        async def lapse_mem(room: str) -> None:
            backend.lapse(room)

        h = Harness("memory", make_mem, kill_mem, lapse_mem)
        yield h
        for s in h.stores:
            await s.stop()
        return
    server: RedisServer = request.getfixturevalue("server")
    admin = aioredis.Redis.from_url(server.url)
    dead: set[str] = set()

    async def make_redis(edge_id: str) -> tuple[RoomStore, Listener]:
        lis = Listener()
        sync = RoomSync(server.url, edge_id, lis, lease_ms=LEASE_MS, stream_maxlen=10_000,
                        append_batch=100, stats=EdgeStats(), tail_poll=0.1)
        await sync.start()
        await admin.zadd(K.EDGES, {edge_id: time.time() + 3600})  # a live edge
        return sync, lis

    async def kill_redis(store: RoomStore) -> None:
        assert isinstance(store, RoomSync)
        dead.add(store.edge_id)
        await _kill_sync(store, admin)

    async def lapse_redis(room: str) -> None:
        await admin.delete(K.room_owner(room))

    h = Harness("redis", make_redis, kill_redis, lapse_redis)
    try:
        yield h
    finally:
        for s in h.stores:
            if s.edge_id not in dead:
                await s.stop()
        await admin.aclose()


async def _stores(h: Harness, *ids: str) -> list[tuple[RoomStore, Listener]]:
    out = []
    for edge_id in ids:
        store, lis = await h.make(edge_id)
        h.stores.append(store)
        out.append((store, lis))
    return out


def _rec(i: int, sender: str = "s", origin: str = "edge-a") -> bytes:
    return pack_record(sender, b"m%d" % i, origin, i, 1000 + i)


async def test_first_activation_owns_at_a_new_epoch_and_others_mirror(harness: Harness) -> None:
    (a, _la), (b, _lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    la = await a.activate(room)
    assert (la.mine, la.epoch, la.owner_edge, la.last_epoch, la.last_seq) == (
        True, 1, a.edge_id, 0, 0)
    assert a.owns(room)
    lb = await b.activate(room)
    assert (lb.mine, lb.epoch, lb.owner_edge) == (False, 1, a.edge_id)
    assert not b.owns(room)
    again = await a.activate(room)  # the owner asking again keeps its lease
    assert (again.mine, again.epoch) == (True, 1)


async def test_appends_become_durable_in_order_and_mirrors_read_them(harness: Harness) -> None:
    (a, la), (b, lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    for i in range(1, 6):
        a.append(room, 1, i, _rec(i, origin=a.edge_id))
    assert a.last_queued(room) in ((1, 5), None)
    await wait_until(lambda: ("durable", room, (1, 5)) in la.calls, 10, "durable up to 5")
    durable = [c[2] for c in la.of("durable", room)]
    assert durable == sorted(durable) and durable[-1] == (1, 5)
    await wait_until(lambda: len(lb.of("message", room)) == 5, 10, "the mirror reading 5")
    got = [c[2] for c in lb.of("message", room)]
    assert [(r.epoch, r.seq, r.payload, r.idem) for r in got] == [
        (1, i, b"m%d" % i, 1000 + i) for i in range(1, 6)]
    assert a.last_queued(room) is None


async def test_forwards_reach_the_owner_and_forward_acks_the_sender(harness: Harness) -> None:
    (a, la), (b, lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    b.forward(a.edge_id, Forwarded(room, "s", b"hello", b.edge_id, 7, 77))
    await wait_until(lambda: bool(la.of("forwarded", room)), 10, "the forwarded publish")
    assert la.of("forwarded", room) == [("forwarded", room, "s", b"hello", b.edge_id, 7, 77)]
    a.forward_ack(b.edge_id, "s", 7, 1, 3)
    await wait_until(lambda: bool(lb.of("ack")), 10, "the forward ack")
    assert lb.of("ack") == [("ack", "s", 7, 1, 3)]


async def test_history_after_and_recent_return_stored_records(harness: Harness) -> None:
    ((a, la),) = await _stores(harness, uid("edge-a"))
    room = uid("room")
    await a.activate(room)
    for i in range(1, 11):
        a.append(room, 1, i, _rec(i))
    await a.flush()
    await wait_until(lambda: ("durable", room, (1, 10)) in la.calls, 10, "durable")
    records, gap, first = await a.history_after(room, 1, 6, 100)
    assert not gap and first == (1, 1)
    assert [(r.epoch, r.seq, r.sender, r.payload) for r in records] == [
        (1, i, "s", b"m%d" % i) for i in range(7, 11)]
    limited, _, _ = await a.history_after(room, 1, 0, 3)
    assert [r.seq for r in limited] == [1, 2, 3]
    assert [r.seq for r in await a.recent(room, 4)] == [7, 8, 9, 10]
    assert await a.history_after(uid("never"), 0, 0, 10) == ([], False, None)
    assert await a.recent(uid("never"), 10) == []


async def test_a_released_room_gets_a_new_epoch_on_the_next_edge(harness: Harness) -> None:
    (a, _la), (b, _lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.activate(room)
    a.append(room, 1, 1, _rec(1))
    await a.deactivate(room)  # stores the queued record first
    assert not a.owns(room)
    lease = await b.activate(room)
    assert (lease.mine, lease.epoch, lease.last_epoch, lease.last_seq) == (True, 2, 1, 1)


async def test_hand_over_moves_the_lease_with_the_same_epoch(harness: Harness) -> None:
    (a, la), (b, lb), (c, lc) = await _stores(harness, uid("edge-a"), uid("edge-b"),
                                              uid("edge-c"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    await c.activate(room)
    for i in (1, 2):
        a.append(room, 1, i, _rec(i))
    assert await a.hand_over(room, b.edge_id, (1, 2))
    assert not a.owns(room)
    await wait_until(lambda: bool(lb.of("acquired", room)), 10, "the new owner adopting")
    lease = lb.of("acquired", room)[0][2]
    assert (lease.mine, lease.epoch, lease.owner_edge) == (True, 1, b.edge_id)
    assert (lease.last_epoch, lease.last_seq) == (1, 2)
    assert b.owns(room)
    await wait_until(lambda: ("owner", room, b.edge_id) in lc.calls, 10, "mirrors told")
    # Positions continue under the new owner; the old one now reads them.
    b.append(room, 1, 3, _rec(3, origin=b.edge_id))
    await wait_until(lambda: ("durable", room, (1, 3)) in lb.calls, 10, "durable at b")
    await wait_until(lambda: any(m[2].seq == 3 for m in la.of("message", room)), 10,
                     "the old owner reading the new owner's record")


async def test_a_fenced_owner_is_told_once_and_its_records_are_not_stored(
        harness: Harness) -> None:
    (a, la), (c, _lc) = await _stores(harness, uid("edge-a"), uid("edge-c"))
    room = uid("room")
    await a.activate(room)
    a.append(room, 1, 1, _rec(1))
    await wait_until(lambda: ("durable", room, (1, 1)) in la.calls, 10, "durable")
    await harness.lapse(room)  # a's lease expired (frozen, partitioned) ...
    lease = await c.activate(room)  # ... and another edge took the room
    assert (lease.mine, lease.epoch) == (True, 2)
    a.append(room, 1, 2, _rec(2))
    await wait_until(lambda: bool(la.of("lost", room)), 10, "the lease loss")
    await asyncio.sleep(0.5)  # the lease loop and the append loop may both notice
    assert la.of("lost", room) == [("lost", room)], "told exactly once"
    assert not a.owns(room)
    assert ("durable", room, (1, 2)) not in la.calls
    records, _, _ = await c.history_after(room, 0, 0, 10)
    assert [(r.epoch, r.seq) for r in records] == [(1, 1)]


async def test_a_dead_owners_room_is_taken_over_by_its_mirror(harness: Harness) -> None:
    (a, _la), (b, lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    a.append(room, 1, 1, _rec(1))
    await a.flush()
    await harness.kill(a)
    harness.stores.remove(a)
    await wait_until(lambda: bool(lb.of("acquired", room)), 10, "the takeover")
    lease = lb.of("acquired", room)[0][2]
    assert (lease.mine, lease.epoch, lease.owner_edge) == (True, 2, b.edge_id)
    assert (lease.last_epoch, lease.last_seq) == (1, 1), "read to the end before owning"
    assert [c[2].seq for c in lb.of("message", room)] == [1]
    assert b.owns(room)


async def test_suspecting_a_dead_owner_takes_its_rooms(harness: Harness) -> None:
    (a, _la), (b, lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    await harness.kill(a)
    harness.stores.remove(a)
    b.suspect(a.edge_id)
    await wait_until(lambda: bool(lb.of("acquired", room)), 10, "the takeover")
    assert b.owns(room)


async def test_live_events_reach_the_other_edges_with_the_room(harness: Harness) -> None:
    (a, la), (b, lb), (_c, lc) = await _stores(harness, uid("edge-a"), uid("edge-b"),
                                              uid("edge-c"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    await asyncio.sleep(0.2)  # subscriptions settle
    a.publish_live(room, 3, ["s", b"pos"])
    await wait_until(lambda: bool(lb.of("live", room)), 10, "the live event")
    assert lb.of("live", room) == [("live", room, 3, ["s", b"pos"])]
    await asyncio.sleep(0.2)
    assert not la.of("live", room), "not echoed to the sender"
    assert not lc.of("live", room), "not sent to an edge without the room"


async def test_members_are_listed_from_every_live_edge(harness: Harness) -> None:
    (a, _la), (b, _lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.add_member(room, "s1", ["s1", "alice", "player"])
    await b.add_member(room, "s2", ["s2", "bob", "player"])
    assert sorted(await a.members(room)) == [["s1", "alice", "player", a.edge_id],
                                             ["s2", "bob", "player", b.edge_id]]
    await b.remove_member(room, "s2")
    assert await a.members(room) == [["s1", "alice", "player", a.edge_id]]
    await b.add_member(room, "s3", ["s3", "carol", "player"])
    await harness.kill(b)
    harness.stores.remove(b)
    assert await a.members(room) == [["s1", "alice", "player", a.edge_id]], \
        "members of a dead edge are not listed"


async def test_game_listings_are_shared_by_every_edge(harness: Harness) -> None:
    (a, _la), (b, _lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room, other = uid("arena"), uid("arena")
    a.put_listing(room, b'{"players":2,"at":1}')
    b.put_listing(other, b'{"players":1,"at":1}')
    async def both() -> bool:
        got = await b.listings()
        return got.get(room) == b'{"players":2,"at":1}' and other in got
    await eventually(both, 10, "both listings")
    a.put_listing(room, None)  # withdrawn: the room ended

    async def gone() -> bool:
        return room not in await b.listings()
    await eventually(gone, 10, "the withdrawn listing")


async def test_live_events_arrive_in_the_order_they_were_sent(harness: Harness) -> None:
    """A game room's join verdict and the player's first state travel as two live events
    one after the other: the second must never overtake the first."""
    (a, _la), (b, lb) = await _stores(harness, uid("edge-a"), uid("edge-b"))
    room = uid("room")
    await a.activate(room)
    await b.activate(room)
    await asyncio.sleep(0.2)  # subscriptions settle
    for i in range(300):
        a.publish_live(room, 6, ["p", "", b"%d" % i])
    await wait_until(lambda: len(lb.of("live", room)) == 300, 10, "every live event")
    assert [c[3][2] for c in lb.of("live", room)] == [b"%d" % i for i in range(300)]


async def _durable_upto(store: RoomStore, lis: Listener, room: str, epoch: int,
                        n: int, start: int = 1) -> None:
    """Append records ``start..n`` of ``epoch`` and wait until the store holds them."""
    for i in range(start, n + 1):
        store.append(room, epoch, i, _rec(i))
    await store.flush()
    await wait_until(lambda: ("durable", room, (epoch, n)) in lis.calls, 10, "durable")


_SNAP = b"\x00\x01snap\x00" + bytes(range(256)) * 400  # ~100 KiB, zero bytes inside


async def test_a_snapshot_is_stored_only_once_the_stream_holds_its_position(
        harness: Harness) -> None:
    ((a, la),) = await _stores(harness, uid("edge-a"))
    room = uid("room")
    e = (await a.activate(room)).epoch
    assert await a.get_snapshot(room) is None
    assert not await a.put_snapshot(room, (e, 1), _SNAP, 60_000), "empty stream"
    await _durable_upto(a, la, room, e, 3)
    assert not await a.put_snapshot(room, (e, 4), _SNAP, 60_000), "(e, 4) not appended yet"
    assert await a.get_snapshot(room) is None
    assert await a.put_snapshot(room, (e, 3), _SNAP, 60_000)
    assert await a.get_snapshot(room) == ((e, 3), _SNAP)
    assert await a.put_snapshot(room, (e, 3), b"", 60_000), "an empty one, same position"
    assert await a.get_snapshot(room) == ((e, 3), b"")
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB
    assert await a.put_snapshot(room, (e, 3), big, 60_000)
    assert await a.get_snapshot(room) == ((e, 3), big)


async def test_only_the_lease_holder_stores_a_snapshot(harness: Harness) -> None:
    (a, la), (b, _lb), (c, _lc) = await _stores(harness, uid("edge-a"), uid("edge-b"),
                                                uid("edge-c"))
    room = uid("room")
    e = (await a.activate(room)).epoch
    await b.activate(room)  # a mirror: no lease
    await _durable_upto(a, la, room, e, 2)
    assert await a.put_snapshot(room, (e, 2), _SNAP, 60_000)
    assert not await b.put_snapshot(room, (e, 2), b"b's", 60_000)
    assert not await b.put_snapshot(room, (e, 1), b"b's", 60_000)
    assert await b.get_snapshot(room) == ((e, 2), _SNAP)
    await harness.lapse(room)  # a's lease expired and c took the room: a is fenced,
    lease = await c.activate(room)  # whether or not it has noticed yet
    assert lease.mine and lease.epoch == e + 1
    assert not await a.put_snapshot(room, (e, 2), b"a's stale", 60_000)
    assert await c.get_snapshot(room) == ((e, 2), _SNAP)
    assert await c.put_snapshot(room, (e, 2), b"c's", 60_000)
    assert await a.get_snapshot(room) == ((e, 2), b"c's")


async def test_a_snapshot_trims_the_stream_behind_the_previous_one(harness: Harness) -> None:
    ((a, la),) = await _stores(harness, uid("edge-a"))
    room = uid("room")
    e = (await a.activate(room)).epoch
    await _durable_upto(a, la, room, e, 30)
    assert await a.put_snapshot(room, (e, 10), b"s10", 60_000)
    records, gap, first = await a.history_after(room, 0, 0, 100)
    assert (gap, first) == (False, (e, 1)), "the first snapshot trims nothing"
    assert [r.seq for r in records] == list(range(1, 31))
    assert await a.put_snapshot(room, (e, 20), b"s20", 60_000)
    records, gap, first = await a.history_after(room, 0, 0, 100)
    assert first == (e, 10), "entries before the previous snapshot are gone"
    assert gap and records == [], "so a reader from the start has a gap"
    records, gap, first = await a.history_after(room, e, 9, 100)
    assert (gap, first) == (False, (e, 10))
    assert [r.seq for r in records] == list(range(10, 31)), "everything from 10 on is kept"
    assert [r.seq for r in await a.recent(room, 100)] == list(range(10, 31))
    assert await a.put_snapshot(room, (e, 30), b"s30", 60_000)
    records, gap, first = await a.history_after(room, e, 19, 100)
    assert (gap, first) == (False, (e, 20))
    assert [r.seq for r in records] == list(range(20, 31))
    assert (await a.history_after(room, e, 9, 100))[1], "10..19 are gone"
    assert await a.get_snapshot(room) == ((e, 30), b"s30")
    # A late write of an older snapshot never replaces a newer one; the same
    # position does (a drain's final snapshot over a periodic one).
    assert not await a.put_snapshot(room, (e, 25), b"late", 60_000)
    assert await a.put_snapshot(room, (e, 30), b"final", 60_000)
    assert await a.get_snapshot(room) == ((e, 30), b"final")


async def test_only_the_lease_holder_drops_a_snapshot(harness: Harness) -> None:
    (a, la), (b, _lb), (c, _lc) = await _stores(harness, uid("edge-a"), uid("edge-b"),
                                                uid("edge-c"))
    room = uid("room")
    e = (await a.activate(room)).epoch
    await b.activate(room)
    await _durable_upto(a, la, room, e, 1)
    assert await a.put_snapshot(room, (e, 1), _SNAP, 60_000)
    await b.drop_snapshot(room)
    await b.drop_snapshot(uid("never"))
    assert await b.get_snapshot(room) == ((e, 1), _SNAP), "not dropped by a mirror"
    await harness.lapse(room)
    assert (await c.activate(room)).mine
    await a.drop_snapshot(room)
    assert await c.get_snapshot(room) == ((e, 1), _SNAP), "not dropped by a fenced owner"
    await c.drop_snapshot(room)
    assert await c.get_snapshot(room) is None
    assert await b.get_snapshot(room) is None
    await c.drop_snapshot(room)  # nothing left to drop: no error


async def test_a_snapshot_expires_after_its_ttl_refreshed_by_every_put(
        harness: Harness) -> None:
    ((a, la),) = await _stores(harness, uid("edge-a"))
    room = uid("room")
    e = (await a.activate(room)).epoch
    await _durable_upto(a, la, room, e, 1)
    assert await a.put_snapshot(room, (e, 1), b"x", 1000)
    if isinstance(a, RoomSync):
        assert 0 < await a.r.pttl(K.room_snapshot(room)) <= 1000
        assert await a.put_snapshot(room, (e, 1), b"x", 60_000)
        assert 1000 < await a.r.pttl(K.room_snapshot(room)) <= 60_000, "refreshed"
        assert await a.put_snapshot(room, (e, 1), b"x", 1000)
    await asyncio.sleep(0.6)
    assert await a.put_snapshot(room, (e, 1), b"y", 1000), "refreshed before it expired"
    await asyncio.sleep(0.6)  # past the first put's expiry, within the second's
    assert await a.get_snapshot(room) == ((e, 1), b"y")
    await asyncio.sleep(0.8)
    assert await a.get_snapshot(room) is None, "expired"
