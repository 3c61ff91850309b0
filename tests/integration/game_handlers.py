"""Room handlers the game-room integration tests load into real edges."""

from __future__ import annotations

import time
from typing import Any

from edge_node.games.handler import Player, RoomHandler
from edge_node.games.state import Schema


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
