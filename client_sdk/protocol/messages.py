"""Frame types of the wire protocol (version 1).

Each frame is a msgpack array whose first element is the type number; the
order of the remaining elements is given in each class's docstring and in
``docs/protocol.md``.  ``req_id`` is a client-chosen unsigned integer, unique
among the client's in-flight requests; replies (JOINED, ACK, PRESENCE_MEMBERS,
ERROR) echo it.

Positions: every reliable message in a room has a position ``(epoch, seq)``
assigned by the room's owner edge.  ``seq`` grows by one per message within an
epoch; a new owner starts a new, larger epoch.  Unreliable messages carry
``(0, 0)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .delivery import Dropped
from .function_frames import Rpc, RpcResult
from .room_frames import (
    History,
    HistoryPage,
    RoomEvent,
    RoomList,
    RoomListing,
    RoomPatch,
    RoomResync,
    RoomStateFrame,
)
from .token_frames import Refresh, Refreshed

__all__ = [
    "MessageType",
    "Member",
    "Hello",
    "Welcome",
    "Join",
    "Joined",
    "Leave",
    "Publish",
    "Message",
    "Ack",
    "PresenceJoin",
    "PresenceLeave",
    "PresenceList",
    "PresenceMembers",
    "Ping",
    "Pong",
    "Error",
    "Resume",
    "Resumed",
    "Handoff",
    "Neighbours",
    "Telemetry",
    "TelemetryAck",
    "TelemetryError",
    "Command",
    "CommandAck",
    "ReportState",
    "ShadowDelta",
    "Frame",
    "JOIN_PRESENCE",
    "JOIN_NO_ECHO",
]


class MessageType(enum.IntEnum):
    """Type numbers.  16 (RESUME) is reserved."""

    HELLO = 1
    WELCOME = 2
    JOIN = 3
    JOINED = 4
    LEAVE = 5
    PUBLISH = 6
    MESSAGE = 7
    ACK = 8
    PRESENCE_JOIN = 9
    PRESENCE_LEAVE = 10
    PRESENCE_LIST = 11
    PRESENCE_MEMBERS = 12
    PING = 13
    PONG = 14
    ERROR = 15
    RESUME = 16
    RESUMED = 17
    HANDOFF = 18
    NEIGHBOURS = 19
    TELEMETRY = 20
    TELEMETRY_ACK = 21
    TELEMETRY_ERROR = 22
    COMMAND = 23
    COMMAND_ACK = 24
    REPORT_STATE = 25
    SHADOW_DELTA = 26
    ROOM_STATE = 27
    ROOM_PATCH = 28
    ROOM_EVENT = 29
    ROOM_RESYNC = 30
    ROOM_LIST = 31
    ROOM_LISTING = 32
    HISTORY = 33
    HISTORY_PAGE = 34
    RPC = 35
    RPC_RESULT = 36
    REFRESH = 37
    REFRESHED = 38
    DROPPED = 39


#: JOIN flag: deliver presence join/leave events for this room.
JOIN_PRESENCE = 1
#: JOIN flag: do not deliver this client's own publishes back to it.
JOIN_NO_ECHO = 2
#: JOIN flags bits 2-4 hold the delivery policy: see :mod:`.delivery`.


@dataclass(frozen=True, slots=True)
class Member:
    """A room member as seen by presence: ``[session_id, subject, kind]``."""

    session_id: str
    subject: str
    kind: str


@dataclass(frozen=True, slots=True)
class Hello:
    """Client → edge, first frame: ``[1, version, token, client_name, resume]``.

    ``resume`` is ``None`` for a new session, or a map to continue one:
    ``{"sid": session_id, "rt": resume_token, "rooms": {room: [flags, epoch, seq]}}``
    with the last position the client received in each room.
    """

    version: int
    token: str
    client_name: str = ""
    resume: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Edge → client, answer to HELLO: ``[2, session_id, edge_id, info]``.

    ``info`` is a map with at least ``ping_interval`` (seconds),
    ``max_frame_bytes``, ``max_rooms`` and ``neighbours`` (list of URLs).
    """

    session_id: str
    edge_id: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Join:
    """Client → edge: ``[3, req_id, room, flags, options?]``; answered by JOINED or
    ERROR.  ``flags``: ``JOIN_*`` bits and the delivery policy (:mod:`.delivery`).
    ``options`` (a map, omitted on the wire when empty) go to a game room's join
    hooks; plain rooms ignore them."""

    req_id: int
    room: str
    flags: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Joined:
    """Edge → client: ``[4, req_id, room, epoch, seq]``: the room's current position."""

    req_id: int
    room: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Leave:
    """Client → edge: ``[5, req_id, room]``; answered by ACK ``(0, 0)`` or ERROR."""

    req_id: int
    room: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Client → edge: ``[6, req_id, room, payload, reliable, idem, key?]``.

    A reliable publish is answered by ACK with its position (or ERROR).  An
    unreliable publish is answered only if it fails and ``req_id`` is not 0.
    ``idem`` is the publisher's idempotency key (0 = none); the edge drops a
    reliable publish whose key it has already seen from the same subject.
    ``key`` (omitted on the wire when empty) names what an unreliable update is
    about, e.g. an entity id: subscribers with the ``latest`` delivery policy get
    the newest update of each key (:mod:`.delivery`).
    """

    req_id: int
    room: str
    payload: bytes
    reliable: bool = True
    idem: int = 0
    key: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """Edge → client: ``[7, room, epoch, seq, sender, payload, idem?]``.

    ``sender`` is the publisher's session id (stable across resume) and
    ``idem`` its idempotency key (omitted on the wire when 0): the pair names
    the message, so a client can drop a copy re-published after a failover.
    Unreliable: ``epoch == seq == 0``.
    """

    room: str
    epoch: int
    seq: int
    sender: str
    payload: bytes
    idem: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """Edge → client: ``[8, req_id, epoch, seq]``.

    For a reliable PUBLISH the ACK means *durable*: the message is in the
    room's history in Redis (or, on an edge without Redis, accepted).
    """

    req_id: int
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """Edge → client: ``[9, room, member]`` (member as ``[session_id, subject, kind]``)."""

    room: str
    member: Member


@dataclass(frozen=True, slots=True)
class PresenceLeave:
    """Edge → client: ``[10, room, member, lost?]``.  ``lost`` (optional, default
    false): the member's connection ended without a normal close, so its session may
    be resuming (the SDK holds such a leave for a grace period)."""

    room: str
    member: Member
    lost: bool = False


@dataclass(frozen=True, slots=True)
class PresenceList:
    """Client → edge: ``[11, req_id, room]``; answered by PRESENCE_MEMBERS."""

    req_id: int
    room: str


@dataclass(frozen=True, slots=True)
class PresenceMembers:
    """Edge → client: ``[12, req_id, room, [member, ...]]``."""

    req_id: int
    room: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """Either direction: ``[13, stamp]``; the peer answers PONG with the same stamp."""

    stamp: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Either direction: ``[14, stamp]``."""

    stamp: int


