"""What goes into a :class:`~edge_node.rooms.machine.RoomMachine` (events) and what comes
out (commands).  Plain dataclasses, never changed once made (not ``frozen``: a frozen
dataclass's ``__init__`` costs several times more, and one event and a few commands are
made per publish): no I/O, no clock.

Events are facts the driver observed (a store reply, a frame from a client, a message
read from the room stream, time passing).  Commands are what the driver must do next
(fan a body out to the local members, append to the room stream, forward a publish to
the owner, answer a publisher, ask the store for a lease).  A command that needs an
answer (:class:`Activate`, :class:`LoadRecent`) is answered by feeding the matching
event back (:class:`LeaseResult`, :class:`RecentLoaded`).

``S`` is the driver's session type: the machine stores it in ack waiters and forwarded
publishes and hands it back in :class:`Ack` and :class:`Refuse`, never calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "Pos", "Record",
    # events
    "Event", "LeaseResult", "RunLocal", "RecentLoaded", "LeaseLost", "LeaseAcquired",
    "OwnerChanged", "HandOverStart", "HandOverDone", "HandOverFailed", "Durable",
    "RemoteEntry", "ForwardedPublish", "LocalPublish", "RemoteAck", "Timer", "Emptied",
    "Occupied",
    # commands
    "Command", "Fanout", "Ack", "Refuse", "Append", "Forward", "ForwardAck", "Uplink",
    "Activate", "LoadRecent", "Suspect", "Release",
]

S = TypeVar("S")

#: A position in a room's history: ``(epoch, seq)``.  ``(e, 0)``: epoch ``e`` began,
#: nothing assigned in it yet.
Pos = tuple[int, int]


@dataclass(slots=True)
class Record:
    """One entry of a room's history, as read from the room stream."""

    epoch: int
    seq: int
    sender: str
    payload: bytes
    origin: str  # edge that accepted the publish from its client
    req_id: int
    idem: int


# -- events -------------------------------------------------------------------------


@dataclass(slots=True)
class LeaseResult:
    """The store answered :class:`Activate`: ``owner`` holds the lease at ``epoch``
    (``mine``: this edge).  ``last`` is the room stream's last position; ``queued`` the
    last position this edge still has queued for the stream, if any."""

    owner: str
    epoch: int
    mine: bool
    last: Pos
    queued: Pos | None = None


@dataclass(slots=True)
class RunLocal:
    """The store was unreachable at activation (the hub uses epoch 0: positions
    unsynced, acknowledged at once).  Local first: serve anyway."""

    epoch: int


@dataclass(slots=True)
class RecentLoaded:
    """Answer to :class:`LoadRecent`: the newest stream records (oldest first), to
    rebuild duplicate detection before owning the room.  Empty if unavailable."""

    records: tuple[Record, ...]


@dataclass(slots=True)
class LeaseLost:
    """Fenced: the store says another edge holds the lease now."""


@dataclass(slots=True)
class LeaseAcquired:
    """While mirroring, this edge took the lease (the owner's lapsed, or a draining
    owner handed it here).  ``last``: the stream position read up to before taking it."""

    epoch: int
    last: Pos


@dataclass(slots=True)
class OwnerChanged:
    """Another edge owns the mirrored room now."""

    owner: str


@dataclass(slots=True)
class HandOverStart:
    """Drain: the driver is about to hand the lease to edge ``to``."""

    to: str


@dataclass(slots=True)
class HandOverDone:
    """The lease moved to the edge named in :class:`HandOverStart`."""


@dataclass(slots=True)
class HandOverFailed:
    """The lease did not move; ``still_owner``: the store says it is still ours."""

    still_owner: bool


@dataclass(slots=True)
class Durable:
    """The store holds every record of this room up to ``pos``."""

    pos: Pos


@dataclass(slots=True)
class RemoteEntry:
    """A record read from the room stream (room owned elsewhere)."""

    record: Record


