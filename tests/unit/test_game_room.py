"""The game-room machine, below the process: a fake clock, no sockets, no Redis.

Each test feeds events with an explicit ``now`` and checks the commands that come out:
ticks on a fixed grid, joins (accepted, refused, full), inputs applied at the tick in
order, bad inputs and floods refused with their codes, a handler that raises or
blocks contained, per-player views, resync, events after the patch, timers on the
room clock, and determinism (same inputs, same state).
"""

from __future__ import annotations

from typing import Any

import pytest

from client_sdk.protocol import (
    ErrorCode,
    RoomEvent,
    RoomPatch,
    RoomStateFrame,
    decode,
    unpack_input,
)
from client_sdk.protocol.state_sync import StateMirror, decode_state, decode_value, state_checksum
from edge_node.games import events as ge
from edge_node.games.handler import InputRejected, JoinRefused, Player, RoomHandler
from edge_node.games.room import GAME_TRANSITIONS, GamePhase, GameRoom, GameSettings
from edge_node.games.state import Schema, StateMap, to_plain
from edge_node.local.arena import Arena


class Pos(Schema):
    x: float = 0.0
    score: int = 0


class Hands(Schema):
    cards: StateMap[int]


class Board(Schema):
    players: StateMap[Pos]
    hands: StateMap[Hands]
    ticks: int = 0


class Game(RoomHandler):
    tick_rate = 10
    patch_rate = 10
    max_players = 3

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = Board()
        self.created_with = options
        self.fired: list[int] = []

    def on_join_attempt(self, player: Player, options: dict[str, Any]) -> None:
        if options.get("team") == "spectators":
            raise JoinRefused("no spectators here")
        if options.get("explode"):
            raise RuntimeError("boom")

    def on_join(self, player: Player) -> None:
        self.state.players[player.id] = Pos(x=self.random.uniform(0, 1))
        self.state.hands[player.id] = Hands()

    def on_leave(self, player: Player) -> None:
        del self.state.players[player.id]
        del self.state.hands[player.id]

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        if kind == "move":
            self.state.players[player.id].x += payload
        elif kind == "draw":
            self.state.hands[player.id].cards[str(len(self.state.hands[player.id].cards))] = \
                payload
        elif kind == "shout":
            self.broadcast("shout", {"who": player.id, "text": payload}, exclude=player.id)
        elif kind == "whisper":
            self.send(payload, "psst", player.id)
        elif kind == "later":
            self.set_timer(payload, self.fired.append, self.tick)
        elif kind == "crash":
            raise ValueError("handler bug")
        elif kind == "bomb":
            self.set_timer(payload, self._explode)
        else:
            raise InputRejected(f"unknown input {kind!r}")

    def on_tick(self, dt: float) -> None:
        self.state.ticks += 1

    def _explode(self) -> None:
        raise KeyError("timer bug")

    def visible(self, player: Player, path: tuple[str | int, ...]) -> bool:
        # Private hands: a player sees only its own cards.
        return not (len(path) >= 2 and path[0] == "hands" and path[1] != player.id)


@pytest.fixture
def room() -> GameRoom:
    return GameRoom("table-1", Game())


def start(r: GameRoom, now: float = 1000.0, **options: Any) -> None:
    assert r.handle(ge.Start(options, seed=7), now) == []


#: Continuity commands (tested in test_game_snapshots.py), left out of these tests.
_CONTINUITY = (ge.Mark, ge.SnapshotDue)


def tick(r: GameRoom) -> list[ge.GameCommand]:
    due = r.next_deadline()
    assert due is not None
    return [c for c in r.handle(ge.Timer(), due) if not isinstance(c, _CONTINUITY)]


def frames_to(cmds: list[ge.GameCommand], player: str | None) -> list[Any]:
    return [decode(c.body) for c in cmds if isinstance(c, ge.Deliver)
            and (c.to == player or (c.to is None and c.exclude != player))]