@dataclass(frozen=True, slots=True)
class Error:
    """Edge → client: ``[15, req_id, code, message]`` (``req_id`` 0: not tied to a request)."""

    req_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Reserved: ``[16, ...]`` (session resume, filled in by the recovery work)."""

    body: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Resumed:
    """Edge → client, once per room after a resume:
    ``[17, room, recovered, epoch, seq, replayed, reason, info]``.

    ``(epoch, seq)`` is the position the client resumed from and ``replayed``
    the number of MESSAGE frames that follow (in order, before live traffic).
    ``recovered`` is true when nothing is missing; false when the gap is not
    (or no longer) in history: ``reason`` says why and ``info`` what is known
    (e.g. ``first_available``: the oldest position still in history).
    """

    room: str
    recovered: bool
    epoch: int
    seq: int
    replayed: int
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Handoff:
    """Edge → client: ``[18, url, reason, deadline_ms]``: move to ``url`` now.

    Sent while an edge drains.  The client opens a connection to ``url`` and
    resumes its session there *before* closing this one (make before break);
    this connection keeps delivering meanwhile.  ``deadline_ms`` is how long
    the edge will wait before closing this connection itself.
    """

    url: str
    reason: str = "drain"
    deadline_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class Neighbours:
    """Edge → client: ``[19, [url, ...]]``: other edges to fail over to, best first.

    Also carried in WELCOME ``info["neighbours"]``; this frame refreshes the
    list when the set of live edges changes.
    """

    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Device → edge: ``[20, batch_id, [[metric, value, ts_ms], ...]]``.

    ``batch_id`` is unique per device (the SDK counts up from its start time in
    µs) and names the batch across reconnects and edges: a re-sent batch is
    recognised and counted once.  Samples are kept as decoded (tuples when the
    sample is an array); their shape, types and ranges are checked by the
    edge's telemetry validator, which rejects single samples, not the batch.
    Answered by TELEMETRY_ERROR (if any sample was refused) and, once the
    accepted samples are durable, TELEMETRY_ACK.
    """

    batch_id: int
    samples: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TelemetryAck:
    """Edge → device: ``[21, batch_id, accepted, rejected]``: the batch is done.

    ``accepted`` samples are durable (in Redis, or accepted by an edge without
    Redis); the device may forget the batch.
    """

    batch_id: int
    accepted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class TelemetryError:
    """Edge → device: ``[22, batch_id, [[index, reason, message], ...]]``.

    One entry per refused sample (``index`` into the batch); ``reason`` is one
    of ``bad_sample``, ``unknown_metric``, ``bad_type``, ``out_of_range``,
    ``too_old``, ``too_new``.
    """

    batch_id: int
    errors: tuple[tuple[int, str, str], ...]