@dataclass(slots=True)
class ForwardedPublish:
    """A publish another edge forwarded here, believing this edge owns the room."""

    sender: str
    payload: bytes
    origin: str
    req_id: int
    idem: int


@dataclass(slots=True)
class LocalPublish(Generic[S]):
    """A reliable publish from a member connected to this edge."""

    session: S
    sender: str
    payload: bytes
    req_id: int
    idem: int


@dataclass(slots=True)
class RemoteAck:
    """The owner recognised a publish we forwarded as a duplicate of ``pos``."""

    sender: str
    req_id: int
    pos: Pos


@dataclass(slots=True)
class Timer:
    """Time passed: ``now`` is at or after :meth:`RoomMachine.next_deadline`."""


@dataclass(slots=True)
class Emptied:
    """The last local member left.  ``hand_to``: the edge is draining and the member
    moved there (the lease goes with it at once); None: keep the room for the linger."""

    draining: bool = False
    hand_to: str | None = None


@dataclass(slots=True)
class Occupied:
    """A member joined an empty (lingering) room."""


Event = (LeaseResult | RunLocal | RecentLoaded | LeaseLost | LeaseAcquired | OwnerChanged
         | HandOverStart | HandOverDone | HandOverFailed | Durable | RemoteEntry
         | ForwardedPublish | LocalPublish[S] | RemoteAck | Timer | Emptied | Occupied)


# -- commands -----------------------------------------------------------------------


@dataclass(slots=True)
class Fanout:
    """Push the encoded MESSAGE ``body`` to every local member except ``skip`` (and the
    sender where it joined without echo)."""

    body: bytes
    sender: str
    reliable: bool
    skip: frozenset[str] | None = None
    #: The message's position (what a ``drop`` subscriber is told it missed).
    pos: tuple[int, int] = (0, 0)


@dataclass(slots=True)
class Ack(Generic[S]):
    """Tell a local publisher its message is durable at ``pos`` (ACK frame)."""

    session: S
    req_id: int
    pos: Pos


@dataclass(slots=True)
class Refuse(Generic[S]):
    """Answer a local publisher with an ERROR frame (``code`` from ErrorCode)."""

    session: S
    req_id: int
    code: int
    text: str


@dataclass(slots=True)
class Append:
    """Queue the record for the room stream at ``(epoch, seq)`` (owner only);
    the store answers with :class:`Durable` (or :class:`LeaseLost`)."""

    epoch: int
    seq: int
    sender: str
    payload: bytes
    origin: str
    req_id: int
    idem: int


@dataclass(slots=True)
class Forward:
    """Send a publish to the owner edge ``to`` (its inbox)."""

    to: str
    sender: str
    payload: bytes
    origin: str
    req_id: int
    idem: int


@dataclass(slots=True)
class ForwardAck:
    """Tell edge ``to`` that its forwarded publish was a duplicate of ``pos``."""

    to: str
    sender: str
    req_id: int
    pos: Pos


@dataclass(slots=True)
class Uplink:
    """Send a durable (or, without a store, assigned) message of an origin-bound room up."""

    pos: Pos
    sender: str
    payload: bytes


@dataclass(slots=True)
class Activate:
    """Ask the store for the lease (or whom to mirror).  ``since``: a fenced owner
    mirrors from just after the last durable position, not from the stream's end."""

    since: Pos | None = None


@dataclass(slots=True)
class LoadRecent:
    """Read the newest ``count`` records (answer: :class:`RecentLoaded`)."""

    count: int


@dataclass(slots=True)
class Suspect:
    """Forwarded publishes wait too long: probe ``owner`` and take its rooms if dead."""

    owner: str


@dataclass(slots=True)
class Release:
    """The room closed here: stop mirroring and give the lease up, or hand it to
    ``hand_to`` (drain)."""

    hand_to: str | None = None


Command = (Fanout | Ack[S] | Refuse[S] | Append | Forward | ForwardAck | Uplink | Activate
           | LoadRecent | Suspect | Release)
