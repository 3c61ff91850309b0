"""Delivery policies below the process: what a slow reader gets under ``latest``,
``drop`` and ``disconnect`` (held frames, the sinks' hold and release, the room's
target lists), with fake transports and no event loop time passing unless a test
says so."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest

from client_sdk.protocol import (
    JOIN_NO_ECHO,
    Delivery,
    Dropped,
    Member,
    decode,
    delivery_flags,
    delivery_of,
)
from edge_node.fanout.room import Room, default_delivery
from edge_node.rooms.machine import RoomMachine
from edge_node.transports.held import Held
from edge_node.transports.outbound import POLICY_SNDBUF, Flusher, Outbound, ws_binary_frame
from edge_node.transports.quic.outbound import QuicOutbound

SOFT, LIMIT = 1_000, 10_000


class FakeTransport:
    """Records writes; ``buffered`` pretends the socket is that far behind."""

    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class FakeQuic(FakeTransport):
    """A QUIC connection: stream writes, datagrams, and aioquic's datagram backlog."""

    def __init__(self) -> None:
        super().__init__()
        self.datagrams: list[bytes] = []
        self.waiting = 0

    def send_datagram(self, data: bytes) -> bool:
        self.datagrams.append(data)
        return True

    def datagrams_waiting(self) -> int:
        return self.waiting

    def transmit(self) -> None:
        pass


def bodies(writes: list[bytes]) -> list[bytes]:
    """The WebSocket frames' payloads in ``writes`` (short frames only)."""
    out, data = [], b"".join(writes)
    while data:
        n = data[1]
        out.append(data[2:2 + n])
        data = data[2 + n:]
    return out


def sink(t: FakeTransport, slow: list[bool] | None = None) -> Outbound:
    loop = asyncio.get_running_loop()
    return Outbound(t, Flusher(loop), limit=LIMIT, soft_limit=SOFT,
                    on_slow=lambda: (slow if slow is not None else []).append(True))


# -- the held frames alone ------------------------------------------------------


def test_latest_keeps_the_newest_frame_of_each_key_in_the_order_keys_last_changed() -> None:
    h = Held(budget=1_000)
    for data, key in ((b"a1", "a"), (b"b1", "b"), (b"a2", "a"), (b"c1", "c"), (b"a3", "a")):
        h.hold("r", Delivery.LATEST, data, False, key, (0, 0))
    sent: list[bytes] = []
    notices: list[bytes] = []
    h.release(lambda d, _r: sent.append(d) or True, notices.append)
    assert sent == [b"b1", b"c1", b"a3"]
    assert notices == [] and h.conflated == 2 and h.dropped == 0
    assert h.bytes == 0 and not h.holds("r")


def test_drop_drops_the_oldest_and_says_which_reliable_positions_went() -> None:
    h = Held(budget=30)  # three 10-byte frames fit
    for seq in range(1, 7):
        h.hold("r", Delivery.DROP, bytes([seq]) * 10, seq % 2 == 0, "", (5, seq) if seq % 2 == 0
               else (0, 0))
    sent: list[tuple[bytes, bool]] = []
    notices: list[bytes] = []
    h.release(lambda d, r: sent.append((d, r)) or True, notices.append)
    assert [d[0] for d, _ in sent] == [4, 5, 6]  # the newest three
    assert [r for _, r in sent] == [True, False, True]
    assert [decode(n) for n in notices] == [Dropped("r", 3, 1, (5, 2), (5, 2))]
    assert h.dropped == 3


def test_a_frame_larger_than_the_budget_is_dropped_itself() -> None:
    h = Held(budget=10)
    h.hold("r", Delivery.DROP, b"x" * 5, True, "", (1, 1))
    h.hold("r", Delivery.DROP, b"y" * 50, True, "", (1, 2))
    sent: list[bytes] = []
    notices: list[bytes] = []
    h.release(lambda d, _r: sent.append(d) or True, notices.append)
    assert sent == [] and [decode(n) for n in notices] == [Dropped("r", 2, 2, (1, 1), (1, 2))]


def test_latest_over_the_budget_drops_the_key_that_changed_longest_ago() -> None:
    h = Held(budget=20)
    for key in "abc":
        h.hold("r", Delivery.LATEST, key.encode() * 10, False, key, (0, 0))
    sent: list[bytes] = []
    notices: list[bytes] = []
    h.release(lambda d, _r: sent.append(d) or True, notices.append)
    assert sent == [b"b" * 10, b"c" * 10]
    assert [decode(n) for n in notices] == [Dropped("r", 1)]


# -- the WebSocket sink -----------------------------------------------------------


async def test_under_the_soft_limit_a_policy_changes_nothing() -> None:
    t = FakeTransport()
    out = sink(t)
    for policy in (Delivery.LATEST, Delivery.DROP, Delivery.DISCONNECT):
        assert out.push_policy(ws_binary_frame(policy.value.encode()), False, "r", policy,
                               "k", (0, 0))
    await asyncio.sleep(0)
    assert bodies(t.writes) == [b"latest", b"drop", b"disconnect"]


