"""One room on this edge as the hub sees it: its members, their join flags, and the
fan-out targets derived from them (:meth:`Room.rebuild` after every change), next to
the room's machine.

Members with the ``all`` delivery policy (their own, or the room's ``delivery``
default) are the fast fan-out targets (``framed``, ``bodies``); the others are
``policied`` and served through their sink's
:meth:`~edge_node.transports.outbound.Outbound.push_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from client_sdk.protocol import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    Delivery,
    MalformedFrame,
    Member,
    delivery_of,
    room_allowed,
)
from edge_node.rooms.machine import RoomMachine
from edge_node.transports.outbound import FrameSink, Outbound

__all__ = ["Machine", "Room", "SessionLike", "default_delivery"]


class SessionLike(Protocol):
    """What the hub needs from a client session."""

    session_id: str
    member: Member
    out: FrameSink
    closed: bool

    def send(self, data: bytes) -> None: ...


Machine = RoomMachine[SessionLike]


def default_delivery(rules: tuple[tuple[str, Delivery], ...], name: str) -> Delivery:
    """Room ``name``'s default delivery policy: that of the first ``(pattern, policy)``
    rule whose pattern matches, else ``all``."""
    for pattern, policy in rules:
        if room_allowed((pattern,), name):
            return policy
    return Delivery.ALL


@dataclass(slots=True)
class Room:
    """One room on this edge: its members (the fan-out targets) and its machine."""

    name: str
    machine: Machine
    members: dict[str, SessionLike] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    no_echo: set[str] = field(default_factory=set)
    watchers: list[SessionLike] = field(default_factory=list)
    #: Fan-out targets: sinks that take shared WebSocket frames, and the others.
    framed: list[tuple[str, Outbound]] = field(default_factory=list)
    bodies: list[tuple[str, FrameSink]] = field(default_factory=list)
    #: Members with another delivery policy: (session id, sink, policy).
    policied: list[tuple[str, FrameSink, Delivery]] = field(default_factory=list)
    #: The policy of members whose JOIN left it to the room.
    delivery: Delivery = Delivery.ALL
    #: A game room: its stream entries are inputs for the handler, not messages.
    game: bool = False

    @property
    def mine(self) -> bool:
        """True while this edge assigns the room's positions."""
        return self.machine.mine

    @property
    def owner(self) -> str:
        """The edge that owns the room, as last known here."""
        return self.machine.owner

    def policy(self, session_id: str) -> Delivery:
        """The delivery policy of member ``session_id``: its own, else the room's (also
        for flags naming none: JOIN and resume refuse those before a member is added)."""
        try:
            return delivery_of(self.flags.get(session_id, 0)) or self.delivery
        except MalformedFrame:
            return self.delivery

    def rebuild(self) -> None:
        """Recompute the fan-out target lists after a membership change."""
        self.framed, self.bodies, self.policied, self.watchers = [], [], [], []
        self.no_echo = set()
        for sid, s in self.members.items():
            self._place(sid, s, self.policy(sid))

    def _place(self, sid: str, s: SessionLike, policy: Delivery) -> None:
        """Put member ``sid`` at the end of each target list it belongs to."""
        out = s.out
        if policy is not Delivery.ALL:
            self.policied.append((sid, out, policy))
        elif out.framed and isinstance(out, Outbound):
            self.framed.append((sid, out))
        elif not out.framed:
            self.bodies.append((sid, out))
        flags = self.flags.get(sid, 0)
        if flags & JOIN_PRESENCE:
            self.watchers.append(s)
        if flags & JOIN_NO_ECHO:
            self.no_echo.add(sid)

    def add(self, s: SessionLike, flags: int) -> None:
        """``s`` is a member now, joined with ``flags`` (``JOIN_*``); with a delivery
        policy other than ``all`` its sink keeps the kernel's share of its queue small
        (:meth:`~edge_node.transports.outbound.Outbound.bound_kernel_buffer`).  A new
        member is placed at the end of the lists, where :meth:`rebuild` would put it:
        no pass over every member per join (a resume storm joins thousands)."""
        sid = s.session_id
        again = sid in self.members
        self.members[sid] = s
        self.flags[sid] = flags
        policy = self.policy(sid)
        if policy is not Delivery.ALL:
            s.out.bound_kernel_buffer()
        if again:
            self.rebuild()
        else:
            self._place(sid, s, policy)

    def remove(self, session_id: str) -> bool:
        """``session_id`` is no longer a member (nor waiting for the stream to catch up
        with its replay); False if it was not a member.  What its sink still holds of
        this room under a delivery policy is dropped (it left)."""
        s = self.members.pop(session_id, None)
        if s is None:
            return False
        if self.policy(session_id) is not Delivery.ALL:
            s.out.forget_held(self.name)
        self.flags.pop(session_id, None)
        self.machine.catchup.pop(session_id, None)
        self.rebuild()
        return True