def join(r: GameRoom, pid: str, req: int = 1, **options: Any) -> list[ge.GameCommand]:
    assert r.handle(ge.JoinInput(pid, "user-" + pid, options, req, "edge-a"), 0.0) == []
    return tick(r)


def test_the_transition_table_names_every_phase_and_disposed_is_final() -> None:
    assert set(GAME_TRANSITIONS) == set(GamePhase)
    assert GAME_TRANSITIONS[GamePhase.DISPOSED] == {}
    for row in GAME_TRANSITIONS.values():
        for targets in row.values():
            assert all(isinstance(t, GamePhase) for t in targets)


def test_ticks_run_on_a_fixed_grid_and_late_ticks_do_not_drift(room: GameRoom) -> None:
    start(room, 1000.0)
    assert room.next_deadline() == pytest.approx(1000.0)  # the first tick at once
    room.handle(ge.Timer(), 1000.0)
    assert room.next_deadline() == pytest.approx(1000.1)
    room.handle(ge.Timer(), 1000.1 + 0.03)  # 30 ms late
    assert room.next_deadline() == pytest.approx(1000.2)  # still on the grid
    assert room.handle(ge.Timer(), 1000.15) == [] and room.ticks == 2  # early: nothing
    room.handle(ge.Timer(), 1000.2 + 0.35)  # 3.5 intervals late: 3 slots skipped
    assert room.stats.skipped == 3 and room.stats.overruns == 1
    assert room.ticks == 3 and room.next_deadline() == pytest.approx(1000.6)
    assert room.handler.clock == pytest.approx(0.3)  # room time counts ticks run
    assert max(room.stats.lateness) == pytest.approx(0.35)


def test_a_join_is_answered_then_the_player_gets_its_whole_view(room: GameRoom) -> None:
    start(room, team="red")
    assert room.handler.created_with == {"team": "red"}  # type: ignore[attr-defined]
    cmds = join(room, "a", req=5)
    verdicts = [c for c in cmds if isinstance(c, ge.JoinVerdict)]
    assert verdicts == [ge.JoinVerdict("a", 5, "edge-a", 0, "")]
    assert cmds.index(verdicts[0]) < next(i for i, c in enumerate(cmds)
                                          if isinstance(c, ge.Deliver))
    (full,) = frames_to(cmds, "a")
    assert isinstance(full, RoomStateFrame) and full.tick_rate == 10
    assert decode_state(full.state)[1]["players"]["a"]["score"] == 0
    # Joining again (a resume, a handoff to another edge) is accepted at once; the
    # player's mirror goes on from its last patch (no whole view), at its new edge.
    room.handle(ge.JoinInput("a", "user-a", {}, 6, "edge-b"), 0.0)
    cmds = tick(room)
    assert ge.JoinVerdict("a", 6, "edge-b") in cmds and room.edges["a"] == "edge-b"
    assert not any(isinstance(f, RoomStateFrame) for f in frames_to(cmds, "a"))


def test_joins_refused_by_the_handler_or_because_the_room_is_full(room: GameRoom) -> None:
    start(room)
    cmds = join(room, "s", team="spectators")
    assert ge.JoinVerdict("s", 1, "edge-a", ErrorCode.JOIN_REFUSED, "no spectators here") in cmds
    for pid in "abc":
        join(room, pid)
    cmds = join(room, "d")
    assert ge.JoinVerdict("d", 1, "edge-a", ErrorCode.JOIN_REFUSED,
                          "room is full (3 players)") in cmds
    assert sorted(room.players) == ["a", "b", "c"]


