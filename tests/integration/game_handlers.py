"""Room handlers the game-room integration tests load into real edges."""

from __future__ import annotations

import time
from typing import Any

from edge_node.games.handler import Player, RoomHandler
from edge_node.games.state import Schema, StateMap


class Counter(Schema):
    n: int = 0


class Crashy(RoomHandler):
    """Raises on input ``crash``; blocks the edge's loop on ``block`` (for a while)."""

    tick_rate = 20

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = Counter()

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        if kind == "crash":
            raise RuntimeError("a bug in the game")
        if kind == "block":
            time.sleep(float(payload))  # what a handler must never do
        self.state.n += 1


class Duo(RoomHandler):
    """Two players at most."""

    max_players = 2

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = Counter()


class Slow(RoomHandler):
    """One tick a second: a burst of inputs lands in a single tick."""

    tick_rate = 1

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = Counter()

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        self.state.n += 1


class Applied(Schema):
    n: int = 0
    tick: int = 0


class LedgerState(Schema):
    applied: StateMap[Applied]
    players: StateMap[int]
    count: int = 0
    drift: float = 0.0


class Ledger(RoomHandler):
    """Records every ``add`` input by its id (how often, at which tick) and drifts by
    the room's random source every tick: what the continuity tests check against a
    replay of the room's stream.  ``snapshot_every`` is the default's."""

    tick_rate = 20

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = LedgerState()
        self.rolls = 0

    def on_join(self, player: Player) -> None:
        self.state.players[player.id] = 0

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        key = str(payload)
        e = self.state.applied.get(key)
        if e is None:
            self.state.applied[key] = Applied(n=1, tick=self.tick)
        else:
            e.n += 1
        self.state.count += 1
        self.state.players[player.id] += 1

    def on_tick(self, dt: float) -> None:
        self.rolls += 1
        self.state.drift = round(self.state.drift + self.random.random() - 0.5, 6)
