"""Rooms on one edge: membership, positions, local fan-out, presence.

A room is *owned* here (this edge holds its lease: it assigns positions,
fans out at once and queues the stream append) or *mirrored* (another edge
owns it: publishes are forwarded to the owner, messages arrive from the room
stream and are fanned out locally in the owner's order).

Fan-out encodes once: one msgpack body, one WebSocket frame, the same bytes
pushed to every member's :class:`~edge_node.outbound.Outbound`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from client_sdk.protocol import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    Ack,
    Error,
    ErrorCode,
    Member,
    PresenceJoin,
    PresenceLeave,
    encode,
    encode_message,
)

from .metrics import EdgeMetrics
from .outbound import Outbound, ws_binary_frame
from .room_sync import (
    LIVE_PRESENCE_JOIN,
    LIVE_PRESENCE_LEAVE,
    LIVE_UNRELIABLE,
    Lease,
    RoomSync,
    SyncUnavailable,
)
from .tasks import spawn

__all__ = ["Hub", "Room", "Member", "SessionLike"]

log = logging.getLogger("edge_node.hub")
_pack = msgpack.Packer(use_bin_type=True).pack

#: Seconds a publish forwarded to another edge may wait for its position.
FORWARD_TIMEOUT = 5.0


class SessionLike(Protocol):
    """What the hub needs from a client session."""

    session_id: str
    member: Member
    out: Outbound

    def send(self, data: bytes) -> None: ...


class Room:
    """One room's state on this edge."""

    __slots__ = (
        "epoch", "members", "mine", "name", "no_echo", "owner", "seq", "targets", "watchers",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, SessionLike] = {}
        self.no_echo: set[str] = set()
        self.watchers: list[SessionLike] = []
        self.targets: list[tuple[str, Outbound]] = []
        self.epoch = 0
        self.seq = 0
        self.mine = True
        self.owner = ""

    def rebuild(self, watchers_of: dict[str, int]) -> None:
        """Recompute the fan-out target list after a membership change."""
        self.targets = [(sid, s.out) for sid, s in self.members.items()]
        self.watchers = [s for sid, s in self.members.items()
                         if watchers_of.get(sid, 0) & JOIN_PRESENCE]
        self.no_echo = {sid for sid in self.members if watchers_of.get(sid, 0) & JOIN_NO_ECHO}