def test_inputs_apply_at_the_next_tick_in_order_and_patches_reach_the_mirror(
        room: GameRoom) -> None:
    start(room)
    mirror = StateMirror()
    for f in frames_to(join(room, "a"), "a"):
        mirror.load(f.version, f.tick, f.state)
    x0 = room.state.players["a"].x
    room.handle(ge.MessageInput("a", "move", 1.0), 0.0)
    room.handle(ge.MessageInput("a", "move", 2.5), 0.0)
    assert room.state.players["a"].x == x0  # not before the tick
    cmds = tick(room)
    assert room.state.players["a"].x == pytest.approx(x0 + 3.5)
    (patch,) = frames_to(cmds, "a")
    assert isinstance(patch, RoomPatch) and patch.base == mirror.version
    mirror.patch(patch.base, patch.version, patch.tick, patch.ops)
    assert mirror.state == room.full_view("a")


def test_a_rejected_input_gets_4411_and_the_room_goes_on(room: GameRoom) -> None:
    start(room)
    join(room, "a")
    room.handle(ge.MessageInput("a", "dance", None), 0.0)
    room.handle(ge.MessageInput("a", "move", 1.0), 0.0)
    cmds = tick(room)
    assert ge.InputError("a", ErrorCode.INPUT_REJECTED, "unknown input 'dance'") in cmds
    assert room.phase is GamePhase.RUNNING and room.stats.input_errors == 1


def test_oversize_inputs_and_floods_are_refused_per_player() -> None:
    r = GameRoom("t", Game(), GameSettings(max_input_bytes=100, max_inputs_per_tick=3,
                                           max_waiting_inputs=2))
    start(r)
    join(r, "a")
    join(r, "b")
    x0 = r.state.players["b"].x
    r.handle(ge.MessageInput("a", "move", 1.0, size=101), 0.0)
    for _ in range(8):
        r.handle(ge.MessageInput("b", "move", 1.0), 0.0)
    r.handle(ge.MessageInput("a", "move", 1.0), 0.0)
    cmds = tick(r)
    errors = [c for c in cmds if isinstance(c, ge.InputError)]
    assert [(e.player, e.code) for e in errors] == [
        ("a", ErrorCode.FRAME_TOO_LARGE), ("b", ErrorCode.RATE_LIMITED)]  # one per tick
    assert r.stats.input_errors == 4  # 1 oversize + 3 past the share and the waiting room
    assert r.stats.inputs == 8 and r.state.players["b"].x == pytest.approx(x0 + 3)
    # The 2 over the tick's share waited: applied first at the next tick, no error.
    r.handle(ge.MessageInput("b", "move", 10.0), 0.0)
    cmds = tick(r)
    assert not [c for c in cmds if isinstance(c, ge.InputError)]
    assert r.state.players["b"].x == pytest.approx(x0 + 15)


def test_inputs_from_non_players_are_dropped(room: GameRoom) -> None:
    start(room)
    join(room, "a")
    room.handle(ge.MessageInput("ghost", "crash", None), 0.0)
    tick(room)
    assert room.phase is GamePhase.RUNNING


@pytest.mark.parametrize("how", ["input", "join", "timer"])
def test_a_handler_that_raises_fails_only_its_room_with_4007(how: str) -> None:
    r = GameRoom("t", Game())
    start(r)
    join(r, "a")
    if how == "input":
        r.handle(ge.MessageInput("a", "crash", None), 0.0)
    elif how == "join":
        r.handle(ge.JoinInput("b", "u", {"explode": True}, 2, "edge-a"), 0.0)
    else:
        r.handle(ge.MessageInput("a", "bomb", 0.1), 0.0)
        tick(r)  # sets the timer; it goes off at the next tick
    cmds = tick(r)
    (failed,) = [c for c in cmds if isinstance(c, ge.RoomFailed)]
    assert failed.code == ErrorCode.ROOM_FAILED and "room failed" in failed.text
    assert r.phase is GamePhase.FAILED and r.next_deadline() is None
    # Afterwards: joins refused with 4007, inputs dropped, no more ticks.
    assert r.handle(ge.JoinInput("z", "u", {}, 9, "edge-b"), 0.0) == [ge.JoinVerdict(
        "z", 9, "edge-b", ErrorCode.ROOM_FAILED, f"room failed: {r.failure}")]
    assert r.handle(ge.MessageInput("a", "move", 1.0), 0.0) == []
    assert r.handle(ge.Timer(), 9999.0) == []


