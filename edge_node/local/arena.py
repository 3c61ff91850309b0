"""A small authoritative arena: the demo's game room, and the example in docs/rooms.md.

Players steer (input ``"move"`` with ``{"dx": -1..1, "dy": -1..1}``); the server moves
them at a fixed speed, keeps them inside the arena and out of its walls, pushes apart
players that collide, and scores a point for each orb a player touches (the orb
reappears elsewhere, placed by the room's seeded random source).  The walls (placed at
creation) and each avatar's name and colour are state too: a late joiner gets them with
everything else, and patches never repeat them.  Input ``"say"`` broadcasts a short text as a
ROOM_EVENT.  Run it with ``--room-handler 'arena-*=edge_node.local.arena:Arena'``.
"""

from __future__ import annotations

import math
from typing import Any

from edge_node.games.handler import InputRejected, JoinRefused, Player, RoomHandler
from edge_node.games.state import F32, Schema, StateMap

__all__ = ["Arena", "ArenaState", "Avatar", "Orb", "SIZE", "SPEED"]

#: The arena is SIZE x SIZE units; players move SPEED units per second.
SIZE = 100.0
SPEED = 20.0
RADIUS = 2.0
ORBS = 8
WALLS = 8


def _clamp(v: float) -> float:
    return min(SIZE - RADIUS, max(RADIUS, v))


class Avatar(Schema):
    x: F32 = 0.0
    y: F32 = 0.0
    score: int = 0
    name: str = ""
    colour: str = ""
    #: Inputs this player's avatar took (the demo checks them against the inputs the
    #: edge acknowledged: none lost, none applied twice, across a drain and a kill).
    inputs: int = 0


class Wall(Schema):
    """An axis-aligned block: players cannot enter it."""

    x: F32 = 0.0
    y: F32 = 0.0
    w: F32 = 0.0
    h: F32 = 0.0


class Orb(Schema):
    x: F32 = 0.0
    y: F32 = 0.0


class ArenaState(Schema):
    players: StateMap[Avatar]
    orbs: StateMap[Orb]
    walls: StateMap[Wall]
    round: int = 1


class Arena(RoomHandler):
    """The arena room (see the module docstring)."""

    tick_rate = 20
    patch_rate = 20
    max_players = 16

    state: ArenaState

    def on_create(self, options: dict[str, Any]) -> None:
        self.state = ArenaState()
        rnd = self.random
        for i in range(WALLS):
            self.state.walls[str(i)] = Wall(x=rnd.uniform(10, SIZE - 25),
                                            y=rnd.uniform(10, SIZE - 25),
                                            w=rnd.uniform(3, 15), h=rnd.uniform(3, 15))
        for i in range(ORBS):
            self._place(self.state.orbs.setdefault(str(i), Orb()))
        self.metadata = {"label": str(options.get("label", "arena")), "mode": "orbs"}

    def _coord(self) -> float:
        return self.random.uniform(RADIUS, SIZE - RADIUS)

    def _place(self, orb: Orb) -> None:
        """Put ``orb`` somewhere free (never inside a wall)."""
        x, y = self._coord(), self._coord()
        while self._blocked(x, y):
            x, y = self._coord(), self._coord()
        orb.x, orb.y = x, y

    def _blocked(self, x: float, y: float) -> bool:
        boxes = self.__dict__.get("_boxes")
        if boxes is None:  # walls never move: their bounds (with the radius) once
            boxes = self._boxes = [(w.x - RADIUS, w.x + w.w + RADIUS, w.y - RADIUS,
                                    w.y + w.h + RADIUS) for w in self.state.walls.values()]
        for x0, x1, y0, y1 in boxes:  # noqa: SIM110 (a loop: the hot path of a tick)
            if x0 < x < x1 and y0 < y < y1:
                return True
        return False

    def on_join_attempt(self, player: Player, options: dict[str, Any]) -> None:
        name = options.get("name", "")
        if not isinstance(name, str) or len(name) > 32:
            raise JoinRefused("name must be a string of at most 32 characters")

    def on_join(self, player: Player) -> None:
        player.data["dir"] = (0.0, 0.0)
        x, y = self._coord(), self._coord()
        while self._blocked(x, y):
            x, y = self._coord(), self._coord()
        self.state.players[player.id] = Avatar(
            x=x, y=y, name=str(player.options.get("name", "")),
            colour=f"#{self.random.randrange(1 << 24):06x}")

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
        self.state.players[player.id].inputs += 1

    def on_tick(self, dt: float) -> None:
        players = self.state.players
        for pid, p in self.players.items():
            dx, dy = p.data.get("dir", (0.0, 0.0))
            if dx or dy:
                a = players[pid]
                norm = math.hypot(dx, dy) or 1.0
                step = SPEED * dt / max(norm, 1.0)
                nx, ny = _clamp(a.x + dx * step), _clamp(a.y + dy * step)
                if not self._blocked(nx, a.y):
                    a.x = nx
                if not self._blocked(a.x, ny):
                    a.y = ny
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
                    a.x = _clamp(a.x + ux * push)
                    a.y = _clamp(a.y + uy * push)
                    b.x = _clamp(b.x - ux * push)
                    b.y = _clamp(b.y - uy * push)

    def _pick_orbs(self) -> None:
        reach = (2 * RADIUS) ** 2
        orbs = list(self.state.orbs.values())
        for pid, a in sorted(self.state.players.items()):
            ax, ay = a.x, a.y
            for orb in orbs:
                dx, dy = ax - orb.x, ay - orb.y
                if dx * dx + dy * dy < reach:
                    a.score += 1
                    self._place(orb)
                    self.send(pid, "scored", {"score": a.score})
