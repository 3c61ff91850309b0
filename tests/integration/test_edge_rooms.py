"""Rooms over real edges and real Redis: per-publisher order, presence, rooms spanning
several edges, positions, unreliable traffic and the SDK's request helpers.

Every edge is a real process (``edge_factory``); every client talks WebSocket over
loopback.  Room and edge names are unique per test: the Redis server is shared by
the whole session and streams, leases and epochs persist in it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from client_sdk import Client, Position, PresenceEvent, ReceivedMessage, ServerError, Subscription
from tests.helpers import eventually, uid

ClientFactory = Callable[..., Awaitable[Client]]

#: Every test here runs over WebSocket and over QUIC (see tests/conftest.py).
TRANSPORTS = ("ws", "quic")






async def collect(sub: Subscription, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
    """Exactly ``n`` messages from ``sub`` (``TimeoutError`` if they do not all come)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out: list[ReceivedMessage] = []
    while len(out) < n:
        out.append(await sub.get(max(0.0, deadline - loop.time())))
    return out


async def collect_until(sub: Subscription, payload: bytes,
                        timeout: float = 10.0) -> list[ReceivedMessage]:
    """Messages up to and including the first one carrying ``payload``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out: list[ReceivedMessage] = []
    while not out or out[-1].payload != payload:
        out.append(await sub.get(max(0.0, deadline - loop.time())))
    return out


def strictly_increasing(positions: list[tuple[int, int]]) -> bool:
    return all(a < b for a, b in itertools.pairwise(positions))


# -- per-publisher order -----------------------------------------------------


async def test_per_publisher_order_two_edges(edge_factory, clients, token) -> None:
    """3 publishers x 200 messages, subscribers on two edges: in order, no loss, no dups."""
    e1, e2 = edge_factory(uid("ord1")), edge_factory(uid("ord2"))
    room = uid("order")
    n_msgs = 200
    sub_a = await clients(e1.url, token("sub-a"))
    sub_b = await clients(e2.url, token("sub-b"))
    sa = await sub_a.join(room)  # first join: e1 owns the room
    sb = await sub_b.join(room)  # e2 mirrors it through the room stream
    # Two publishers on the owner edge and one on the mirror (its publishes are
    # forwarded to the owner).  echo=False: a publisher never gets its own messages.
    pubs = [await clients(url, token(f"pub-{i}"))
            for i, url in enumerate((e1.url, e1.url, e2.url))]
    psubs = [await p.join(room, echo=False) for p in pubs]

    async def burst(i: int, p: Client) -> list[Position]:
        futs = [p.publish_nowait(room, f"{i}:{n}".encode()) for n in range(n_msgs)]
        return list(await asyncio.wait_for(asyncio.gather(*futs), 10))  # type: ignore[arg-type]

    acks = await asyncio.gather(*(burst(i, p) for i, p in enumerate(pubs)))
    acked = {(a.epoch, a.seq) for per_pub in acks for a in per_pub}
    assert len(acked) == 3 * n_msgs, "two publishes were acknowledged with the same position"
    for per_pub in acks:
        assert strictly_increasing([(a.epoch, a.seq) for a in per_pub])
    # A sentinel after every ack: everything a subscriber sees before it must be
    # exactly the 600 messages (no loss, no duplicates).
    await pubs[0].publish(room, b"end")

    senders = {p.session_id: i for i, p in enumerate(pubs)}
    seen: dict[str, list[tuple[int, int]]] = {}
    for name, sub in (("owner-edge", sa), ("mirror-edge", sb)):
        got = await collect_until(sub, b"end")
        body = got[:-1]
        assert len(body) == 3 * n_msgs, f"{name}: {len(body)} messages before the sentinel"
        positions = [(m.epoch, m.seq) for m in body]
        assert strictly_increasing(positions), f"{name}: positions not strictly increasing"
        assert set(positions) == acked, f"{name}: positions differ from the acknowledged ones"
        for i in range(3):
            mine = [m for m in body if m.payload.startswith(f"{i}:".encode())]
            assert [m.payload for m in mine] == [f"{i}:{n}".encode() for n in range(n_msgs)], (
                f"{name}: publisher {i} out of order, lost or duplicated")
            assert {senders.get(m.sender) for m in mine} == {i}
        seen[name] = positions
    assert seen["owner-edge"] == seen["mirror-edge"], "edges delivered different orders"

    # echo=False: each publisher got the 400 messages of the others, none of its own.
    for i, ps in enumerate(psubs):
        got = await collect_until(ps, b"end") if i != 0 else await collect(ps, 2 * n_msgs)
        others = [m for m in got if m.payload != b"end"]
        assert len(others) == 2 * n_msgs
        assert all(senders[m.sender] != i for m in others)


# -- presence ----------------------------------------------------------------


async def test_presence_events_and_members_across_edges(edge_factory, clients, token) -> None:
    e1, e2 = edge_factory(uid("pres1")), edge_factory(uid("pres2"))
    room = uid("presence")
    a = await clients(e1.url, token("alice"))
    b = await clients(e1.url, token("bob"))
    c = await clients(e2.url, token("sensor-7", kind="device"))
    sa = await a.join(room, presence=True)

    await b.join(room)
    ev = await sa.next_presence(5)
    assert ev == PresenceEvent(room, True, ev.member)
    assert (ev.member.session_id, ev.member.subject, ev.member.kind) == (
        b.session_id, "bob", "player")

    sc = await c.join(room, presence=True)  # on the other edge
    ev = await sa.next_presence(5)
    assert (ev.joined, ev.member.session_id, ev.member.subject, ev.member.kind) == (
        True, c.session_id, "sensor-7", "device")

    everyone = {a.session_id, b.session_id, c.session_id}

    async def members_are(client: Client, expected: set[str]) -> bool:
        return {m.session_id for m in await client.presence(room)} == expected

    for who in (a, b, c):  # the member list is the same from both edges
        await eventually(lambda who=who: members_are(who, everyone), what="presence list")
    listed = {m.session_id: (m.subject, m.kind) for m in await c.presence(room)}
    assert listed == {a.session_id: ("alice", "player"), b.session_id: ("bob", "player"),
                      c.session_id: ("sensor-7", "device")}

    await b.leave(room)  # explicit leave: local watcher and remote watcher see it
    ev = await sa.next_presence(5)
    assert (ev.joined, ev.member.session_id) == (False, b.session_id)
    # Cross-edge presence events travel on Redis pub/sub from a background task, so
    # c (on e2) may still get bob's *earlier* join after its own JOINED: tolerate
    # that one stale event, then the leave must follow.
    ev = await sc.next_presence(5)
    if ev.joined:
        assert ev.member.session_id == b.session_id
        ev = await sc.next_presence(5)
    assert (ev.joined, ev.member.session_id) == (False, b.session_id)

    await c.close()  # disconnect counts as leaving
    ev = await sa.next_presence(5)
    assert (ev.joined, ev.member.session_id) == (False, c.session_id)
    await eventually(lambda: members_are(a, {a.session_id}), what="members after leaves")
    # A client joined without presence=True gets no presence events.
    b_sub = await b.join(room)
    with pytest.raises(TimeoutError):
        await b_sub.next_presence(0.2)


@pytest.mark.slow
async def test_presence_forgets_members_of_a_crashed_edge(edge_factory, clients,
                                                          token) -> None:
    """A SIGKILLed edge never removes its members; readers must drop them once its
    heartbeat is older than the registry TTL (5 s)."""
    e1, e2 = edge_factory(uid("crash1")), edge_factory(uid("crash2"))
    room = uid("ghost")
    a = await clients(e1.url, token("a"))
    c = await clients(e2.url, token("c"), reconnect=False)
    await a.join(room)
    await c.join(room)

    async def members() -> set[str]:
        return {m.session_id for m in await a.presence(room)}

    async def both_listed() -> bool:
        return await members() == {a.session_id, c.session_id}

    await eventually(both_listed, what="both members listed")
    await asyncio.to_thread(e2.kill)  # SIGKILL: no leave, no deregistration

    async def c_gone() -> bool:
        return await members() == {a.session_id}

    # The registry's heartbeat TTL is 5 s: after that e2 is not a live edge.
    await eventually(c_gone, timeout=7.5, what="the crashed edge's member to disappear")


# -- rooms spanning edges ----------------------------------------------------


async def test_room_spans_three_edges_all_directions(edge_factory, clients, token) -> None:
    edges = [edge_factory(uid(f"span{i}")) for i in range(3)]
    room = uid("span3")
    cs = [await clients(e.url, token(f"p{i}")) for i, e in enumerate(edges)]
    subs = [await c.join(room) for c in cs]
    assert {c.edge_id for c in cs} == {e.edge_id for e in edges}

    # Each edge publishes in turn (owner first, then both mirrors), twice round.
    positions: list[Position] = []
    for rnd in range(2):
        for i, c in enumerate(cs):
            pos = await c.publish(room, f"r{rnd}-from-{i}".encode())
            assert pos is not None
            positions.append(pos)
    assert strictly_increasing([(p.epoch, p.seq) for p in positions])
    expected = [(f"r{rnd}-from-{i}".encode(), (p.epoch, p.seq), cs[i].session_id)
                for (rnd, i), p in zip(((r, i) for r in range(2) for i in range(3)), positions,
                                       strict=True)]
    for k, sub in enumerate(subs):
        got = await collect(sub, len(expected), timeout=5)
        assert [(m.payload, (m.epoch, m.seq), m.sender) for m in got] == expected, (
            f"member on edge {k} saw a different room history")

    # Unreliable traffic crosses edges too, with position (0, 0).
    assert await cs[2].publish(room, b"fast", reliable=False) is None
    for sub in subs:
        m = await sub.get(5)
        assert (m.payload, m.epoch, m.seq, m.sender) == (b"fast", 0, 0, cs[2].session_id)


# -- SDK helpers -------------------------------------------------------------


async def test_ping_publish_nowait_and_unreliable(edge_factory, clients, token) -> None:
    e1, e2 = edge_factory(uid("sdk1")), edge_factory(uid("sdk2"))
    room = uid("sdk")
    a = await clients(e1.url, token("a"))
    b = await clients(e2.url, token("b"))
    sa, sb = await a.join(room), await b.join(room)

    rtt = await a.ping()
    assert rtt > 0 and a.rtt == rtt
    assert await b.ping() > 0

    fut = a.publish_nowait(room, b"nowait")
    assert fut is not None
    pos = await asyncio.wait_for(fut, 5)
    assert isinstance(pos, Position) and pos.epoch >= 1 and pos.seq >= 1
    for sub in (sa, sb):
        m = await sub.get(5)
        assert (m.payload, m.epoch, m.seq) == (b"nowait", pos.epoch, pos.seq)

    assert a.publish_nowait(room, b"u1", reliable=False) is None
    assert await b.publish(room, b"u2", reliable=False) is None
    for sub in (sa, sb):
        got = sorted([(m.payload, m.epoch, m.seq) for m in await collect(sub, 2, 5)])
        assert got == [(b"u1", 0, 0), (b"u2", 0, 0)]

    # Unreliable messages take no position: the next reliable one follows directly.
    nxt = await b.publish(room, b"after")
    assert nxt == Position(pos.epoch, pos.seq + 1)
    assert (await sa.get(5)).seq == pos.seq + 1
    assert sa.position == (pos.epoch, pos.seq + 1)


async def test_positions_keep_increasing_across_leave_and_rejoin(edge, clients, token) -> None:
    """Leaving a room (its last member on this edge) and joining again at once races
    the lease release with the new activation; positions must never repeat."""
    room = uid("rejoin")
    a = await clients(edge.url, token("a"))
    await a.join(room)
    positions = []
    for _ in range(20):
        pos = await a.publish(room, b"x")
        assert pos is not None
        positions.append((pos.epoch, pos.seq))
        await a.leave(room)
        await a.join(room)
    assert strictly_increasing(positions), f"positions went backwards: {positions}"


async def test_publish_from_mirror_right_after_owner_side_leaves(edge_factory, clients,
                                                                 token) -> None:
    """The owner edge's last member leaves (it releases the lease) while a member on
    another edge keeps publishing: the publish must still get a position."""
    e1, e2 = edge_factory(uid("own1")), edge_factory(uid("own2"))
    room = uid("handover")
    a = await clients(e1.url, token("a"))
    b = await clients(e2.url, token("b"))
    await a.join(room)  # e1 owns the room
    sb = await b.join(room)
    first = await b.publish(room, b"before")
    assert first is not None
    await a.leave(room)  # e1 releases the lease; e2 only takes over on its lease loop
    pos = await asyncio.wait_for(b.publish(room, b"after"), 8)
    assert pos is not None and (pos.epoch, pos.seq) > (first.epoch, first.seq)
    assert [m.payload for m in await collect(sb, 2, 5)] == [b"before", b"after"]


async def test_history_pages_a_room_for_a_session_that_has_not_joined(
        edge_factory, clients, token) -> None:
    """HISTORY: a new session reads back a room's messages before it joins, page by
    page; the token must allow the room."""
    e1, e2 = edge_factory(uid("hist1")), edge_factory(uid("hist2"))
    room = uid("hist")
    pub = await clients(e1.url, token("pub"))
    await pub.join(room)
    acked = [await pub.publish(room, f"m{i}".encode()) for i in range(5)]
    reader = await clients(e2.url, token("reader"))  # another edge, not a member
    page = await reader.history(room, limit=3)
    assert [m[3] for m in page.messages] == [b"m0", b"m1", b"m2"]
    assert page.more and not page.gap
    assert all(m[2] == pub.session_id for m in page.messages)
    last = page.messages[-1]
    rest = await reader.history(room, (last[0], last[1]), limit=3)
    assert [m[3] for m in rest.messages] == [b"m3", b"m4"] and not rest.more
    assert [(m[0], m[1]) for m in (*page.messages, *rest.messages)] == [
        (p.epoch, p.seq) for p in acked]
    assert (await reader.history(room, acked[-1])).messages == ()
    outsider = await clients(e2.url, token("outsider", rooms=["other-*"]))
    with pytest.raises(ServerError) as info:
        await outsider.history(room)
    assert info.value.code == 4403