@dataclass(frozen=True, slots=True)
class Command:
    """Edge → device: ``[23, command_id, name, args, expires_ms]``.

    May arrive more than once (at-least-once downlink): deduplicate by
    ``command_id``.  ``expires_ms`` is Unix milliseconds.
    """

    command_id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    expires_ms: int = 0


@dataclass(frozen=True, slots=True)
class CommandAck:
    """Device → edge: ``[24, command_id, status, result]`` (status e.g. ``done``)."""

    command_id: str
    status: str = "done"
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReportState:
    """Device → edge: ``[25, req_id, version, state]``.

    ``version`` must be greater than the reported version the edge knows, else
    ERROR 4408 (stale version; the message names the current one).  Answered
    by ACK ``(0, version)``.
    """

    req_id: int
    version: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ShadowDelta:
    """Edge → device: ``[26, version, desired_version, delta, command_id]``.

    ``delta``: desired fields that differ from the reported state.  Sent on
    connect whenever the edge holds the device's shadow (``delta`` may be empty: it
    tells the device the reported ``version`` the edge holds), whenever desired
    changes, and just before an ERROR 4408 (stale reported version); ``command_id``
    names the ``desired`` command that carried the change ("" otherwise), which the
    SDK acknowledges.
    """

    version: int
    desired_version: int
    delta: dict[str, Any]
    command_id: str = ""


Frame = (
    Hello
    | Welcome
    | Join
    | Joined
    | Leave
    | Publish
    | Message
    | Ack
    | PresenceJoin
    | PresenceLeave
    | PresenceList
    | PresenceMembers
    | Ping
    | Pong
    | Error
    | Resume
    | Resumed
    | Handoff
    | Neighbours
    | Telemetry
    | TelemetryAck
    | TelemetryError
    | Command
    | CommandAck
    | ReportState
    | ShadowDelta
    | RoomStateFrame
    | RoomPatch
    | RoomEvent
    | RoomResync
    | RoomList
    | RoomListing
    | History
    | HistoryPage
    | Rpc
    | RpcResult
    | Refresh
    | Refreshed
    | Dropped
)
