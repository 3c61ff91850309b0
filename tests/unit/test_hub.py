"""The hub (the room machines' driver) below the process: several edges' hubs in one
process, sharing one in-memory room store, with fake sessions that decode what they
are sent.  No sockets, no Redis, no edge processes.

The integration suites run the same behaviour through real edges and a real Redis;
these show that the driver, the machines and the store fit together on their own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgpack

from client_sdk.protocol import JOIN_NO_ECHO, ErrorCode, Member, MessageType
from edge_node.fanout.hub import Hub
from edge_node.rooms.machine import RoomSettings, RoomState
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.store.memory import MemoryBackend, MemoryRoomStore


@dataclass
class FakeSink:
    """A frame sink that keeps the protocol bodies it is given."""

    bodies: list[bytes] = field(default_factory=list)
    framed = False
    closed = False

    def push(self, body: bytes, reliable: bool = True) -> bool:
        self.bodies.append(body)
        return True

    def queued_bytes(self) -> int:
        return 0

    def flush(self) -> None: ...

    def close(self) -> None:
        self.closed = True


class FakeSession:
    """A client session as the hub sees it; ``frames`` decodes everything it got."""

    def __init__(self, sid: str) -> None:
        self.session_id = sid
        self.member = Member(sid, sid, "player")
        self.out = FakeSink()
        self.closed = False

    def send(self, data: bytes) -> None:
        self.out.push(data)

    def frames(self, kind: int | None = None) -> list[list[Any]]:
        got = [msgpack.unpackb(b, raw=False) for b in self.out.bodies]
        return [f for f in got if kind is None or f[0] == kind]

    def messages(self) -> list[tuple[int, int, bytes]]:
        return [(f[2], f[3], f[5]) for f in self.frames(MESSAGE)]


MESSAGE, ACK, ERROR = MessageType.MESSAGE, MessageType.ACK, MessageType.ERROR


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def hub(backend: MemoryBackend, edge_id: str, cfg: RoomSettings | None = None) -> Hub:
    h = Hub(edge_id, EdgeMetrics(edge_id), cfg)
    h.store = MemoryRoomStore(backend, edge_id, h, h.stats)
    return h


async def test_a_reliable_publish_is_fanned_out_acked_when_stored_and_deduplicated() -> None:
    h = hub(MemoryBackend(), "a")
    pub, sub = FakeSession("pub"), FakeSession("sub")
    assert await h.join(sub, "r", 0) == (1, 0)
    await h.join(pub, "r", JOIN_NO_ECHO)
    h.publish(pub, "r", b"hello", True, 1, 501)
    assert sub.messages() == [(1, 1, b"hello")]
    assert pub.messages() == [], "no echo to a publisher that asked for none"
    assert pub.frames(ACK) == [], "acknowledged only once stored"
    await settle()
    assert [f[1:4] for f in pub.frames(ACK)] == [[1, 1, 1]]
    h.publish(pub, "r", b"hello", True, 2, 501)  # re-sent after a reconnect
    await settle()
    assert sub.messages() == [(1, 1, b"hello")], "a duplicate is not fanned out again"
    assert [f[1:4] for f in pub.frames(ACK)][-1] == [2, 1, 1]
    assert h.stats.duplicates_dropped == 1


async def test_a_publish_on_a_mirror_goes_through_the_owner_to_every_edge() -> None:
    backend = MemoryBackend()
    a, b = hub(backend, "a"), hub(backend, "b")
    on_a, on_b, pub = FakeSession("x"), FakeSession("y"), FakeSession("p")
    await a.join(on_a, "r", 0)  # a owns the room
    assert await b.join(on_b, "r", 0) == (1, 0), "the same position as on the owner"
    await b.join(pub, "r", 0)
    assert b.rooms["r"].machine.state is RoomState.MIRROR
    b.publish(pub, "r", b"via-owner", True, 9, 900)
    await settle()
    assert on_a.messages() == [(1, 1, b"via-owner")]
    assert on_b.messages() == [(1, 1, b"via-owner")]
    assert [f[1:4] for f in pub.frames(ACK)] == [[9, 1, 1]]


async def test_when_the_owner_dies_a_mirror_takes_over_and_a_waiting_publish_lands() -> None:
    backend = MemoryBackend()
    a, b = hub(backend, "a"), hub(backend, "b")
    await a.join(FakeSession("x"), "r", 0)
    pub, sub = FakeSession("p"), FakeSession("s")
    await b.join(pub, "r", 0)
    await b.join(sub, "r", 0)
    backend.kill("a")  # before the forward is read: it is lost with the owner's inbox
    b.publish(pub, "r", b"after-death", True, 3, 333)
    await settle()
    m = b.rooms["r"].machine
    assert m.state is RoomState.OWNED and m.epoch == 2
    # The publish that went to the dead owner is re-sent to the new owner (here).
    assert sub.messages() == [(2, 1, b"after-death")]
    assert [f[1:4] for f in pub.frames(ACK)] == [[3, 2, 1]]
    # Each state change is counted once, and the scrape shows them and the states now.
    assert dict(b.stats.room_transitions) == {
        ("ACTIVATING", "MIRROR"): 1, ("MIRROR", "SETTLING"): 1, ("SETTLING", "OWNED"): 1}
    assert dict(a.stats.room_transitions) == {("ACTIVATING", "SETTLING"): 1,
                                              ("SETTLING", "OWNED"): 1}
    assert b.metrics.room_states is not None and b.metrics.room_states() == {"OWNED": 1}
    text = b.metrics.render().decode()
    assert 'edge_room_transitions_total{from="MIRROR",to="SETTLING"} 1.0' in text
    assert 'edge_rooms_by_state{state="OWNED"} 1.0' in text


async def test_a_forwarded_publish_that_gets_no_position_times_out_with_4005() -> None:
    backend = MemoryBackend()
    a = hub(backend, "a")
    b = hub(backend, "b", RoomSettings(forward_timeout=1.0, suspect_after=0.2))
    await a.join(FakeSession("x"), "r", 0)
    pub = FakeSession("p")
    await b.join(pub, "r", 0)
    backend.edges.pop("a")  # alive to the lease, deaf to its inbox
    b.publish(pub, "r", b"lost", True, 4, 44)
    await settle()
    b.tick(b.rooms["r"].machine.forwarded[("p", 4)].deadline)
    errors = pub.frames(ERROR)
    assert [(f[1], f[2]) for f in errors] == [(4, ErrorCode.PUBLISH_TIMEOUT)]


async def test_resume_replays_what_was_missed_and_max_replay_holds_from_memory() -> None:
    h = hub(MemoryBackend(), "a", RoomSettings(max_replay=3))
    pub = FakeSession("p")
    await h.join(pub, "r", 0)
    for i in range(1, 6):
        h.publish(pub, "r", b"%d" % i, True, i, 0)
    back = FakeSession("back")
    r = await h.resume_join(back, "r", 0, (1, 3))
    assert (r.recovered, r.replayed) == (True, 2)
    assert back.messages() == [(1, 4, b"4"), (1, 5, b"5")]
    late = FakeSession("late")
    r2 = await h.resume_join(late, "r", 0, (1, 0))
    assert (r2.recovered, r2.reason) == (False, "too_many")
    assert late.messages() == []


async def test_an_empty_room_lingers_and_then_gives_its_lease_back() -> None:
    backend = MemoryBackend()
    h = hub(backend, "a", RoomSettings(room_linger=2.0))
    s = FakeSession("s")
    await h.join(s, "r", 0)
    h.leave(s, "r")
    m = h.rooms["r"].machine
    assert m.linger_at is not None
    h.tick(m.linger_at - 0.1)
    assert "r" in h.rooms
    h.tick(m.linger_at)
    await settle()
    assert "r" not in h.rooms and backend.rooms["r"].owner is None
