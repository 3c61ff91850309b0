"""Game rooms over real edges and a real Redis: the arena's handler runs on the room's
owner; players on that edge and on another one send inputs through the room stream
and see the same state; bad input gets its code and leaves the room (and the edge)
running.

Edges load handlers with ``--room-handler`` (the arena from the local wing, test
handlers from ``tests/integration/game_handlers.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client_sdk import Client, GameRoom, ServerError
from client_sdk.protocol import ErrorCode, RoomList, RoomListing, RoomResync, pack_input
from tests.helpers import eventually, uid

ClientFactory = Callable[..., Awaitable[Client]]

#: Every test here runs over WebSocket and over QUIC (see tests/conftest.py).
TRANSPORTS = ("ws", "quic")

ARENA = "arena-*=edge_node.local.arena:Arena"
TEST_HANDLERS = ["crash-*=tests.integration.game_handlers:Crashy",
                 "duo-*=tests.integration.game_handlers:Duo",
                 "slow-*=tests.integration.game_handlers:Slow"]


def handler_args(*specs: str) -> list[str]:
    out: list[str] = []
    for s in specs:
        out += ["--room-handler", s]
    return out


async def in_step(*games: GameRoom, what: str = "mirrors in step") -> None:
    """Every mirror holds the same state at the same version."""
    async def check() -> bool:
        versions = {g.version for g in games}
        return len(versions) == 1 and len({g.checksum() for g in games}) == 1
    await eventually(check, timeout=5.0, what=what)


async def test_players_on_two_edges_play_one_arena(edge_factory, clients: ClientFactory,
                                                   token) -> None:
    e1 = edge_factory(uid("ga"), *handler_args(ARENA))
    e2 = edge_factory(uid("gb"), *handler_args(ARENA))
    room = uid("arena")
    a = await clients(e1.url, token("ada"))
    b = await clients(e2.url, token("bob"))
    ga = await a.join_game(room, {"name": "ada"})  # e1 owns the room: the handler runs there
    gb = await b.join_game(room, {"name": "bob"})  # a player on another edge
    await eventually(lambda: _has_players(ga, gb, a, b), what="both avatars everywhere")
    assert gb.tick_rate == 20 and ga.state["players"][a.session_id]["name"] == "ada"
    moved: list[Any] = []
    gb.on_change(["players", b.session_id], lambda p, v: moved.append(v))
    # Inputs are acknowledged once durable in the stream; e1 moves bob.
    await steer(gb, ga, b.session_id, "bob moving on e1")
    await in_step(ga, gb)
    assert moved, "the change callback heard bob's x change"
    assert ga.state == gb.state and gb.resyncs == 0
    assert gb.server_time() > 0

    async def listed_on_e2() -> bool:  # e1 runs the room; e2 lists it from the store
        listing = await b.request(RoomList(0, room))
        assert isinstance(listing, RoomListing)
        return [(r["name"], r["players"], r["edge"]) for r in listing.rooms] == [
            (room, 2, a.edge_id)]
    await eventually(listed_on_e2, timeout=5.0, what="the room listed on the other edge")


async def _has_players(ga: GameRoom, gb: GameRoom, a: Client, b: Client) -> bool:
    want = {a.session_id, b.session_id}
    return set(ga.state.get("players", {})) == want == set(gb.state.get("players", {}))


async def steer(mover: GameRoom, watcher: GameRoom, sid: str, what: str) -> None:
    """Steer ``sid`` (through ``mover``) until ``watcher`` sees it move, then stop it.
    Each direction gets 1.5 s: the arena's walls and border may block one."""
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        here = watcher.state["players"][sid]
        x0, y0 = here["x"], here["y"]
        await mover.send("move", {"dx": dx, "dy": dy})
        for _ in range(75):
            now = watcher.state["players"][sid]
            if abs(now["x"] - x0) + abs(now["y"] - y0) > 0.5:
                await mover.send("move", {"dx": 0, "dy": 0})
                return
            await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


async def test_events_leave_and_listing(edge_factory, clients: ClientFactory, token) -> None:
    e1 = edge_factory(uid("gl"), *handler_args(ARENA))
    room = uid("arena")
    a = await clients(e1.url, token("ada"))
    b = await clients(e1.url, token("bob"))
    ga = await a.join_game(room, {"name": "ada", "label": "fun"})
    gb = await b.join_game(room, {"name": "bob"})
    await gb.send("say", "gg")
    # ada may also hear "scored" (her avatar can spawn on an orb): wait for "said".
    said = await asyncio.wait_for(_first(ga, "said"), 5)
    assert said == {"who": b.session_id, "text": "gg"}
    listing = await a.request(RoomList(0, "arena-*"))
    assert isinstance(listing, RoomListing)
    (mine,) = [r for r in listing.rooms if r["name"] == room]
    assert mine["players"] == 2 and mine["max_players"] == 16
    assert mine["metadata"] == {"label": "fun", "mode": "orbs"}
    await gb.leave()
    await eventually(_gone(ga, b.session_id), what="bob's avatar removed")


async def _first(g: GameRoom, kind: str) -> Any:
    """The payload of the first event of ``kind`` that ``g`` hears."""
    async for k, payload in g.events():
        if k == kind:
            return payload
    raise AssertionError(f"event stream ended before any {kind!r}")