async def test_latest_conflates_while_slow_and_releases_once_drained() -> None:
    t = FakeTransport(buffered=SOFT + 1)
    out = sink(t)
    for i in range(10):
        assert out.push_policy(ws_binary_frame(b"x%d" % i), False, "r", Delivery.LATEST, "x",
                               (0, 0))
        assert out.push_policy(ws_binary_frame(b"y%d" % i), False, "r", Delivery.LATEST, "y",
                               (0, 0))
    # A reliable message of a latest room is not held: it goes at once.
    assert out.push_policy(ws_binary_frame(b"rel"), True, "r", Delivery.LATEST, "x", (1, 1))
    await asyncio.sleep(0)
    assert bodies(t.writes) == [b"rel"]
    assert not out.release_held()  # still slow: held
    t.buffered = SOFT // 2 + 1
    assert not out.release_held()  # not drained to half the soft limit yet
    t.buffered = SOFT // 2
    assert out.release_held()
    await asyncio.sleep(0)
    assert bodies(t.writes) == [b"rel", b"x9", b"y9"]
    assert out.held_counts() == (18, 0)


async def test_the_flusher_releases_held_frames_by_itself() -> None:
    t = FakeTransport(buffered=SOFT + 1)
    out = sink(t)
    out._flusher.recheck = 0.005
    out.push_policy(ws_binary_frame(b"a"), False, "r", Delivery.LATEST, "k", (0, 0))
    await asyncio.sleep(0.02)
    assert t.writes == []
    t.buffered = 0
    for _ in range(100):  # bounded: a few recheck intervals
        await asyncio.sleep(0.005)
        if t.writes:
            break
    assert bodies(t.writes) == [b"a"]


async def test_drop_holds_in_order_and_starts_the_release_with_dropped() -> None:
    t = FakeTransport(buffered=SOFT + 1)
    out = sink(t)
    frame_len = len(ws_binary_frame(b"m000"))
    n = SOFT // frame_len + 4  # with "late" below, five more than the budget holds
    for seq in range(1, n + 1):
        out.push_policy(ws_binary_frame(b"m%03d" % seq), True, "r", Delivery.DROP, "",
                        (2, seq))
    t.buffered = 0
    # A new message of the room once drained still waits behind the held ones.
    out.push_policy(ws_binary_frame(b"late"), True, "r", Delivery.DROP, "", (2, n + 1))
    assert ws_binary_frame(b"late") not in t.writes
    assert out.release_held()
    await asyncio.sleep(0)
    got = [decode(b) if b[0] == 0x98 else b for b in bodies(t.writes)]
    assert got[0] == Dropped("r", 5, 5, (2, 1), (2, 5))
    assert got[1:] == [b"m%03d" % s for s in range(6, n + 1)] + [b"late"]
    assert len(got[1:]) == SOFT // frame_len
    assert not out.closed


async def test_disconnect_closes_at_the_soft_limit() -> None:
    slow: list[bool] = []
    t = FakeTransport(buffered=SOFT + 1)
    out = sink(t, slow)
    assert not out.push_policy(ws_binary_frame(b"a"), False, "r", Delivery.DISCONNECT, "",
                               (0, 0))
    assert slow == [True] and out.closed


async def test_a_held_room_does_not_hold_the_other_rooms() -> None:
    t = FakeTransport(buffered=SOFT + 1)
    out = sink(t)
    out.push_policy(ws_binary_frame(b"held"), True, "slow", Delivery.DROP, "", (1, 1))
    assert out.push_framed(ws_binary_frame(b"all"))  # an "all" room: queued as before
    await asyncio.sleep(0)
    assert bodies(t.writes) == [b"all"]


# -- the QUIC sink ------------------------------------------------------------------


async def test_quic_counts_a_datagram_backlog_as_slow_and_conflates_datagrams() -> None:
    q = FakeQuic()
    out = QuicOutbound(q, Flusher(asyncio.get_running_loop()), limit=LIMIT, soft_limit=SOFT,
                       on_slow=lambda: None, max_datagram=1_000, datagram_queue=8)
    assert not out.backed_up()
    q.waiting = 4  # half the datagram queue waits for the congestion window
    assert out.backed_up()
    for i in range(5):
        out.push_policy(b"pos%d" % i, False, "r", Delivery.LATEST, "ship", (0, 0))
    await asyncio.sleep(0)
    assert q.datagrams == []
    q.waiting = 0
    assert out.release_held()
    await asyncio.sleep(0)
    assert q.datagrams == [b"pos4"]


# -- the room's targets and the policy in the flags -----------------------------------


