"""Presence: who is in a room, here and on the other edges.

A join or leave is told to this edge's presence watchers of the room, to the other
edges (a live event through the store), to the store's member set and to the origin
(uplink); a member list is this edge's members merged with the store's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Member, PresenceJoin, PresenceLeave, encode
from edge_node.runtime.tasks import spawn
from edge_node.store.base import RoomStore, StoreUnavailable
from edge_node.store.records import LIVE_PRESENCE_JOIN, LIVE_PRESENCE_LEAVE

if TYPE_CHECKING:
    from edge_node.fanout.room import Room

__all__ = ["announce", "members_of", "presence_event", "relay_presence"]

log = logging.getLogger("edge_node.fanout.hub")


def announce(store: RoomStore, uplink: Any, room: Room, m: Member, joined: bool,
             lost: bool = False) -> None:
    """Tell everyone who should know that ``m`` joined (or left) ``room``; ``lost``: it
    left because its connection ended without a normal close (it may be resuming)."""
    data = encode(PresenceJoin(room.name, m) if joined else PresenceLeave(room.name, m, lost))
    for w in room.watchers:
        if w.session_id != m.session_id:
            w.send(data)
    if uplink is not None:
        uplink.submit("presence", room.name, {"member": m.session_id, "subject": m.subject,
                                              "online": joined})
    body: list[Any] = [m.session_id, m.subject, m.kind]
    store.publish_live(room.name, LIVE_PRESENCE_JOIN if joined else LIVE_PRESENCE_LEAVE,
                       [[*body, True] if lost else body])
    if joined:
        spawn(store.add_member(room.name, m.session_id, body))
    else:
        spawn(store.remove_member(room.name, m.session_id))


def relay_presence(room: Room, joined: bool, member: list[Any]) -> None:
    """Tell ``room``'s watchers here of a join or leave on another edge (the live
    event's ``[session_id, subject, kind, lost?]``)."""
    m = Member(*member[:3])
    ev = PresenceJoin(room.name, m) if joined else PresenceLeave(
        room.name, m, len(member) > 3 and member[3] is True)
    data = encode(ev)
    for w in room.watchers:
        w.send(data)


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