def _gone(g: GameRoom, sid: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sid not in g.state["players"]
    return check


async def test_bad_input_gets_its_code_and_the_room_goes_on(edge_factory, clients: ClientFactory,
                                                           token) -> None:
    e1 = edge_factory(uid("gx"), *handler_args(ARENA, *TEST_HANDLERS))
    room = uid("arena")
    a = await clients(e1.url, token("ada"))
    ga = await a.join_game(room, {"name": "ada"})

    async def refused(payload: bytes) -> int:
        with pytest.raises(ServerError) as info:
            await a.publish(room, payload, timeout=5)
        return info.value.code

    await a.publish(room, pack_input("move", {}), reliable=False)  # req_id 0: a notice
    await eventually(_notice(a, ErrorCode.BAD_REQUEST, "reliable"), what="4400 (unreliable)")
    assert await refused(pack_input("$join", {"req": 1})) == ErrorCode.BAD_REQUEST
    assert await refused(b"\x01\x02") == ErrorCode.BAD_REQUEST  # not [kind, value]
    assert await refused(pack_input("say", "x" * 5000)) == ErrorCode.FRAME_TOO_LARGE
    # Accepted by the edge (durable), refused by the room's code: ERROR 4411, req_id 0.
    await ga.send("fly", None)
    await eventually(_error(ga, ErrorCode.INPUT_REJECTED), what="4411 for 'fly'")
    # A join the handler refuses, and a room at its player limit: 4410.
    b = await clients(e1.url, token("bob"))
    with pytest.raises(ServerError) as info:
        await b.join_game(room, {"name": 42})
    assert info.value.code == ErrorCode.JOIN_REFUSED and "name" in info.value.message
    assert b.game(room) is None
    duo = uid("duo")
    for who in ("p1", "p2"):
        c = await clients(e1.url, token(who))
        await c.join_game(duo)
    with pytest.raises(ServerError) as info:
        await b.join_game(duo)
    assert info.value.code == ErrorCode.JOIN_REFUSED and "full" in info.value.message
    # The arena still runs: ada moves.
    await steer(ga, ga, a.session_id, "ada moving after the bad inputs")


async def test_input_flood_and_stray_resyncs_get_their_codes(edge_factory, clients: ClientFactory,
                                                             token) -> None:
    """More than 16 inputs in one tick wait for the next ticks, up to 64 more; past
    that, the rest get 4003 (once) and are not applied; a ROOM_RESYNC for a plain room
    is 4400, for a game room not joined 4404; the room and the session go on."""
    e1 = edge_factory(uid("gq"), *handler_args(*TEST_HANDLERS))
    slow, plain, other = uid("slow"), uid("chat"), uid("slow")
    a = await clients(e1.url, token("ada"))
    gs = await a.join_game(slow)
    acks = [gs.send_nowait("bump") for _ in range(120)]  # one tick a second: one burst
    await asyncio.wait_for(asyncio.gather(*[f for f in acks if f is not None]), 10)
    await eventually(_error(gs, ErrorCode.RATE_LIMITED), what="4003 for the flood")
    await eventually(_counted(gs), what="the applied inputs in the state")
    # 16 a tick are applied (64 more wait for later ticks); inputs of the burst that
    # land in the next tick may be too, but never all 120.
    await asyncio.sleep(1.2)
    assert 16 <= gs.state["n"] < 120
    await a.join(plain)
    a.send_frame(RoomResync(plain, 0))
    await eventually(_notice(a, ErrorCode.BAD_REQUEST, "not a game room"), what="4400")
    b = await clients(e1.url, token("bob"))
    await b.join_game(other)  # a game room that exists, which ada has not joined
    a.send_frame(RoomResync(other, 0))
    await eventually(_notice(a, ErrorCode.NOT_JOINED, "not joined"), what="4404")
    n = gs.state["n"]
    await gs.send("bump")
    await eventually(_counted(gs, n + 1), what="the room going on")


def _counted(g: GameRoom, at_least: int = 1) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int(g.state.get("n", 0)) >= at_least
    return check


def _notice(c: Client, code: int, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(k == code and text in t for k, t in c.errors)
    return check


def _error(g: GameRoom, code: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(c == code for c, _t in g.errors)
    return check


@pytest.mark.parametrize("how", ["crash", "block"])
async def test_a_failing_handler_fails_only_its_room(edge_factory, clients: ClientFactory,
                                                     token, how: str) -> None:
    e1 = edge_factory(uid("gf"), *handler_args(ARENA, *TEST_HANDLERS))
    arena, bad = uid("arena"), uid("crash")
    a = await clients(e1.url, token("ada"))
    ga = await a.join_game(arena, {"name": "ada"})
    gc = await a.join_game(bad)
    await gc.send(how, 1.5)  # "block": the tick takes 1.5 s, over the 1 s budget
    await eventually(_error(gc, ErrorCode.ROOM_FAILED), timeout=8.0, what="4007")
    (text,) = [t for c, t in gc.errors if c == ErrorCode.ROOM_FAILED]
    assert text.startswith("room failed:")
    # The other room and the edge go on; a new join to the failed room gets 4007.
    await steer(ga, ga, a.session_id, "the arena still running")
    b = await clients(e1.url, token("bob"))
    with pytest.raises(ServerError) as info:
        await b.join_game(bad)
    assert info.value.code == ErrorCode.ROOM_FAILED


async def test_an_edge_without_handlers_treats_the_name_as_a_plain_room(
        edge, clients: ClientFactory, token) -> None:
    a = await clients(edge.url, token("ada"))
    room = uid("arena")
    sub = await a.join(room)
    await a.publish(room, pack_input("move", {}))
    assert (await sub.get(5)).payload == pack_input("move", {})
    listing = await a.request(RoomList(0, "*"))
    assert isinstance(listing, RoomListing) and listing.rooms == []


async def test_a_bad_handler_spec_stops_the_edge_with_one_line(edge_factory) -> None:
    with pytest.raises(Exception) as info:
        edge_factory(uid("gs"), "--room-handler", "arena-*=no_such_game:Arena")
    assert "cannot import 'no_such_game'" in str(info.value)
