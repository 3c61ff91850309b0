"""Presence: who is in a room, here and on the other edges.

A join or leave is told to this edge's presence watchers of the room, to the other
edges (a live event through the store), to the store's member set and to the origin
(uplink); a member list is this edge's members merged with the store's.

A member whose connection ended without a normal close may be resuming: the clients
are told at once (a PRESENCE_LEAVE with ``lost`` set: the SDK shows the member as
reconnecting for its own grace), but the **record** of the leave (the store's member
set, the origin's presence, the functions' ``presence`` event) is held for the edge's
presence grace (:class:`LeaveGrace`) and made only if the session has not come back
by then, here (it joins the room again) or on another edge (its join arrives as a
live event).  A blip never shows in the origin's view or to a function as a leave and
a join.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Member, PresenceJoin, PresenceLeave, encode
from edge_node.runtime.tasks import spawn
from edge_node.store.base import RoomStore, StoreUnavailable
from edge_node.store.records import LIVE_PRESENCE_JOIN, LIVE_PRESENCE_LEAVE

if TYPE_CHECKING:
    from edge_node.fanout.hub import Hub
    from edge_node.fanout.room import Room, SessionLike

__all__ = ["announce", "record", "members_of", "presence_event", "relay_presence",
           "LeaveGrace", "HeldLeave", "PresenceTeller"]

log = logging.getLogger("edge_node.fanout.hub")


def announce(store: RoomStore, room: str, watchers: Iterable[SessionLike], m: Member,
             joined: bool, lost: bool = False) -> None:
    """Tell the clients that ``m`` joined (or left) ``room``: its presence ``watchers``
    here and, through a live event, those on the other edges; ``lost``: it left because
    its connection ended without a normal close (it may be resuming)."""
    _tell_watchers(room, watchers, m, joined, lost, skip=m.session_id)
    body = _body(m)
    store.publish_live(room, LIVE_PRESENCE_JOIN if joined else LIVE_PRESENCE_LEAVE,
                       [[*body, True] if lost else body])


def _tell_watchers(room: str, watchers: Iterable[SessionLike], m: Member, joined: bool,
                   lost: bool, skip: str | None = None) -> None:
    """PRESENCE_JOIN or PRESENCE_LEAVE to ``watchers`` (not to session ``skip``)."""
    data = encode(PresenceJoin(room, m) if joined else PresenceLeave(room, m, lost))
    for w in watchers:
        if w.session_id != skip:
            w.send(data)


def _body(m: Member) -> list[Any]:
    """``m`` as the store and the live events carry it."""
    return [m.session_id, m.subject, m.kind]


def record(store: RoomStore, uplink: Any, functions: Any, room: str, m: Member,
           joined: bool) -> None:
    """Record that ``m`` joined (or left) ``room``: the store's member set, the origin
    (``uplink``), the edge's functions (a ``FunctionHost``); each may be None."""
    if joined:
        spawn(store.add_member(room, m.session_id, _body(m)))
    else:
        spawn(store.remove_member(room, m.session_id))
    if uplink is not None:
        uplink.submit("presence", room, {"member": m.session_id, "subject": m.subject,
                                         "online": joined})
    if functions is not None:
        presence_event(functions, room, m, joined)


def relay_presence(room: Room, joined: bool, member: list[Any]) -> None:
    """Tell ``room``'s watchers here of a join or leave on another edge (the live
    event's ``[session_id, subject, kind, lost?]``)."""
    _tell_watchers(room.name, room.watchers, Member(*member[:3]), joined,
                   len(member) > 3 and member[3] is True)


def presence_event(functions: Any, room: str, m: Member, joined: bool) -> None:
    """Tell the edge's functions (a ``FunctionHost``) that ``m`` joined or left."""
    functions.emit("presence", room, {"session": m.session_id, "subject": m.subject,
                                      "kind": m.kind, "joined": joined})


async def members_of(store: RoomStore, room: Room | None, name: str) -> list[Member]:
    """Members of room ``name`` on this edge (``room``; None: none here) and, via the
    store, on the others; this edge's alone (and a warning) when the store is away."""
    local = {sid: s.member for sid, s in room.members.items()} if room else {}
    try:
        for sid, subject, kind, _edge in await store.members(name):
            local.setdefault(sid, Member(sid, subject, kind))
    except StoreUnavailable as exc:
        log.warning("presence from other edges unavailable",
                    extra={"room": name, "error": str(exc)})
    return sorted(local.values(), key=lambda m: m.session_id)


