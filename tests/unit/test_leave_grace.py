"""The edge's presence grace below the process: a lost member's leave is told to the
clients at once but recorded (store member set, origin, functions) only when the grace
ends without the session coming back (fake clock, recording fakes)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from client_sdk.protocol import Member
from edge_node.fanout.presence import LeaveGrace, PresenceTeller

ADA = Member("s-ada", "ada", "player")


class Recorder:
    """Store, uplink and functions in one: every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        self.calls.append(("live", room, kind))

    async def add_member(self, room: str, sid: str, body: list[str]) -> None:
        self.calls.append(("add", room, sid))

    async def remove_member(self, room: str, sid: str) -> None:
        self.calls.append(("remove", room, sid))

    def submit(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self.calls.append(("uplink", key, body["online"]))

    def emit(self, kind: str, room: str, body: dict[str, Any]) -> None:
        self.calls.append(("function", room, body["joined"]))

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


@dataclass
class FakeRoom:
    name: str
    watchers: list[Any] = field(default_factory=list)


class FakeHub:
    def __init__(self) -> None:
        self.store = self.uplink = self.functions = Recorder()
        self.draining = False
        self.rooms: dict[str, Any] = {}


def teller(grace: float) -> tuple[PresenceTeller, Recorder]:
    hub = FakeHub()
    return PresenceTeller(hub, grace), hub.store  # type: ignore[arg-type]


async def settle() -> None:
    await asyncio.sleep(0)  # the store calls are spawned tasks


def test_leave_grace_holds_until_due_and_cancels() -> None:
    g = LeaveGrace(5.0)
    assert g.hold("r", ADA, now=10.0) and g.holds("r")
    assert g.next_deadline() == 15.0
    assert g.due(14.9) == []
    assert [h.member for h in g.due(15.0)] == [ADA] and not g.holds("r")
    g.hold("r", ADA, now=20.0)
    assert g.cancel("r", ADA.session_id) and not g.cancel("r", ADA.session_id)
    assert g.cancelled == 1 and g.next_deadline() is None
    assert not LeaveGrace(0.0).hold("r", ADA, 1.0)  # 0: nothing held
    with pytest.raises(ValueError):
        LeaveGrace(-1)


async def test_a_lost_member_is_told_at_once_and_recorded_only_after_the_grace() -> None:
    t, rec = teller(5.0)
    room = FakeRoom("r")
    t.left(room, ADA, lost=True, now=100.0)  # type: ignore[arg-type]
    await settle()
    assert rec.kinds() == ["live"]  # the clients know (lost): nothing recorded yet
    assert t.tick(104.9) == set()
    await settle()
    assert rec.kinds() == ["live"]
    assert t.tick(105.0) == {"r"}  # not back: the leave is recorded now
    await settle()
    assert rec.calls[1:] == [("uplink", "r", False), ("function", "r", False),
                             ("remove", "r", "s-ada")]


async def test_a_session_back_in_time_records_neither_the_leave_nor_the_join() -> None:
    t, rec = teller(5.0)
    room = FakeRoom("r")
    t.left(room, ADA, lost=True, now=100.0)  # type: ignore[arg-type]
    t.joined(room, ADA)  # type: ignore[arg-type]  # resumed on this edge
    await settle()
    assert rec.kinds() == ["live", "live", "add"]  # told both; no uplink, no function
    assert t.tick(200.0) == set()


async def test_a_session_back_on_another_edge_ends_the_held_leave() -> None:
    t, rec = teller(5.0)
    t.left(FakeRoom("r"), ADA, lost=True, now=100.0)  # type: ignore[arg-type]
    t.remote_joined("r", ADA.session_id)
    assert t.tick(101.0) == {"r"}  # the room no longer waits: release it if empty
    assert t.tick(200.0) == set()
    await settle()
    assert rec.kinds() == ["live"]


async def test_a_normal_leave_a_zero_grace_and_a_drain_record_at_once() -> None:
    t, rec = teller(5.0)
    t.left(FakeRoom("r"), ADA, lost=False, now=1.0)  # type: ignore[arg-type]
    await settle()
    assert rec.kinds() == ["live", "uplink", "function", "remove"]
    t0, rec0 = teller(0.0)
    t0.left(FakeRoom("r"), ADA, lost=True, now=1.0)  # type: ignore[arg-type]
    await settle()
    assert rec0.kinds() == ["live", "uplink", "function", "remove"]
    t2, rec2 = teller(5.0)
    t2.left(FakeRoom("r"), ADA, lost=True, now=1.0)  # type: ignore[arg-type]
    t2.hub.draining = True
    assert t2.tick(1.5) == {"r"}  # a draining edge records what it held at once
    await settle()
    assert rec2.kinds() == ["live", "uplink", "function", "remove"]
