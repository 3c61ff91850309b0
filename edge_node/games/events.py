"""Events into a :class:`~edge_node.games.room.GameRoom` and the commands it returns.

Inputs (join, leave, message) are entries of the room's stream: the driver feeds them
in stream order with their position, and the room applies them at its next tick, so a
room fed the same entries reaches the same state anywhere.  Each tick that applied
inputs (and at least every ``mark_every`` ticks) is closed by a ``$tick`` entry of the
stream (:class:`Mark`): replaying a room's entries after a snapshot (:class:`TickMark`
for each ``$tick``) applies every input at the tick it was applied live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Start", "JoinInput", "LeaveInput", "MessageInput", "Resync", "Timer", "TickTime",
    "Stop", "TickMark", "GoLive", "GameEvent",
    "Deliver", "JoinVerdict", "InputError", "RoomFailed", "Disposed", "Mark", "SnapshotDue",
    "GameCommand",
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
    """The room stops here.  ``moved``: it goes on elsewhere (ownership moved, the
    edge is stopping): ``on_dispose`` is not called; else the room is over (its last
    player left)."""

    reason: str = ""
    moved: bool = False


@dataclass(frozen=True, slots=True)
class TickMark:
    """Replay only: the room's owner ran tick ``tick`` here (a ``$tick`` stream entry):
    run the ticks up to it, applying the inputs fed since the last mark at ``tick``."""

    tick: int


@dataclass(frozen=True, slots=True)
class GoLive:
    """Replay done: tick on from here.  ``epoch`` is the new owner's lease epoch (a
    room restored after a crash numbers its state versions from ``epoch << 32``)."""

    epoch: int = 0


GameEvent = (Start | JoinInput | LeaveInput | MessageInput | Resync | Timer | TickTime | Stop
             | TickMark | GoLive)


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


@dataclass(frozen=True, slots=True)
class Mark:
    """Append a ``$tick`` entry for ``tick`` to the room's stream now (before any input
    fed later): the inputs before it and after the previous mark were applied at
    ``tick``."""

    tick: int


@dataclass(frozen=True, slots=True)
class SnapshotDue:
    """Time to store a snapshot of the room
    (:func:`~edge_node.games.continuity.capture`) covering the stream up to the last
    :class:`Mark`."""


GameCommand = Deliver | JoinVerdict | InputError | RoomFailed | Disposed | Mark | SnapshotDue
