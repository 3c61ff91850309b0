"""Presence that does not flap, with real edges (client_sdk.presence).

- a presence subscription starts with the room's members;
- a member whose link is cut and who resumes within the grace never shows as leaving
  to a watcher with a grace, while a watcher without one sees the edge's leave and
  join (the premise: the edge itself reports the blip);
- a member that does not come back is reported gone once the grace has passed, not
  before; one that leaves on purpose (a normal close) at once
  (test_edge_rooms.py::test_presence_events_and_members_across_edges);
- the edge records (functions, origin, member set) a blip neither as a leave nor as
  a join, and a member that does not come back only after its own grace.
"""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from client_sdk import Client, connect
from client_sdk.protocol import Message
from tests.helpers import uid, wait_until

APP = ["--functions", "tests.integration.edge_functions_app:functions"]


def _cut(c: Client) -> None:
    """Drop the client's connection without a close handshake (a network blip)."""
    assert c._link is not None
    c._link.abort()


async def _settle(*subs: object) -> None:
    """Let the joins settle, then forget the presence events they caused."""
    await asyncio.sleep(0.3)
    for sub in subs:
        q = sub._presence_q  # type: ignore[attr-defined]
        while not q.empty():
            q.get_nowait()


def _ids(members: list[object]) -> set[str]:
    return {m.session_id for m in members}  # type: ignore[attr-defined]


async def test_a_presence_subscription_starts_with_the_members(edge, token) -> None:
    a = await connect(edge.url, token("ada"))
    b = await connect(edge.url, token("bo"))
    c = await connect(edge.url, token("cy"))
    try:
        await a.join("pg1")
        await b.join("pg1")
        sub = await c.join("pg1", presence=True)
        assert _ids(sub.members) == {a.session_id, b.session_id, c.session_id}
        assert sub.reconnecting == []
    finally:
        for x in (a, b, c):
            await x.close()


async def test_a_blip_shorter_than_the_grace_does_not_show(edge, token) -> None:
    m = await connect(edge.url, token("mo"), backoff_base=0.05)
    w = await connect(edge.url, token("wa"))
    raw = await connect(edge.url, token("ro"))
    try:
        await m.join("pg2")
        watched = await w.join("pg2", presence=True, presence_grace=3.0)
        plain = await raw.join("pg2", presence=True, presence_grace=0.0)
        await _settle(watched, plain)
        assert m.session_id in _ids(watched.members)
        _cut(m)
        # Without a grace the edge's leave and the resumed join both show: the blip.
        left = await plain.next_presence(5)
        back = await plain.next_presence(5)
        assert (left.joined, back.joined, left.lost) == (False, True, True)
        assert left.member.session_id == back.member.session_id == m.session_id
        assert m.reconnects == 1
        # With a grace: nothing at all, and the member was listed all along.
        with pytest.raises(TimeoutError):
            await watched.next_presence(3.5)
        assert m.session_id in _ids(watched.members) and watched.reconnecting == []
    finally:
        for x in (m, w, raw):
            await x.close()


async def test_a_member_that_does_not_come_back_leaves_after_the_grace(edge, token) -> None:
    m = await connect(edge.url, token("gone"), reconnect=False)
    w = await connect(edge.url, token("wb"))
    raw = await connect(edge.url, token("rb"))
    try:
        await m.join("pg3")
        watched = await w.join("pg3", presence=True, presence_grace=1.0)
        plain = await raw.join("pg3", presence=True, presence_grace=0.0)
        await _settle(watched, plain)
        t0 = time.monotonic()
        _cut(m)
        ev = await plain.next_presence(5)
        assert not ev.joined and ev.lost and time.monotonic() - t0 < 1.0
        await asyncio.sleep(0.1)
        assert _ids(watched.reconnecting) == {m.session_id}
        assert m.session_id in _ids(watched.members)
        ev = await watched.next_presence(5)
        waited = time.monotonic() - t0
        assert not ev.joined and ev.member.session_id == m.session_id
        assert 0.9 <= waited < 3.0, waited
        assert m.session_id not in _ids(watched.members) and watched.reconnecting == []
    finally:
        for x in (m, w, raw):
            await x.close()


async def test_the_edge_records_a_blip_neither_as_a_leave_nor_as_a_join(
        edge_factory, token) -> None:
    """The edge's own grace (``--presence-grace``): the clients are told of a lost
    member at once (above), but what the edge *records* (its functions' presence
    events here, the origin's presence and the store's member set alike) shows a cut
    the session resumes from within the grace neither as a leave nor as a join, and a
    member that does not come back as gone only once the grace has passed."""
    e = edge_factory("pg-fn", *APP, "--presence-grace", "1.5")
    lobby = uid("lobby")
    w = await connect(e.url, token("watch"))
    m = await connect(e.url, token("mo"), backoff_base=0.05)
    gone = await connect(e.url, token("gone"), reconnect=False)
    seen: list[Message] = []
    try:
        await w.join(f"seen-{lobby}", on_message=seen.append)  # the presence handler's log
        await m.join(lobby)
        await gone.join(lobby)
        await wait_until(lambda: len(seen) == 2, 5, "both joins recorded")
        _cut(m)
        await wait_until(lambda: m.reconnects == 1 and m.connected, 5, "the resume")
        t0 = time.monotonic()
        _cut(gone)
        await asyncio.sleep(0.5)
        assert len(seen) == 2  # nothing recorded: neither the blip nor, yet, the leave
        assert {m.session_id, gone.session_id} <= _ids(await w.presence(lobby))
        await wait_until(lambda: len(seen) == 3, 5, "the leave of the member that is gone")
        assert time.monotonic() - t0 >= 1.45
        events = [(p["subject"], p["joined"]) for p in map(msgpack.unpackb,
                                                          (x.payload for x in seen))]
        assert sorted(events[:2]) == [("gone", True), ("mo", True)]
        assert events[2] == ("gone", False)
        assert _ids(await w.presence(lobby)) == {m.session_id}
    finally:
        for x in (w, m, gone):
            await x.close()