class Hub:
    """All rooms of one edge.  ``sync`` is ``None`` for a Redis-less edge."""

    def __init__(self, edge_id: str, metrics: EdgeMetrics) -> None:
        self.edge_id = edge_id
        self.metrics = metrics
        self.stats = metrics.stats
        self.rooms: dict[str, Room] = {}
        self.sync: RoomSync | None = None
        self._flags: dict[str, dict[str, int]] = {}  # room -> session -> join flags
        self._activating: dict[str, asyncio.Future[None]] = {}
        self._forwarded: dict[tuple[str, int], tuple[SessionLike, float]] = {}
        self._observe = metrics.fanout_seconds.observe

    # -- membership ---------------------------------------------------------

    async def join(self, s: SessionLike, name: str, flags: int) -> tuple[int, int]:
        """Add ``s`` to room ``name``; return the room's current position."""
        room = self.rooms.get(name)
        if room is None:
            pending = self._activating.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                room = self.rooms.get(name)
            if room is None:
                room = await self._activate(name)
        room.members[s.session_id] = s
        self._flags.setdefault(name, {})[s.session_id] = flags
        room.rebuild(self._flags[name])
        self._presence(room, s.member, joined=True)
        return room.epoch, room.seq

    async def _activate(self, name: str) -> Room:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._activating[name] = fut
        try:
            room = Room(name)
            if self.sync is not None:
                try:
                    lease = await self.sync.activate(name)
                    self._apply_lease(room, lease)
                except SyncUnavailable as exc:
                    # Local first: keep serving with an unsynced epoch 0.
                    log.warning("room activated without Redis", extra={"room": name,
                                                                       "error": str(exc)})
                    room.mine, room.epoch, room.owner = True, 0, self.edge_id
            else:
                room.mine, room.epoch, room.owner = True, 1, self.edge_id
            self.rooms[name] = room
            self.stats.rooms = len(self.rooms)
            return room
        finally:
            del self._activating[name]
            fut.set_result(None)

    @staticmethod
    def _apply_lease(room: Room, lease: Lease) -> None:
        room.owner = lease.owner_edge
        room.mine = lease.mine
        if lease.mine:
            room.epoch, room.seq = lease.epoch, 0
        else:
            room.epoch, room.seq = lease.last_epoch, lease.last_seq

    def leave(self, s: SessionLike, name: str) -> bool:
        """Remove ``s`` from room ``name``; False if it was not a member."""
        room = self.rooms.get(name)
        if room is None or room.members.pop(s.session_id, None) is None:
            return False
        flags = self._flags.get(name, {})
        flags.pop(s.session_id, None)
        room.rebuild(flags)
        self._presence(room, s.member, joined=False)
        if not room.members:
            del self.rooms[name]
            self._flags.pop(name, None)
            self.stats.rooms = len(self.rooms)
            if self.sync is not None:
                spawn(self.sync.deactivate(name))
        return True

    def is_member(self, s: SessionLike, name: str) -> bool:
        """True when ``s`` has joined ``name``."""
        room = self.rooms.get(name)
        return room is not None and s.session_id in room.members

    # -- publishing ---------------------------------------------------------

    def publish(self, s: SessionLike, name: str, payload: bytes, reliable: bool,
                req_id: int, idem: int) -> None:
        """Publish from a local member (membership already checked)."""
        room = self.rooms[name]
        if not reliable:
            self.stats.publishes["unreliable"] += 1
            self._fanout(room, encode_message(name, 0, 0, s.session_id, payload),
                         s.session_id, reliable=False)
            if self.sync is not None:
                self.sync.publish_live(name, LIVE_UNRELIABLE, [s.session_id, payload])
            return
        self.stats.publishes["reliable"] += 1
        if room.mine:
            epoch, seq = self._assign(room, s.session_id, payload, self.edge_id, req_id)
            s.send(encode(Ack(req_id, epoch, seq)))
            return
        assert self.sync is not None
        self._forwarded[(s.session_id, req_id)] = (s, time.monotonic() + FORWARD_TIMEOUT)
        self.sync.forward(room.owner, [name, s.session_id, payload, self.edge_id, req_id, idem])

    def _assign(self, room: Room, sender: str, payload: bytes, origin: str,
                req_id: int) -> tuple[int, int]:
        room.seq += 1
        epoch, seq = room.epoch, room.seq
        self._fanout(room, encode_message(room.name, epoch, seq, sender, payload), sender, True)
        if self.sync is not None and epoch:
            self.sync.append(room.name, epoch, seq, _pack([sender, payload, origin, req_id]))
        return epoch, seq

    def _fanout(self, room: Room, body: bytes, sender: str, reliable: bool) -> None:
        t0 = time.perf_counter()
        frame = ws_binary_frame(body)
        skip = sender if sender in room.no_echo else None
        n = 0
        for sid, out in room.targets:
            if sid == skip:
                continue
            if out.push(frame, reliable):
                n += 1
            elif not reliable:
                self.stats.dropped_unreliable += 1
        self.stats.deliveries += n
        self.stats.delivered_bytes += n * len(body)
        self._observe(time.perf_counter() - t0)

    # -- upcalls from RoomSync ----------------------------------------------

    def on_remote_message(self, room_name: str, epoch: int, seq: int, sender: str,
                          payload: bytes, origin_edge: str, req_id: int) -> None:
        """A message from the room stream (room owned elsewhere)."""
        room = self.rooms.get(room_name)
        if room is None or room.mine:
            return
        if (epoch, seq) <= (room.epoch, room.seq):
            return  # already delivered (catch-up overlaps the tail)
        room.epoch, room.seq = epoch, seq
        self._fanout(room, encode_message(room_name, epoch, seq, sender, payload), sender, True)
        if origin_edge == self.edge_id:
            waiter = self._forwarded.pop((sender, req_id), None)
            if waiter is not None:
                waiter[0].send(encode(Ack(req_id, epoch, seq)))

    def on_forwarded_publish(self, room_name: str, sender: str, payload: bytes,
                             origin_edge: str, req_id: int, idem: int) -> None:
        """A publish another edge forwarded to us as the room's owner."""
        room = self.rooms.get(room_name)
        if room is None or not room.mine:
            log.warning("forwarded publish for a room we do not own",
                        extra={"room": room_name, "origin": origin_edge})
            return
        self.stats.publishes["forwarded"] += 1
        self._assign(room, sender, payload, origin_edge, req_id)

    def on_live(self, room_name: str, kind: int, body: list[Any]) -> None:
        """Ephemeral cross-edge traffic: presence events, unreliable messages."""
        room = self.rooms.get(room_name)
        if room is None:
            return
        if kind == LIVE_UNRELIABLE:
            sender, payload = body
            self._fanout(room, encode_message(room_name, 0, 0, sender, payload), sender, False)
        elif kind in (LIVE_PRESENCE_JOIN, LIVE_PRESENCE_LEAVE):
            m = Member(*body[0][:3])
            ev = PresenceJoin(room_name, m) if kind == LIVE_PRESENCE_JOIN else PresenceLeave(
                room_name, m)
            data = encode(ev)
            for w in room.watchers:
                w.send(data)

    def on_lease_lost(self, room_name: str) -> None:
        """Fenced: another edge owns the room now; become a mirror of it."""
        room = self.rooms.get(room_name)
        log.warning("lease lost", extra={"room": room_name})
        if room is None or self.sync is None:
            return
        room.mine = False
        sync = self.sync

        async def remirror() -> None:
            try:
                lease = await sync.activate(room_name)
            except SyncUnavailable:
                return
            if self.rooms.get(room_name) is room:
                self._apply_lease(room, lease)

        spawn(remirror())

    def on_lease_acquired(self, room_name: str, lease: Lease) -> None:
        """We took over a room whose owner went away."""
        room = self.rooms.get(room_name)
        if room is not None:
            log.info("took over room", extra={"room": room_name, "epoch": lease.epoch})
            self._apply_lease(room, lease)

    def expire_forwarded(self, now: float) -> None:
        """Answer forwarded publishes that got no position in time (4005)."""
        for key, (s, deadline) in list(self._forwarded.items()):
            if deadline <= now:
                del self._forwarded[key]
                s.send(encode(Error(key[1], ErrorCode.PUBLISH_TIMEOUT,
                                    "the room owner did not confirm the publish in time")))
                self.stats.errors[ErrorCode.PUBLISH_TIMEOUT] += 1

    # -- presence -----------------------------------------------------------

    def _presence(self, room: Room, m: Member, joined: bool) -> None:
        ev = PresenceJoin(room.name, m) if joined else PresenceLeave(room.name, m)
        data = encode(ev)
        for w in room.watchers:
            if w.session_id != m.session_id:
                w.send(data)
        if self.sync is not None:
            body = [m.session_id, m.subject, m.kind]
            self.sync.publish_live(room.name, LIVE_PRESENCE_JOIN if joined else
                                   LIVE_PRESENCE_LEAVE, [body])
            if joined:
                spawn(self.sync.add_member(room.name, m.session_id, body))
            else:
                spawn(self.sync.remove_member(room.name, m.session_id))

    async def presence(self, name: str) -> list[Member]:
        """Members of ``name`` on this edge and, via Redis, on the others."""
        room = self.rooms.get(name)
        local = {sid: s.member for sid, s in room.members.items()} if room else {}
        if self.sync is not None:
            try:
                for sid, subject, kind, _edge in await self.sync.members(name):
                    local.setdefault(sid, Member(sid, subject, kind))
            except SyncUnavailable:
                pass
        return sorted(local.values(), key=lambda m: m.session_id)

    def drop_all(self, s: SessionLike, rooms: Callable[[], list[str]]) -> None:
        """Leave every room ``s`` is in (on disconnect)."""
        for name in rooms():
            self.leave(s, name)
