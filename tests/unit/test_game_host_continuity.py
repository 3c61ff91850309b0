"""Game-room continuity through the hub below the process: two edges' hubs sharing one
in-memory room store, fake sessions, the arena, the real event loop.

The owner stores snapshots as it ticks; when it dies (its leases lapse in the store)
the neighbour that reads the room takes it over and restores the game; on a drain the
room moves live with its lease and a player's mirror goes on from its last patch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from client_sdk.protocol import pack_input
from edge_node.fanout.games import GameHost
from edge_node.store.memory import MemoryBackend
from tests.unit.test_game_host import ROOM_STATE, games_on, join, mirror_of, wait_for
from tests.unit.test_hub import FakeSession, hub, settle

ROOM = "arena-c"


async def _two_players(backend: MemoryBackend) -> tuple[Any, Any, GameHost, GameHost,
                                                        FakeSession, FakeSession]:
    ha, hb = hub(backend, "a"), hub(backend, "b")
    ga, gb = games_on(ha), games_on(hb)
    sa, sb = FakeSession("sa"), FakeSession("sb")
    assert await join(ha, sa, ROOM, 1, name="ada") == (0, "")  # a owns the room
    assert await join(hb, sb, ROOM, 2, name="bob") == (0, "")  # b mirrors it
    await wait_for(lambda: set(mirror_of(sb).state.get("players", {})) == {"sa", "sb"})
    for i in range(5):
        hb.publish(sb, ROOM, pack_input("move", {"dx": 1, "dy": 0.5}), True, 10 + i, 10 + i)
        await asyncio.sleep(0.03)
    await wait_for(lambda: ga.totals.snapshots >= 1 and ga.totals.marks >= 2)
    return ha, hb, ga, gb, sa, sb


async def test_the_neighbour_restores_a_game_whose_owner_died() -> None:
    backend = MemoryBackend()
    _ha, hb, ga, gb, _sa, sb = await _two_players(backend)
    assert ROOM not in gb.rooms
    owner_tick = ga.rooms[ROOM].ticks
    fulls = len(sb.frames(ROOM_STATE))
    ga.close()  # the process is gone: no more ticks, nothing released
    backend.kill("a")
    await wait_for(lambda: ROOM in gb.rooms and gb.totals.restores == 1)
    g = gb.rooms[ROOM]
    assert set(g.players) == {"sa", "sb"} and g.version >= 1 << 32
    assert g.ticks <= owner_tick + 1  # resumed from the last mark, at most a tick ahead
    # b's player gets its whole view in the new version space, then patches.
    await wait_for(lambda: len(sb.frames(ROOM_STATE)) > fulls)
    await wait_for(lambda: mirror_of(sb).state == g.full_view())
    hb.publish(sb, ROOM, pack_input("move", {"dx": -1, "dy": 0}), True, 30, 30)
    await wait_for(lambda: mirror_of(sb).state == g.full_view() and g.stats.inputs >= 1)
    gb.close()
    await settle()


async def test_a_drain_moves_the_game_live_and_mirrors_go_on_from_their_patch() -> None:
    backend = MemoryBackend()
    ha, hb, ga, gb, _sa, sb = await _two_players(backend)
    fulls = len(sb.frames(ROOM_STATE))
    assert await ha.hand_over(ROOM, "b")
    await wait_for(lambda: ROOM in gb.rooms and gb.rooms[ROOM].phase.value == "running")
    assert ROOM not in ga.rooms and ga.totals.handovers == 1
    g = gb.rooms[ROOM]
    assert g.version < 1 << 32, "the same version space: players go on from their patch"
    hb.publish(sb, ROOM, pack_input("move", {"dx": 0, "dy": -1}), True, 40, 40)
    await wait_for(lambda: mirror_of(sb).state == g.full_view() and g.stats.inputs >= 1)
    assert len(sb.frames(ROOM_STATE)) == fulls, "no whole view needed"
    gb.close()
    await settle()


async def test_inputs_fed_while_a_failed_handover_moved_the_room_are_applied() -> None:
    """The drain captured the room and stopped it; an input arrives while the snapshot
    is being stored; then the lease cannot move.  The room stays here, restored, and
    that input (perhaps not stored yet when the restore read the stream) is applied."""
    backend = MemoryBackend()
    ha, _hb, ga, _gb, sa, _sb = await _two_players(backend)
    store = ha.store
    put, history = store.put_snapshot, store.history_after
    late: list[tuple[int, int]] = []

    async def put_and_publish(*args: Any) -> bool:
        ha.publish(sa, ROOM, pack_input("move", {"dx": 0, "dy": 1}), True, 50, 50)
        late.append(ha.rooms[ROOM].machine.last)
        return await put(*args)

    async def cannot_move(*_args: Any) -> bool:
        return False

    async def not_yet_stored(*args: Any) -> Any:  # the restore reads before it is
        records, gap, first = await history(*args)
        return [r for r in records if (r.epoch, r.seq) not in late], gap, first

    store.put_snapshot = put_and_publish  # type: ignore[method-assign]
    store.hand_over = cannot_move  # type: ignore[method-assign]
    store.history_after = not_yet_stored  # type: ignore[method-assign]
    g0 = ga.rooms[ROOM]
    before = g0.handler.state.players["sa"].inputs  # type: ignore[attr-defined]
    assert not await ha.hand_over(ROOM, "b")
    await wait_for(lambda: ROOM in ga.rooms and ga.rooms[ROOM] is not g0
                   and ga.rooms[ROOM].phase.value == "running")
    g = ga.rooms[ROOM]
    await wait_for(lambda: g.handler.state.players["sa"].inputs == before + 1)  # type: ignore[attr-defined]
    assert ga.totals.restores == 1 and ga.totals.moved_in == 1
    ga.close()
    await settle()


async def test_a_room_that_fails_drops_its_snapshot() -> None:
    backend = MemoryBackend()
    ha, _hb, ga, _gb, _sa, _sb = await _two_players(backend)
    assert await ha.store.get_snapshot(ROOM) is not None
    g = ga.rooms[ROOM]
    g.handler.on_tick = None  # type: ignore[method-assign,assignment]
    await wait_for(lambda: g.phase.value == "failed")
    await wait_for(lambda: backend.rooms[ROOM].snapshot is None)
    ga.close()
    await settle()
