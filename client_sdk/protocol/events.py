"""Events the client protocol core (:mod:`.connection`) reports to its driver.

Each event is a small immutable record; the driver (the asyncio
:class:`client_sdk.Client`, or a test) takes them from
:meth:`ClientConnection.events` and dispatches on their type.  A delivered
MESSAGE is reported as the :class:`~.messages.Message` frame itself (the hot
path builds no wrapper).

Errors carried by events are SDK exceptions (:mod:`client_sdk.errors`): the
mapping from an ERROR frame's code to an exception class happens once, in the
core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .delivery import Dropped
from .errors import ProtocolError, UnknownMessageType
from .messages import Frame, Member, Message

if TYPE_CHECKING:
    from ..errors import EdgeRelayError

__all__ = [
    "Event",
    "FrameIgnored",
    "FrameReceived",
    "HandoffRequested",
    "KeepaliveTimeout",
    "NeighboursChanged",
    "PingFailed",
    "PongReceived",
    "PresenceEvent",
    "PublishAcked",
    "PublishFailed",
    "RecoveryEvent",
    "RequestAnswered",
    "RequestFailed",
    "ServerNotice",
]


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A member joined (``joined=True``) or left a room; ``lost``: it left because its
    connection ended without a normal close (its session may be resuming)."""

    room: str
    joined: bool
    member: Member
    lost: bool = False


@dataclass(frozen=True, slots=True)
class RecoveryEvent:
    """Outcome of resuming one room after a reconnect.

    ``recovered=True``: every reliable message published while the client was
    away has been (or is being) delivered, in order, ``replayed`` of them from
    history.  ``recovered=False``: some may be missing; ``reason`` says why
    (``history_trimmed``, ``session_expired``, ``too_many``, ...) and ``info``
    what is known (e.g. ``first_available`` position).  ``position`` is where
    the client resumed from.
    """

    room: str
    recovered: bool
    position: tuple[int, int]
    replayed: int
    reason: str
    info: dict[str, object]


@dataclass(frozen=True, slots=True)
class RequestAnswered:
    """The request ``req_id`` got its reply (JOINED, ACK, PRESENCE_MEMBERS)."""

    req_id: int
    reply: Frame


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """The request ``req_id`` failed: ERROR frame, timeout, connection lost or closed."""

    req_id: int
    error: EdgeRelayError


@dataclass(frozen=True, slots=True)
class PublishAcked:
    """The reliable publish ``idem`` is durable at ``position``; it left the outbox."""

    idem: int
    position: tuple[int, int]


@dataclass(frozen=True, slots=True)
class PublishFailed:
    """The reliable publish ``idem`` left the outbox without an ACK (refused,
    timed out, or the client closed)."""

    idem: int
    error: EdgeRelayError


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The PONG for the ping ``stamp`` came back after ``rtt`` seconds."""

    stamp: int
    rtt: float


@dataclass(frozen=True, slots=True)
class PingFailed:
    """The ping ``stamp`` got no PONG (timeout or connection lost)."""

    stamp: int
    error: EdgeRelayError


@dataclass(frozen=True, slots=True)
class ServerNotice:
    """An ERROR frame not tied to a pending request (e.g. rate-limited unreliable publishes)."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class HandoffRequested:
    """The edge drains: move to ``url`` (make before break) within ``deadline_ms``."""

    url: str
    reason: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class NeighboursChanged:
    """The edge's list of neighbours to fail over to changed (best first)."""

    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeepaliveTimeout:
    """Protocol keepalive: nothing came back within ``ping_timeout`` of a PING.

    The link is presumed dead; the driver drops it (no close handshake) and
    reconnects as after a cut.  Only emitted when the core's keepalive is on.
    """

    silent_for: float


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A well-formed frame the core does not handle itself (device frames, ...).

    The driver passes it to the handlers registered for its type.
    """

    frame: Frame


@dataclass(frozen=True, slots=True)
class FrameIgnored:
    """Bytes from the edge that could not be used: undecodable, or a frame type
    this version does not know (``type_id``; 0 when unknown).  Nothing else
    happened: pending requests and publishes are untouched."""

    reason: str
    type_id: int = 0

    @classmethod
    def from_error(cls, exc: ProtocolError) -> FrameIgnored:
        """The event for bytes the decoder refused with ``exc``."""
        return cls(str(exc), exc.type_id if isinstance(exc, UnknownMessageType) else 0)


Event = (
    Message
    | RequestAnswered
    | RequestFailed
    | PublishAcked
    | PublishFailed
    | PongReceived
    | PingFailed
    | ServerNotice
    | HandoffRequested
    | NeighboursChanged
    | RecoveryEvent
    | PresenceEvent
    | KeepaliveTimeout
    | FrameReceived
    | FrameIgnored
    | Dropped
)