@dataclass
class FakeSession:
    session_id: str
    out: Outbound
    closed: bool = False
    member: Member = field(default_factory=lambda: Member("s", "u", "player"))

    def send(self, data: bytes) -> None:
        self.out.push(data)


async def test_a_room_serves_all_members_fast_and_the_others_by_policy() -> None:
    room = Room("arena-1", RoomMachine("arena-1", "edge-a"),
                delivery=default_delivery((("arena-*", Delivery.LATEST),), "arena-1"))
    plain, own, default = (FakeSession(n, sink(FakeTransport())) for n in "abc")
    room.add(plain, delivery_flags("all"))
    room.add(own, delivery_flags("drop") | JOIN_NO_ECHO)
    room.add(default, 0)
    assert [sid for sid, _ in room.framed] == ["a"]
    assert [(sid, p) for sid, _, p in room.policied] == [("b", Delivery.DROP),
                                                         ("c", Delivery.LATEST)]
    assert room.no_echo == {"b"}
    assert default_delivery((("arena-*", Delivery.LATEST),), "lobby") is Delivery.ALL


def test_the_policy_travels_in_the_join_flags() -> None:
    for d in Delivery:
        assert delivery_of(delivery_flags(d) | JOIN_NO_ECHO) is d
    assert delivery_of(JOIN_NO_ECHO) is None
    with pytest.raises(ValueError, match="choose one of all, latest, drop, disconnect"):
        delivery_flags("newest")


class SocketTransport(FakeTransport):
    """A fake transport over a real (unconnected) TCP socket, as uvloop's gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None


async def test_a_member_with_a_policy_gets_a_small_kernel_send_buffer() -> None:
    room = Room("arena-1", RoomMachine("arena-1", "edge-a"))
    plain_t, policied_t = SocketTransport(), SocketTransport()
    try:
        before = plain_t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        room.add(FakeSession("a", sink(plain_t)), 0)
        room.add(FakeSession("b", sink(policied_t)), delivery_flags("latest"))
        assert plain_t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before
        got = policied_t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert got in (POLICY_SNDBUF, 2 * POLICY_SNDBUF)  # Linux doubles what is set
    finally:
        plain_t.sock.close()
        policied_t.sock.close()


async def test_adding_members_one_by_one_builds_the_lists_rebuild_would() -> None:
    room = Room("arena-1", RoomMachine("arena-1", "edge-a"))
    joins = [("a", 0), ("b", delivery_flags("drop")), ("c", JOIN_NO_ECHO), ("d", 1),
             ("e", delivery_flags("latest") | 1)]
    for sid, flags in joins:
        room.add(FakeSession(sid, sink(FakeTransport())), flags)
    incremental = (list(room.framed), list(room.bodies), list(room.policied),
                   [w.session_id for w in room.watchers], set(room.no_echo))
    room.rebuild()
    assert incremental == (room.framed, room.bodies, room.policied,
                           [w.session_id for w in room.watchers], room.no_echo)
    room.add(room.members["a"], JOIN_NO_ECHO)  # joined again with other flags
    assert room.no_echo == {"a", "c"}


async def test_what_is_held_of_a_room_the_member_left_is_not_sent() -> None:
    t = FakeTransport(buffered=SOFT + 1)
    room = Room("r", RoomMachine("r", "edge-a"))
    s = FakeSession("a", sink(t))
    room.add(s, delivery_flags("drop"))
    s.out.push_policy(ws_binary_frame(b"held"), True, "r", Delivery.DROP, "", (1, 1))
    assert room.remove("a")
    t.buffered = 0
    assert s.out.release_held()
    await asyncio.sleep(0)
    assert t.writes == []


def test_flags_naming_no_policy_fall_back_to_the_rooms() -> None:
    room = Room("r", RoomMachine("r", "edge-a"), delivery=Delivery.DROP)
    room.flags["x"] = 7 << 2  # never admitted (JOIN and resume refuse it), but harmless
    assert room.policy("x") is Delivery.DROP


async def test_quic_releases_held_datagrams_no_faster_than_its_queue_takes_them() -> None:
    q = FakeQuic()
    out = QuicOutbound(q, Flusher(asyncio.get_running_loop()), limit=LIMIT, soft_limit=SOFT,
                       on_slow=lambda: None, max_datagram=1_000, datagram_queue=8)
    q.waiting = 4  # slow: the backlog is at half the queue
    for k in range(10):
        out.push_policy(b"k%d" % k, False, "r", Delivery.LATEST, f"k{k}", (0, 0))
    q.waiting = 0
    rounds = 0
    while not out.release_held():  # a part each time: the queue's slow mark
        rounds += 1
        await asyncio.sleep(0)  # the flush sends what was queued
        assert rounds < 10
    await asyncio.sleep(0)
    assert rounds >= 2 and q.datagrams == [b"k%d" % k for k in range(10)]
    assert out.datagrams_dropped == 0
