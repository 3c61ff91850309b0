"""A small authoritative arena: the demo's game room, and the example in docs/rooms.md.

Players steer (input ``"move"`` with ``{"dx": -1..1, "dy": -1..1}``); the server moves
them at a fixed speed, keeps them inside the arena, pushes apart players that collide,
and scores a point for each orb a player touches (the orb reappears elsewhere, placed
by the room's seeded random source).  Input ``"say"`` broadcasts a short text as a
ROOM_EVENT.  Run it with ``--room-handler 'arena-*=edge_node.local.arena:Arena'``.
"""

from __future__ import annotations

import math
from typing import Any

from edge_node.games.handler import InputRejected, JoinRefused, Player, RoomHandler
from edge_node.games.state import Schema, StateMap

__all__ = ["Arena", "ArenaState", "Avatar", "Orb", "SIZE", "SPEED"]

#: The arena is SIZE x SIZE units; players move SPEED units per second.
SIZE = 100.0
SPEED = 20.0
RADIUS = 2.0
ORBS = 5


class Avatar(Schema):
    x: float = 0.0
    y: float = 0.0
    score: int = 0
    name: str = ""


class Orb(Schema):
    x: float = 0.0
    y: float = 0.0


class ArenaState(Schema):
    players: StateMap[Avatar]
    orbs: StateMap[Orb]
    round: int = 1


class Arena(RoomHandler):
    """The arena room (see the module docstring)."""

    tick_rate = 20
    patch_rate = 20
    max_players = 16

    state: ArenaState

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = ArenaState()
        for i in range(ORBS):
            self.state.orbs[str(i)] = Orb(x=self._coord(), y=self._coord())
        self.metadata = {"label": str(options.get("label", "arena")), "mode": "orbs"}

    def _coord(self) -> float:
        return round(self.random.uniform(RADIUS, SIZE - RADIUS), 2)

    def on_join_attempt(self, player: Player, options: dict[str, Any]) -> None:
        name = options.get("name", "")
        if not isinstance(name, str) or len(name) > 32:
            raise JoinRefused("name must be a string of at most 32 characters")

    def on_join(self, player: Player) -> None:
        player.data["dir"] = (0.0, 0.0)
        self.state.players[player.id] = Avatar(
            x=self._coord(), y=self._coord(), name=str(player.options.get("name", "")))

    def on_leave(self, player: Player) -> None:
        self.state.players.pop(player.id, None)

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        if kind == "move":
            if not isinstance(payload, dict):
                raise InputRejected("move takes {'dx': -1..1, 'dy': -1..1}")
            dx, dy = payload.get("dx", 0), payload.get("dy", 0)
            if not all(isinstance(v, (int, float)) and -1 <= v <= 1 for v in (dx, dy)):
                raise InputRejected("dx and dy must be numbers from -1 to 1")
            player.data["dir"] = (float(dx), float(dy))
        elif kind == "say":
            if not isinstance(payload, str) or len(payload) > 200:
                raise InputRejected("say takes a text of at most 200 characters")
            self.broadcast("said", {"who": player.id, "text": payload})
        else:
            raise InputRejected(f"unknown input {kind!r} (the arena knows move and say)")

    def on_tick(self, dt: float) -> None:
        players = self.state.players
        for pid, p in self.players.items():
            dx, dy = p.data.get("dir", (0.0, 0.0))
            if dx or dy:
                a = players[pid]
                norm = math.hypot(dx, dy) or 1.0
                step = SPEED * dt / max(norm, 1.0)
                a.x = round(min(SIZE - RADIUS, max(RADIUS, a.x + dx * step)), 2)
                a.y = round(min(SIZE - RADIUS, max(RADIUS, a.y + dy * step)), 2)
        self._collide()
        self._pick_orbs()

    def _collide(self) -> None:
        avatars = sorted(self.state.players.items())
        for i, (_pa, a) in enumerate(avatars):
            for _pb, b in avatars[i + 1:]:
                d = math.hypot(a.x - b.x, a.y - b.y)
                if d < 2 * RADIUS:
                    push = (2 * RADIUS - d) / 2 + 0.01
                    ux, uy = ((a.x - b.x) / d, (a.y - b.y) / d) if d else (1.0, 0.0)
                    a.x = round(min(SIZE - RADIUS, max(RADIUS, a.x + ux * push)), 2)
                    a.y = round(min(SIZE - RADIUS, max(RADIUS, a.y + uy * push)), 2)
                    b.x = round(min(SIZE - RADIUS, max(RADIUS, b.x - ux * push)), 2)
                    b.y = round(min(SIZE - RADIUS, max(RADIUS, b.y - uy * push)), 2)

    def _pick_orbs(self) -> None:
        for pid, a in sorted(self.state.players.items()):
            for orb in self.state.orbs.values():
                if math.hypot(a.x - orb.x, a.y - orb.y) < 2 * RADIUS:
                    a.score += 1
                    orb.x, orb.y = self._coord(), self._coord()
                    self.send(pid, "scored", {"score": a.score})
