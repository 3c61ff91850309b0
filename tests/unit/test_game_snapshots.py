"""Game-room continuity below the process: marks, snapshots, restore and replay.

A fake owner drives a :class:`GameRoom` the way the edge does (inputs fed with their
stream position, each :class:`~edge_node.games.events.Mark` appended to an in-memory
log at once, each :class:`~edge_node.games.events.SnapshotDue` sealed), so the tests
can "kill" it anywhere and rebuild the room from the newest snapshot and the log after
it, then compare with a reference that replays the whole log from the start.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from client_sdk.protocol import RoomPatch, RoomStateFrame, decode
from client_sdk.protocol.state_sync import StateMirror, state_checksum
from edge_node.games import events as ge
from edge_node.games.continuity import capture, take_snapshot
from edge_node.games.continuity import restore as restore_room
from edge_node.games.handler import Player, RoomHandler
from edge_node.games.room import GamePhase, GameRoom, GameSettings
from edge_node.games.snapshot import (
    RoomSnapshot,
    SnapshotInvalid,
    SnapshotTooLarge,
    seal,
    snapshot_key,
    unseal,
)
from edge_node.games.state import Schema, StateMap, to_plain
from edge_node.local.arena import Arena

KEY = snapshot_key(b"test-secret")


class Dot(Schema):
    x: float = 0.0
    hits: int = 0


class World(Schema):
    dots: StateMap[Dot]
    bonus: int = 0


class Drift(RoomHandler):
    """Uses everything the contract allows: random, timers (a method), player.data,
    its own attributes, events."""

    tick_rate = 20
    patch_rate = 10

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = World()
        self.total = 0
        self.set_timer(0.3, self.bump, 2)

    def on_join(self, player: Player) -> None:
        self.state.dots[player.id] = Dot(x=self.random.random())
        player.data["speed"] = 1.0

    def on_leave(self, player: Player) -> None:
        del self.state.dots[player.id]

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        if kind == "speed":
            player.data["speed"] = float(payload)
        elif kind == "hit":
            self.state.dots[player.id].hits += 1
            self.total += 1
            self.broadcast("hit", player.id)
        elif kind == "boom":
            raise RuntimeError("boom")

    def on_tick(self, dt: float) -> None:
        for pid in sorted(self.players):
            d = self.state.dots[pid]
            d.x = round(d.x + self.players[pid].data["speed"] * dt * self.random.random(), 6)

    def bump(self, n: int) -> None:
        self.state.bonus += n
        self.set_timer(0.3, self.bump, n + 1)


@dataclass
class Owner:
    """Drives a room like the edge: a log of stream entries, marks appended at once,
    snapshots sealed (``snaps``: (log index of the last mark, sealed bytes))."""

    room: GameRoom
    now: float = 1000.0
    log: list[Any] = field(default_factory=list)
    snaps: list[tuple[int, bytes]] = field(default_factory=list)
    last_mark: int = -1
    sent: list[ge.GameCommand] = field(default_factory=list)

    def run(self, cmds: list[ge.GameCommand]) -> list[ge.GameCommand]:
        for c in cmds:
            if isinstance(c, ge.Mark):
                self.log.append(ge.TickMark(c.tick))
                self.last_mark = len(self.log) - 1
            elif isinstance(c, ge.SnapshotDue) and self.last_mark >= 0:
                self.snaps.append((self.last_mark, seal(take_snapshot(self.room), KEY)))
        self.sent += cmds
        return cmds

    def start(self, seed: int = 9) -> None:
        self.run(self.room.handle(ge.Start({}, seed=seed), self.now))

    def feed(self, ev: ge.GameEvent) -> None:
        self.log.append(ev)
        self.run(self.room.handle(ev, self.now))

    def tick(self, n: int = 1) -> list[ge.GameCommand]:
        out: list[ge.GameCommand] = []
        for _ in range(n):
            self.now = self.room.next_deadline() or self.now
            out += self.run(self.room.handle(ge.Timer(), self.now))
        return out


def restore(snap: bytes, after: list[Any], cls: type[RoomHandler] = Drift, epoch: int = 5,
            now: float = 5000.0, cfg: GameSettings | None = None,
            ) -> tuple[GameRoom, list[ge.GameCommand]]:
    g = restore_room(unseal(snap, (KEY,)), cls, cfg)
    for ev in after:
        assert g.handle(ev, now) == []  # replay says nothing
    return g, g.handle(ge.GoLive(epoch), now)


def reference(log: list[Any], cls: type[RoomHandler] = Drift, seed: int = 9,
              cfg: GameSettings | None = None) -> GameRoom:
    """The whole log replayed from the start (the room as every acknowledged input
    says it must be)."""
    g = GameRoom("r", cls(), cfg)
    g.handle(ge.Start({}, seed=seed), 0.0)
    g.phase = GamePhase.REPLAYING  # from here on, exactly what a restore does
    for ev in log:
        g.handle(ev, 0.0)
    return g


def fingerprint(g: GameRoom) -> tuple[Any, ...]:
    h = g.handler
    return (g.ticks, state_checksum(to_plain(g.state)), g.rng.getstate(),
            {p: dict(pl.data) for p, pl in g.players.items()}, getattr(h, "total", None),
            len(g.timers))


def play(owner: Owner, rounds: int) -> None:
    """Players join, send inputs at uneven times, one leaves; idle stretches between."""
    for i, pid in enumerate(("a", "b", "c")):
        owner.feed(ge.JoinInput(pid, pid, {}, 1, f"edge-{i % 2}"))
    owner.tick()
    for r in range(rounds):
        owner.feed(ge.MessageInput("a", "hit", None))
        if r % 3 == 0:
            owner.feed(ge.MessageInput("b", "speed", 1 + r % 5))
        owner.tick(1 + r % 4)
        if r == rounds // 2:
            owner.feed(ge.LeaveInput("c"))
        if r % 7 == 0:
            owner.tick(9)  # idle: marks still come every mark_every ticks


def test_inputs_are_closed_by_a_mark_of_their_tick_and_idle_rooms_mark_too() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.feed(ge.JoinInput("a", "a", {}, 1, "e"))  # queued before the start
    o.start()
    assert o.log == [ge.JoinInput("a", "a", {}, 1, "e")] and not o.room.players
    cmds = o.tick()  # the first tick is due at once: it applies the join
    assert cmds[0] == ge.Mark(1)  # first: before anything fed later
    assert o.log[-1] == ge.TickMark(1) and "a" in o.room.players
    marks = [c.tick for c in o.tick(20) if isinstance(c, ge.Mark)]
    every = o.room.mark_every
    assert every == 5 and marks == [6, 11, 16, 21]
    # Snapshots every snapshot_interval (2 s at 20 Hz), the first at the first tick.
    dues = [o.room.ticks for _ in range(80) if any(
        isinstance(c, ge.SnapshotDue) for c in o.tick())]
    assert dues == [41, 81]
    assert len(o.snaps) == 3


@pytest.mark.parametrize("handler", [Drift, Arena])
def test_snapshot_plus_replay_equals_the_whole_log_replayed(handler: type[RoomHandler]) -> None:
    o = Owner(GameRoom("r", handler()))
    o.start()
    if handler is Arena:
        for pid in ("a", "b"):
            o.feed(ge.JoinInput(pid, pid, {"name": pid}, 1, "e"))
        for r in range(120):
            o.feed(ge.MessageInput("a" if r % 2 else "b", "move",
                                   {"dx": (r % 3) - 1, "dy": (r % 5) / 4 - 0.5}))
            o.tick(1 + r % 3)
    else:
        play(o, 60)
    assert len(o.snaps) >= 3
    # The owner's last tick applies an input, so it ends on a mark: it dies there.
    o.feed(ge.MessageInput("a", "move" if handler is Arena else "hit", {"dx": 1, "dy": 0}))
    o.tick()
    assert o.last_mark == len(o.log) - 1
    ref = reference(o.log, handler)
    assert fingerprint(o.room) == fingerprint(ref)  # the owner is what its log says
    for mark, sealed in o.snaps:
        g, _ = restore(sealed, o.log[mark + 1:], handler)
        assert fingerprint(g) == fingerprint(ref), f"restored from the mark at {mark}"


def test_a_restored_room_and_the_original_go_on_identically() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.start()
    play(o, 30)
    mark, sealed = o.snaps[-1]
    o.tick()  # the last tick may have no mark of its own
    o.log = o.log[:o.last_mark + 1]
    g, _ = restore(sealed, o.log[mark + 1:])
    twin = Owner(g, now=g.next_deadline() or 0.0)
    # The original is past the restored one by the ticks after its last mark.
    behind = o.room.ticks - g.ticks
    assert 0 <= behind < o.room.mark_every
    ref = Owner(reference(o.log))
    ref.room.handle(ge.GoLive(0), 0.0)
    for room_owner in (twin, ref):
        for _ in range(10):
            room_owner.feed(ge.MessageInput("b", "hit", None))
            room_owner.tick(3)
    assert fingerprint(twin.room) == fingerprint(ref.room)


def test_inputs_after_the_last_mark_apply_at_the_first_live_tick() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.start()
    play(o, 10)
    mark, sealed = o.snaps[-1]
    o.feed(ge.MessageInput("a", "hit", None))  # durable, but its tick's mark is not
    g, _ = restore(sealed, o.log[mark + 1:])
    total = g.handler.total  # type: ignore[attr-defined]
    twin = Owner(g, now=5000.0)
    cmds = twin.tick()
    assert g.handler.total == total + 1  # type: ignore[attr-defined]
    assert cmds[0] == ge.Mark(g.ticks)


def test_after_a_crash_every_player_gets_its_whole_view_in_a_new_version_space() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.start()
    play(o, 20)
    mark, sealed = o.snaps[-1]
    g, _ = restore(sealed, o.log[mark + 1:], epoch=7)
    assert g.phase is GamePhase.RUNNING and g.version >= 7 << 32
    cmds = Owner(g, now=5000.0).tick()
    fulls = {c.to for c in cmds if isinstance(c, ge.Deliver)
             and isinstance(decode(c.body), RoomStateFrame)}
    assert fulls == set(g.players) == {"a", "b"}
    # A patch the dead owner sent (its versions) can never follow the new state.
    assert all(decode(c.body).version >= 7 << 32 for c in cmds if isinstance(c, ge.Deliver)
               and isinstance(decode(c.body), RoomStateFrame | RoomPatch))


def test_a_handover_snapshot_lets_every_mirror_go_on_from_its_last_patch() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.start()
    play(o, 12)
    o.feed(ge.MessageInput("a", "hit", None))  # applied at the next tick
    o.tick()
    mirror = StateMirror()
    for c in o.sent:
        if isinstance(c, ge.Deliver) and c.to in (None, "a"):
            f = decode(c.body)
            if isinstance(f, RoomStateFrame):
                mirror.load(f.version, f.tick, f.state)
            elif isinstance(f, RoomPatch):
                mirror.patch(f.base, f.version, f.tick, f.ops)
    o.feed(ge.MessageInput("b", "hit", None))  # fed, not applied yet: replayed
    # The drain: a final snapshot between two ticks, possibly with changes not sent
    # yet (patch_rate is half the tick rate).
    sealed = seal(take_snapshot(o.room, final=True, epoch=5), KEY)
    pending = bool(o.room._log)
    # Restored in another epoch (an owner restored it, ran on and died): not final.
    other, _ = restore(sealed, o.log[o.last_mark + 1:], epoch=6, now=7000.0)
    assert not other.final and other.version > 6 << 32 and other.want_full == {"a", "b"}
    g, cmds = restore(sealed, o.log[o.last_mark + 1:], epoch=5, now=7000.0)
    assert cmds == [] and g.version == o.room.version and g.final
    twin = Owner(g, now=7000.0)
    sent = twin.tick(1)  # due at once: it patches
    frames = [decode(c.body) for c in sent if isinstance(c, ge.Deliver)
              and c.to in (None, "a")]
    assert frames and not any(isinstance(f, RoomStateFrame) for f in frames)
    for f in frames:
        if isinstance(f, RoomPatch):
            mirror.patch(f.base, f.version, f.tick, f.ops)  # raises if it did not follow
    assert mirror.state == g.full_view("a")
    assert pending or mirror.version == g.version


def test_a_handler_that_fails_during_replay_fails_at_go_live() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.start()
    play(o, 5)
    mark, sealed = o.snaps[-1]
    after = [*o.log[mark + 1:], ge.MessageInput("a", "boom", None), ge.TickMark(o.room.ticks + 1)]
    g = restore_room(unseal(sealed, (KEY,)), Drift)
    for ev in after:
        assert g.handle(ev, 0.0) == []
    assert g.phase is GamePhase.FAILED
    cmds = g.handle(ge.GoLive(3), 0.0)
    assert [type(c) for c in cmds] == [ge.RoomFailed]


def test_stop_after_a_move_does_not_dispose_the_game() -> None:
    disposed: list[str] = []

    class Ends(Drift):
        def on_dispose(self) -> None:
            disposed.append(self.name)

    for moved in (True, False):
        g = GameRoom("r", Ends())
        g.handle(ge.Start({}, 1), 0.0)
        assert g.handle(ge.Stop("x", moved=moved), 0.0) == [ge.Disposed()]
    assert disposed == ["r"]


def test_snapshots_are_sealed_bounded_and_load_only_allowed_code() -> None:
    o = Owner(GameRoom("r", Drift()))
    o.start()
    play(o, 3)
    snap = take_snapshot(o.room)
    sealed = seal(snap, KEY)
    assert unseal(sealed, (snapshot_key(b"old"), KEY)) == snap  # any current secret
    with pytest.raises(SnapshotInvalid, match="signature"):
        unseal(sealed, (snapshot_key(b"other"),))
    forged = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SnapshotInvalid):
        unseal(forged, (KEY,))
    with pytest.raises(SnapshotInvalid, match="not a game-room snapshot"):
        unseal(b"junk", (KEY,))
    with pytest.raises(SnapshotTooLarge, match="over the limit of 100"):
        seal(snap, KEY, limit=100)
    # A pickle that names anything outside the allowed packages does not load, even
    # when it is correctly signed (a leaked secret must not mean code execution).
    evil = RoomSnapshot("r", 1, 1, False, pickle.dumps(os.system))
    with pytest.raises(SnapshotInvalid, match="may not load"):
        restore_room(unseal(seal(evil, KEY), (KEY,)), Drift)
    # Nor a dotted name (an attribute path out of an allowed module), nor a module,
    # nor a function of this project outside the handler's own module.
    for body in (b"\x80\x04\x8c\x18edge_node.games.snapshot\x8c\x0cpickle.loads\x93.",
                 b"\x80\x04\x8c\x18edge_node.games.snapshot\x8c\x06pickle\x93.",
                 b"\x80\x04\x8c\x18edge_node.games.snapshot\x8c\x06unseal\x93."):
        with pytest.raises(SnapshotInvalid, match="may not load"):
            restore_room(RoomSnapshot("r", 1, 1, False, body), Drift)
    # Another handler class: refused (a deploy changed the room's code).
    with pytest.raises(SnapshotInvalid, match=r"refers to test_game_snapshots\.Drift"):
        restore_room(snap, Arena)

    class Drift2(Drift):
        pass

    with pytest.raises(SnapshotInvalid, match=r"the room.s handler is .*Drift2"):
        restore_room(snap, Drift2)


def test_a_handler_holding_what_cannot_be_pickled_says_so_at_capture() -> None:
    g = GameRoom("r", Drift(), GameSettings())
    g.handle(ge.Start({}, 1), 0.0)
    g.handler.set_timer(1.0, lambda: None)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        capture(g)


def test_inputs_waiting_past_a_tick_share_survive_a_snapshot() -> None:
    """A burst (a failover's outbox) waits for later ticks; a snapshot taken while some
    wait holds them, and the restored room applies them when the owner did."""
    cfg = GameSettings(max_inputs_per_tick=2, max_waiting_inputs=20)
    o = Owner(GameRoom("r", Drift(), cfg))
    o.start()
    o.feed(ge.JoinInput("a", "a", {}, 1, "e"))
    o.tick()
    for _ in range(9):
        o.feed(ge.MessageInput("a", "hit", None))
    o.tick()
    assert o.room.handler.total == 2 and len(o.room._carry) == 7  # type: ignore[attr-defined]
    mark, sealed = o.last_mark, seal(take_snapshot(o.room), KEY)
    o.tick(3)
    o.feed(ge.MessageInput("a", "hit", None))
    o.tick()
    assert o.room.handler.total == 10  # type: ignore[attr-defined]
    g, _ = restore(sealed, o.log[mark + 1:], cfg=cfg)
    ref = reference(o.log, cfg=cfg)
    assert fingerprint(g) == fingerprint(ref) == fingerprint(o.room)
