"""Game rooms through the hub below the process: two edges' hubs in one process sharing
one in-memory room store, fake sessions, the arena handler, and the real event loop
(uvloop, as the edge runs) driving ticks.

Shows that joins become stream entries the owner's handler answers, that a player on
the other edge gets its state and patches through the live channel, and that a stalled
loop (a tick deadline already past) or a broken input does not break the room's stream.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import uvloop

from client_sdk.protocol import ErrorCode, MessageType, pack_input
from client_sdk.protocol.state_sync import StateMirror
from edge_node.fanout.games import GameHost
from edge_node.games.loader import HandlerRegistry, parse_specs
from edge_node.store.memory import MemoryBackend
from tests.unit.test_hub import FakeSession, hub, settle

ROOM_STATE, ROOM_PATCH, JOINED, ACK = (MessageType.ROOM_STATE, MessageType.ROOM_PATCH,
                                       MessageType.JOINED, MessageType.ACK)


def games_on(h: Any) -> GameHost:
    h.games = GameHost(h, HandlerRegistry(parse_specs(
        ["arena-*=edge_node.local.arena:Arena"])))
    return h.games  # type: ignore[no-any-return]


def mirror_of(s: FakeSession) -> StateMirror:
    m = StateMirror()
    for f in s.frames():
        if f[0] == ROOM_STATE:
            m.load(f[2], f[3], f[5])
        elif f[0] == ROOM_PATCH and m.version:
            m.patch(f[2], f[3], f[4], f[5])
    return m


async def join(h: Any, s: FakeSession, room: str, req: int, **options: Any) -> tuple[int, str]:
    await h.join(s, room, 0)
    result: tuple[int, str] = await asyncio.wait_for(h.games.join(s, room, req, options), 5)
    return result


async def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _two_edges_one_arena() -> None:
    backend = MemoryBackend()
    ha, hb = hub(backend, "a"), hub(backend, "b")
    ga, gb = games_on(ha), games_on(hb)
    sa, sb = FakeSession("sa"), FakeSession("sb")
    assert await join(ha, sa, "arena-1", 7, name="ada") == (0, "")  # a owns the room
    assert await join(hb, sb, "arena-1", 8, name="bob") == (0, "")  # b: a remote player
    assert [f[1] for f in sa.frames(JOINED)] == [7] and [f[1] for f in sb.frames(JOINED)] == [8]
    assert "arena-1" in ga.rooms and "arena-1" not in gb.rooms  # the handler runs on a only
    await wait_for(lambda: set(mirror_of(sa).state.get("players", {})) == {"sa", "sb"}
                   and set(mirror_of(sb).state.get("players", {})) == {"sa", "sb"})
    # A stalled loop: the next tick's deadline is already past when it is scheduled
    # (uvloop then hands back a plain Handle).
    time.sleep(0.2)  # noqa: ASYNC251 (the point: the loop stalls)
    x0 = mirror_of(sb).state["players"]["sb"]["x"]
    hb.publish(sb, "arena-1", pack_input("move", {"dx": 1 if x0 < 50 else -1, "dy": 0}),
               True, 3, 1)
    await wait_for(lambda: abs(mirror_of(sb).state["players"]["sb"]["x"] - x0) > 0.5)
    assert any(f[1] == 3 for f in sb.frames(ACK)), "the input was acknowledged"
    # Still in step, and the room's stream has no gap: the owner acknowledges more.
    ha.publish(sa, "arena-1", pack_input("move", {"dx": 0, "dy": 0}), True, 4, 2)
    await wait_for(lambda: any(f[1] == 4 for f in sa.frames(ACK)))
    await wait_for(lambda: mirror_of(sa).state == ga.rooms["arena-1"].full_view()
                   and mirror_of(sb).state == mirror_of(sa).state)
    ga.close()
    gb.close()
    await settle()


def test_two_edges_one_arena_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_two_edges_one_arena())


async def test_a_refused_join_and_a_failing_entry_leave_the_stream_intact() -> None:
    backend = MemoryBackend()
    ha = hub(backend, "a")
    ga = games_on(ha)
    sa, sx = FakeSession("sa"), FakeSession("sx")
    assert await join(ha, sa, "arena-2", 1, name="ada") == (0, "")
    code, text = await join(ha, sx, "arena-2", 2, name=123)
    assert code == ErrorCode.JOIN_REFUSED and "name" in text
    # An entry that breaks our side (here: a handler replaced by something broken)
    # fails the game room, not the publish: it is still stored and acknowledged.
    ga.rooms["arena-2"].handle = None  # type: ignore[assignment, method-assign]
    ha.publish(sa, "arena-2", pack_input("move", {"dx": 1, "dy": 0}), True, 5, 9)
    await wait_for(lambda: any(f[1] == 5 for f in sa.frames(ACK)))
    assert "arena-2" not in ga.rooms and ga.totals.failed == 1
    entries, _gap, _first = await ha.store.history_after("arena-2", 0, 0, 100)
    kinds = [msgpack.unpackb(e.payload)[0] for e in entries]
    # The inputs, in order, between the room's own $tick marks.
    assert [k for k in kinds if k != "$tick"] == ["$join", "$join", "move"]
    assert kinds[0] == "$join" and "$tick" in kinds
    ga.close()
    await settle()
