"""Events into a :class:`~edge_node.games.room.GameRoom` and the commands it returns.

Inputs (join, leave, message) are entries of the room's stream: the driver feeds them
in stream order with their position, and the room applies them at its next tick, so a
room fed the same entries reaches the same state anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Start", "JoinInput", "LeaveInput", "MessageInput", "Resync", "Timer", "TickTime",
    "Stop", "GameEvent",
    "Deliver", "JoinVerdict", "InputError", "RoomFailed", "Disposed", "GameCommand",
]

Pos = tuple[int, int]


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Create the handler (``on_create(options)``) and start ticking; ``seed`` seeds
    the room's random source."""

    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class JoinInput:
    """A client asks to join (``edge``: where its session is; ``req_id``: its JOIN's)."""

    player: str
    subject: str
    options: dict[str, Any]
    req_id: int = 0
    edge: str = ""
    pos: Pos = (0, 0)


@dataclass(frozen=True, slots=True)
class LeaveInput:
    """A player left (or its session ended for good)."""

    player: str
    pos: Pos = (0, 0)


@dataclass(frozen=True, slots=True)
class MessageInput:
    """An input from a player: ``kind`` and its decoded ``payload``."""

    player: str
    kind: str
    payload: Any
    size: int = 0
    pos: Pos = (0, 0)


@dataclass(frozen=True, slots=True)
class Resync:
    """A player's mirror is out of step: send it its whole view at once."""

    player: str


@dataclass(frozen=True, slots=True)
class Timer:
    """Time passed: run the tick (and patch) that is due at ``now``."""


@dataclass(frozen=True, slots=True)
class TickTime:
    """The driver measured how long the last tick's hooks took (seconds)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stop:
    """The room ends (last player gone, ownership moved, edge stopping)."""

    reason: str = ""


GameEvent = Start | JoinInput | LeaveInput | MessageInput | Resync | Timer | TickTime | Stop


# -- commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``body`` (an encoded frame) to player ``to``, or to every player when
    ``to`` is None (but ``exclude``)."""

    to: str | None
    body: bytes
    exclude: str | None = None


@dataclass(frozen=True, slots=True)
class JoinVerdict:
    """Answer a join: JOINED (``code`` 0) or ERROR ``code`` with ``text``."""

    player: str
    req_id: int
    edge: str
    code: int = 0
    text: str = ""


@dataclass(frozen=True, slots=True)
class InputError:
    """Tell ``player`` its input was refused (ERROR ``code``); the room goes on."""

    player: str
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class RoomFailed:
    """The handler raised (or blocked): every player gets ERROR ``code``; the room
    takes no more input until it is disposed."""

    code: int
    text: str


@dataclass(frozen=True, slots=True)
class Disposed:
    """The room is over: forget it."""


GameCommand = Deliver | JoinVerdict | InputError | RoomFailed | Disposed