def test_a_tick_over_the_budget_fails_the_room() -> None:
    r = GameRoom("t", Game(), GameSettings(hook_budget=0.05))
    start(r)
    assert r.handle(ge.TickTime(0.01), 0.0) == []
    (failed,) = r.handle(ge.TickTime(0.2), 0.0)
    assert isinstance(failed, ge.RoomFailed) and "200 ms" in failed.text
    assert r.phase is GamePhase.FAILED


def test_each_player_sees_only_its_own_hand(room: GameRoom) -> None:
    start(room)
    mirrors = {p: StateMirror() for p in "ab"}

    def feed(cmds: list[ge.GameCommand]) -> None:
        for p in "ab":
            for f in frames_to(cmds, p):
                if isinstance(f, RoomStateFrame):
                    mirrors[p].load(f.version, f.tick, f.state)
                else:
                    mirrors[p].patch(f.base, f.version, f.tick, f.ops)

    feed(join(room, "a"))
    feed(join(room, "b"))
    assert set(mirrors["a"].state["hands"]) == {"a"}
    room.handle(ge.MessageInput("a", "draw", 12), 0.0)
    feed(tick(room))
    for p in "ab":
        assert mirrors[p].state == room.full_view(p)
    assert mirrors["a"].state["hands"]["a"]["cards"] == {"0": 12}
    assert "a" not in mirrors["b"].state["hands"]


def test_a_player_whose_view_did_not_change_gets_no_patch_and_a_later_base() -> None:
    r = GameRoom("t", Game())
    start(r)
    join(r, "a")
    join(r, "b")

    class Quiet(Game):
        def on_tick(self, dt: float) -> None:
            pass

    r.handler.on_tick = Quiet.on_tick.__get__(r.handler)  # type: ignore[method-assign]
    before_b = r._sent["b"]
    r.handle(ge.MessageInput("a", "draw", 3), 0.0)
    cmds = tick(r)
    assert frames_to(cmds, "b") == []  # only a's private hand changed
    r.handle(ge.MessageInput("b", "move", 1.0), 0.0)
    (patch,) = frames_to(tick(r), "b")
    assert isinstance(patch, RoomPatch) and patch.base == before_b
    assert patch.version == r.version and patch.version > before_b + 1


def test_resync_sends_the_whole_view_at_once(room: GameRoom) -> None:
    start(room)
    join(room, "a")
    cmds = room.handle(ge.Resync("a"), 0.0)
    (full,) = frames_to(cmds, "a")
    assert isinstance(full, RoomStateFrame) and full.version == room.version
    assert room.handle(ge.Resync("nobody"), 0.0) == []


def test_events_follow_the_patch_and_respect_exclude_and_targets(room: GameRoom) -> None:
    start(room)
    join(room, "a")
    join(room, "b")
    room.handle(ge.MessageInput("a", "shout", "hi"), 0.0)
    room.handle(ge.MessageInput("a", "whisper", "b"), 0.0)
    cmds = tick(room)
    kinds = [type(f).__name__ for f in frames_to(cmds, "b")]
    assert kinds[-2:] == ["RoomEvent", "RoomEvent"] and kinds[0] == "RoomPatch"
    assert [f.kind for f in frames_to(cmds, "a") if isinstance(f, RoomEvent)] == []
    ev = [f for f in frames_to(cmds, "b") if isinstance(f, RoomEvent)]
    assert decode_value(ev[0].payload) == {"who": "a", "text": "hi"}
    assert (ev[1].kind, decode_value(ev[1].payload)) == ("psst", "a")


def test_timers_fire_on_the_room_clock(room: GameRoom) -> None:
    start(room)
    join(room, "a")
    room.handle(ge.MessageInput("a", "later", 0.25), 0.0)  # at 10 Hz: 3 ticks later
    tick(room)  # tick 2 applies the input: the timer is due at tick 5
    fired = room.handler.fired  # type: ignore[attr-defined]
    for _ in range(2):
        tick(room)
        assert fired == []
    tick(room)
    assert fired == [2]


