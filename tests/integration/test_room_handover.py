"""Handing a room's lease over at the start of a drain (:mod:`edge_node.store.redis_handover`),
two RoomSyncs against a private embedded Redis: the lease moves with the same epoch,
the old owner goes on as a mirror of the new owner's messages, and a publish it
forwards while the lease moves reaches the new owner only after the handover notice
(earlier, the new owner would drop it as a room it does not own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from edge_node.local.redis_server import RedisServer
from edge_node.redis_io import keys as K
from edge_node.store.history import Entry
from edge_node.store.records import Forwarded
from edge_node.store.redis_sync import Lease, RoomSync
from tests.helpers import uid


class _Stats:
    def __getattr__(self, name: str) -> int:
        return 0


class _Listener:
    """Records every upcall in order, as ``(kind, room, detail)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def on_durable(self, room: str, epoch: int, seq: int) -> None:
        self.events.append(("durable", room, (epoch, seq)))

    def on_lease_lost(self, room: str) -> None:
        self.events.append(("lost", room, None))

    def on_remote_message(self, room: str, e: Entry) -> None:
        self.events.append(("message", room, (e.epoch, e.seq)))

    def on_forwarded_publish(self, room: str, sender: str, payload: bytes, origin: str,
                             req_id: int, idem: int) -> None:
        self.events.append(("forwarded", room, req_id))

    def on_remote_ack(self, *a: Any) -> None:
        self.events.append(("ack", "", a))

    def on_live(self, room: str, kind: int, body: list[Any]) -> None:
        self.events.append(("live", room, kind))

    def on_lease_acquired(self, room: str, lease: Lease) -> None:
        self.events.append(("acquired", room, (lease.epoch, lease.last_epoch,
                                               lease.last_seq)))

    def on_owner_changed(self, room: str, owner_edge: str) -> None:
        self.events.append(("owner", room, owner_edge))

    def kinds(self, room: str) -> list[str]:
        return [k for k, r, _ in self.events if r == room]




@pytest.fixture
async def pair(server: RedisServer) -> AsyncIterator[tuple[RoomSync, _Listener,
                                                           RoomSync, _Listener]]:
    syncs = []
    out: list[Any] = []
    for _ in range(2):
        lis = _Listener()
        s = RoomSync(server.url, uid("edge"), lis, lease_ms=2000, stream_maxlen=100_000,
                     append_batch=50, stats=_Stats())
        await s.start()
        syncs.append(s)
        out += [s, lis]
    yield out[0], out[1], out[2], out[3]
    for s in syncs:
        await s.stop()


async def _until(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _body(room: str, req_id: int) -> Forwarded:
    return Forwarded(room, "sender", b"payload", "origin-edge", req_id, req_id)


async def test_hand_over_moves_the_lease_and_keeps_mirroring(pair, admin) -> None:
    a, la, b, lb = pair
    room = uid("hv")
    lease_a = await a.activate(room)
    assert lease_a.mine
    lease_b = await b.activate(room)  # b has members too: a mirror
    assert not lease_b.mine
    epoch = lease_a.epoch
    for seq in range(1, 6):
        a.append(room, epoch, seq, msgpack.packb(["s", b"x", a.edge_id, seq, 0]))
    # Not flushed yet: hand_over makes them durable first.
    assert await a.hand_over(room, b.edge_id, (epoch, 5))
    assert ("durable", room, (epoch, 5)) in la.events
    owner: Any = await admin.get(K.room_owner(room))
    assert owner.decode() == f"{b.edge_id}:{epoch}"  # same epoch: positions continue
    assert not a.owns(room)
    # b adopts from its inbox notice, after reading the stream to its end.
    await _until(lambda: "acquired" in lb.kinds(room), what="b to adopt the room")
    assert ("acquired", room, (epoch, epoch, 5)) in lb.events
    assert b.owns(room)
    # a mirrors what b assigns next, from just after its own last position.
    for seq in range(6, 9):
        b.append(room, epoch, seq, msgpack.packb(["s", b"y", b.edge_id, seq, 0]))
    await _until(lambda: sum(1 for k in la.kinds(room) if k == "message") >= 3,
                 what="a to read b's messages")
    assert [d for k, r, d in la.events if k == "message" and r == room] == [
        (epoch, 6), (epoch, 7), (epoch, 8)]


async def test_forward_during_hand_over_reaches_the_new_owner_after_the_notice(
        pair) -> None:
    a, _la, b, lb = pair
    room = uid("hv")
    lease = await a.activate(room)
    await b.activate(room)
    for seq in range(1, 4):
        a.append(room, lease.epoch, seq, msgpack.packb(["s", b"x", a.edge_id, seq, 0]))
    task = asyncio.create_task(a.hand_over(room, b.edge_id, (lease.epoch, 3)))
    await asyncio.sleep(0)  # the handover has started: the room is being handed
    a.forward(b.edge_id, _body(room, 41))
    assert await task
    await _until(lambda: "forwarded" in lb.kinds(room), what="the forwarded publish")
    kinds = [k for k in lb.kinds(room) if k in ("acquired", "forwarded")]
    assert kinds == ["acquired", "forwarded"], "b read the publish before the notice"


async def test_hand_over_of_a_room_not_owned_is_refused(pair, admin) -> None:
    a, _la, b, lb = pair
    room = uid("hv")
    await b.activate(room)  # b owns it
    await a.activate(room)  # a mirrors it
    assert not await a.hand_over(room, b.edge_id, (1, 0))
    owner: Any = await admin.get(K.room_owner(room))
    assert owner.decode().startswith(b.edge_id + ":")
    # A forward for the room is not held back by a refused handover.
    a.forward(b.edge_id, _body(room, 7))
    await _until(lambda: ("forwarded", room, 7) in lb.events, what="the forward")
