"""The API a game's room code is written against.

Subclass :class:`RoomHandler`, set its rates and limits, and override the hooks you
need.  The edge creates one instance per room, on the room's owner only, and calls the
hooks from one thread, in order, between ticks — never two at once::

    class Arena(RoomHandler):
        tick_rate = 20          # on_tick calls per second (1-60)
        patch_rate = 20         # state patches per second (at most tick_rate)
        max_players = 8         # 0: no limit

        def on_create(self, options):
            self.state = ArenaState()

        def on_join_attempt(self, player, options):
            if options.get("team") not in ("red", "blue"):
                raise JoinRefused("pick a team: red or blue")

        def on_join(self, player):
            self.state.players[player.id] = Avatar(x=self.random.uniform(0, 100))

        def on_message(self, player, kind, payload):
            if kind != "move":
                raise InputRejected(f"unknown input {kind!r}")
            ...

        def on_tick(self, dt):
            ...

The determinism contract (docs/rooms.md): a hook may read only its arguments,
``self.state``, ``self.clock``/``self.tick`` and ``self.random``, and may change only
``self.state``, ``self.metadata`` and its own attributes; it must not read the wall
clock, global random, files or the network, nor keep references into the state past
the hook.  Given the same inputs in the same order it then produces the same state on
any edge — which is what lets a room be rebuilt elsewhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edge_node.games.state import Schema

if TYPE_CHECKING:
    from edge_node.games.room import GameRoom

__all__ = ["RoomHandler", "Player", "JoinRefused", "InputRejected", "Path"]

Path = tuple[str | int, ...]


class JoinRefused(Exception):
    """Raise from :meth:`RoomHandler.on_join_attempt`: the client's join fails with
    ERROR 4410 and this text."""


class InputRejected(Exception):
    """Raise from :meth:`RoomHandler.on_message`: the input is dropped and its sender
    gets ERROR 4411 with this text (the room goes on)."""


@dataclass(slots=True)
class Player:
    """One client in a game room.

    ``id`` is the client's session id (stable across resume and failover);
    ``subject`` the user named by its token; ``options`` what it joined with.
    ``data`` is the handler's own per-player scratch space (not synced).
    """

    id: str
    subject: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


class RoomHandler:
    """Base class of a game room's code (see the module docstring)."""

    #: Ticks per second, 1-60.
    tick_rate: ClassVar[int] = 20
    #: Patches per second, 1..tick_rate (one patch carries every change since the last).
    patch_rate: ClassVar[int] = 20
    #: Most players at once (0: no limit).  A join past it gets ERROR 4410 "room is full".
    max_players: ClassVar[int] = 0

    #: The room's state; assign a :class:`~edge_node.games.state.Schema` in on_create.
    state: Schema
    #: Listing metadata (label, mode, map...): shown by room listing; plain values only.
    metadata: dict[str, Any]
    _room: GameRoom

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a snapshot) without its room: what the handler holds is its state,
        its metadata and its own attributes."""
        d = dict(self.__dict__)
        d.pop("_room", None)
        return d

    # -- what the hooks may use -------------------------------------------------------

    @property
    def name(self) -> str:
        """The room's name."""
        return self._room.name

    @property
    def clock(self) -> float:
        """Room time in seconds: ticks run times the tick interval (the same on every edge)."""
        return self._room.ticks / self.tick_rate

    @property
    def tick(self) -> int:
        """Ticks run so far."""
        return self._room.ticks

    @property
    def random(self) -> random.Random:
        """The room's seeded random source (use it, never the global one)."""
        return self._room.rng

    @property
    def players(self) -> dict[str, Player]:
        """The players in the room, by id (read only: do not change it)."""
        return self._room.players

    def broadcast(self, kind: str, payload: Any = None, *,
                  exclude: str | None = None) -> None:
        """Send a ROOM_EVENT to every player (but ``exclude``), after this tick's patch."""
        self._room.event(None, kind, payload, exclude)

    def send(self, player_id: str, kind: str, payload: Any = None) -> None:
        """Send a ROOM_EVENT to one player, after this tick's patch."""
        self._room.event(player_id, kind, payload, None)

    def set_timer(self, delay: float, callback: Any, *args: Any) -> int:
        """Call ``callback(*args)`` at the first tick at least ``delay`` seconds of room
        time from now; returns an id for :meth:`cancel_timer`."""
        return self._room.timers.add(self._room.ticks, delay, self.tick_rate, callback, args)

    def cancel_timer(self, timer_id: int) -> None:
        """Forget a timer (no error if it already ran)."""
        self._room.timers.cancel(timer_id)

    def resync(self, player_id: str) -> None:
        """Send ``player_id`` its whole view again at the next patch: call it when what
        :meth:`visible` answers for that player changed (fog of war moved)."""
        self._room.want_full.add(player_id)

    # -- the hooks --------------------------------------------------------------------

    def on_create(self, options: dict[str, Any]) -> None:
        """The room starts; ``options`` are the first joiner's.  Set ``self.state``."""

    def on_join_attempt(self, player: Player, options: dict[str, Any]) -> None:
        """Accept (return) or refuse (raise :class:`JoinRefused`) a joining client."""

    def on_join(self, player: Player) -> None:
        """``player`` is in: it gets the full state after this hook."""

    def on_message(self, player: Player, kind: str, payload: Any) -> None:
        """An input from ``player``; raise :class:`InputRejected` to refuse it."""

    def on_tick(self, dt: float) -> None:
        """Advance the simulation by ``dt`` seconds (always ``1 / tick_rate``)."""

    def on_leave(self, player: Player) -> None:
        """``player`` left (or its session ended)."""

    def on_dispose(self) -> None:
        """The room ends (its last player left, or the edge stops)."""

    def visible(self, player: Player, path: Path) -> bool:
        """Whether ``player`` sees the state at ``path`` (and below it).  Asked for every
        changed path and, for a full state, for every node: keep it cheap.  The default
        shows everything (one patch encoding shared by all players)."""
        return True