@dataclass(frozen=True, slots=True)
class HeldLeave:
    """The leave of ``member`` from ``room``, held until ``due`` (loop time)."""

    room: str
    member: Member
    due: float


class LeaveGrace:
    """Leaves of members whose connection was lost, held for ``grace`` seconds
    (sans-I/O: ``now`` passed in; the hub's tick takes :meth:`due` ones and tells them).

    :meth:`hold` a lost member's leave; :meth:`cancel` it when the session joins the
    room again (here, or a live join from another edge); :meth:`holds` says whether a
    room still waits on one (it stays active meanwhile, to hear that join).
    ``grace`` 0: nothing is held (leaves are told at once).
    """

    def __init__(self, grace: float) -> None:
        if grace < 0:
            raise ValueError("presence grace must be >= 0")
        self.grace = grace
        self._held: dict[tuple[str, str], HeldLeave] = {}
        self._rooms: Counter[str] = Counter()  # held leaves per room
        #: Leaves that never had to be told: the session came back in time.
        self.cancelled = 0

    def hold(self, room: str, member: Member, now: float) -> bool:
        """Hold ``member``'s leave of ``room``; False (tell it now) when the grace is 0."""
        if self.grace <= 0:
            return False
        key = (room, member.session_id)
        if key not in self._held:
            self._rooms[room] += 1
        self._held[key] = HeldLeave(room, member, now + self.grace)
        return True

    def cancel(self, room: str, session_id: str) -> bool:
        """The session is back in ``room``: True if its leave was held (and is dropped;
        its join need not be told either)."""
        if self._held.pop((room, session_id), None) is None:
            return False
        self._release(room)
        self.cancelled += 1
        return True

    def holds(self, room: str) -> bool:
        """True while a leave of ``room`` is held."""
        return room in self._rooms

    def due(self, now: float) -> list[HeldLeave]:
        """The held leaves whose grace ended by ``now``, no longer held: tell them."""
        out = [h for h in self._held.values() if h.due <= now]
        for h in out:
            del self._held[(h.room, h.member.session_id)]
            self._release(h.room)
        return out

    def _release(self, room: str) -> None:
        self._rooms[room] -= 1
        if self._rooms[room] <= 0:
            del self._rooms[room]

    def next_deadline(self) -> float | None:
        """When the next held leave is due (None: none held)."""
        return min((h.due for h in self._held.values()), default=None)

    def clear(self) -> list[HeldLeave]:
        """Every held leave, no longer held (tell them now: e.g. the edge drains)."""
        out, self._held = list(self._held.values()), {}
        self._rooms.clear()
        return out


class PresenceTeller:
    """How the hub tells and records joins and leaves (see the module docstring): the
    record of a lost member's leave is held for the grace and dropped, with the record
    of the join that ends it, when the session comes back in time.  Nothing is held
    while the edge drains or with a grace of 0."""

    def __init__(self, hub: Hub, grace: float = 0.0) -> None:
        self.hub = hub
        self.grace = LeaveGrace(grace)
        self._back: set[str] = set()  # rooms whose held leave a remote join ended

    def joined(self, room: Room, m: Member) -> None:
        """``m`` joined ``room`` here (a new member, or a session resuming)."""
        hub = self.hub
        announce(hub.store, room.name, room.watchers, m, True)
        if self.grace.cancel(room.name, m.session_id):
            spawn(hub.store.add_member(room.name, m.session_id, _body(m)))
        else:
            record(hub.store, hub.uplink, hub.functions, room.name, m, True)

    def left(self, room: Room, m: Member, lost: bool, now: float) -> None:
        """``m`` left ``room`` here (``lost``: its connection ended without a close)."""
        hub = self.hub
        announce(hub.store, room.name, room.watchers, m, False, lost)
        if not (lost and not hub.draining and self.grace.hold(room.name, m, now)):
            record(hub.store, hub.uplink, hub.functions, room.name, m, False)

    def remote_joined(self, room: str, session_id: str) -> None:
        """A live join from another edge: it ends a leave held here (the session
        resumed there, and that edge recorded the join)."""
        if self.grace.cancel(room, session_id):
            self._back.add(room)

    def tick(self, now: float) -> set[str]:
        """Record the leaves whose grace ended (all of them while draining); the rooms
        that no longer wait on a held leave, to release if empty."""
        out, self._back = self._back, set()
        hub = self.hub
        for h in (self.grace.clear() if hub.draining else self.grace.due(now)):
            record(hub.store, hub.uplink, hub.functions, h.room, h.member, False)
            out.add(h.room)
        return {r for r in out if not self.grace.holds(r)}