def test_leave_removes_the_player_and_stop_disposes() -> None:
    class Tracking(Game):
        disposed = False

        def on_dispose(self) -> None:
            Tracking.disposed = True

    r = GameRoom("t", Tracking())
    start(r)
    join(r, "a")
    r.handle(ge.LeaveInput("a"), 0.0)
    tick(r)
    assert r.players == {} and "a" not in r.state.players
    assert r.handle(ge.Stop("test"), 0.0) == [ge.Disposed()]
    assert Tracking.disposed and r.phase is GamePhase.DISPOSED
    assert r.handle(ge.JoinInput("b", "u", {}, 1, "e"), 0.0) == []


def _play(seed_inputs: list[tuple[str, str, Any]]) -> str:
    r = GameRoom("arena-1", Arena())
    r.handle(ge.Start({}, seed=42), 0.0)
    for pid in ("p1", "p2", "p3"):
        r.handle(ge.JoinInput(pid, pid, {"name": pid}, 1, "e"), 0.0)
    now = 0.0
    for i, (pid, kind, value) in enumerate(seed_inputs):
        r.handle(ge.MessageInput(pid, kind, value), now)
        if i % 3 == 0:
            now = r.next_deadline() or now
            r.handle(ge.Timer(), now)
    for _ in range(40):
        now = r.next_deadline() or now
        r.handle(ge.Timer(), now)
    return state_checksum(to_plain(r.state))


def test_same_inputs_same_state_anywhere() -> None:
    inputs = [("p1", "move", {"dx": 1, "dy": 0}), ("p2", "move", {"dx": -1, "dy": 1}),
              ("p3", "move", {"dx": 0.5, "dy": -0.5}), ("p1", "move", {"dx": 0, "dy": 1}),
              ("p2", "say", "gg"), ("p3", "move", {"dx": 1, "dy": 1})] * 5
    assert _play(inputs) == _play(inputs)
    assert _play(inputs) != _play(inputs[::-1])


def test_arena_inputs_and_payloads_are_checked() -> None:
    r = GameRoom("arena-1", Arena())
    r.handle(ge.Start({}, seed=1), 0.0)
    r.handle(ge.JoinInput("p", "p", {"name": 7}, 1, "e"), 0.0)
    cmds = r.handle(ge.Timer(), r.next_deadline() or 0.0)
    assert any(isinstance(c, ge.JoinVerdict) and c.code == ErrorCode.JOIN_REFUSED
               for c in cmds)
    r.handle(ge.JoinInput("p", "p", {"name": "ok"}, 2, "e"), 0.0)
    r.handle(ge.MessageInput("p", "move", {"dx": 5}), 0.0)
    r.handle(ge.MessageInput("p", "fly", None), 0.0)
    cmds = r.handle(ge.Timer(), r.next_deadline() or 0.0)
    assert [c.code for c in cmds if isinstance(c, ge.InputError)] == [
        ErrorCode.INPUT_REJECTED, ErrorCode.INPUT_REJECTED]
    assert unpack_input(b"\x92\xa4move\x01") == ("move", 1)


def test_a_timer_a_millisecond_early_runs_the_tick_instead_of_spinning(room: GameRoom) -> None:
    """libuv fires timers up to 1 ms early; refusing would make the driver re-arm the
    timer for a sub-millisecond delay, which fires at once, again and again (measured:
    17 wake-ups per tick and 70 % of a core for 50 rooms)."""
    start(room, 1000.0)
    due = room.next_deadline()
    assert due is not None
    room.handle(ge.Timer(), due - 0.001)
    assert room.ticks == 1 and room.stats.lateness[-1] == 0.0
    assert room.next_deadline() == pytest.approx(due + 0.1)  # still on the grid
