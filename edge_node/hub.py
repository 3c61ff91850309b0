"""Rooms on one edge: membership, positions, local fan-out, durability, resume.

A room is *owned* here (this edge holds its lease: it assigns positions,
fans out at once and queues the stream append) or *mirrored* (another edge
owns it: publishes are forwarded to the owner, messages arrive from the room
stream and are fanned out locally in the owner's order).

Fan-out encodes once: one msgpack body, one WebSocket frame, the same bytes
pushed to every member's :class:`~edge_node.outbound.Outbound`.  Every room
keeps a ring of its recent messages so a resuming client is served from
memory when it can be, and from the room stream otherwise.

A reliable publish is acknowledged when it is durable (in the room stream);
a re-sent publish (same sender and idempotency key) is not fanned out again
but acknowledged with the position of the original.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgpack

from client_sdk.dedupe import RecentKeys
from client_sdk.protocol import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    Ack,
    Error,
    ErrorCode,
    Member,
    PresenceJoin,
    PresenceLeave,
    Resumed,
    encode,
    encode_message,
    room_allowed,
)

from .history import Entry
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

__all__ = ["Hub", "Room", "SessionLike", "HubSettings"]

log = logging.getLogger("edge_node.hub")
_pack = msgpack.Packer(use_bin_type=True).pack

Pos = tuple[int, int]


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Tunables of the hub (see :class:`edge_node.config.EdgeSettings`)."""

    ring_size: int = 4096
    max_replay: int = 10_000
    forward_timeout: float = 5.0
    room_linger: float = 5.0
    dedupe_window: int = 1024
    dedupe_load: int = 2000
    #: Seconds a forwarded publish may wait before its room's owner is probed.
    suspect_after: float = 0.4


class SessionLike(Protocol):
    """What the hub needs from a client session."""

    session_id: str
    member: Member
    out: Outbound
    closed: bool

    def send(self, data: bytes) -> None: ...


@dataclass(slots=True)
class _Forwarded:
    session: SessionLike
    room: str
    payload: bytes
    idem: int
    deadline: float


_Q = TypeVar("_Q", bound=tuple[Any, ...])


def _durable_upto(queue: deque[_Q], pos: Pos) -> Iterator[_Q]:
    """Pop and yield the items of a position-ordered queue (``(epoch, seq, ...)``) up to
    ``pos`` inclusive."""
    while queue and (queue[0][0], queue[0][1]) <= pos:
        yield queue.popleft()


@dataclass(slots=True)
class Room:
    """One room's state on this edge."""

    name: str
    members: dict[str, SessionLike] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    no_echo: set[str] = field(default_factory=set)
    watchers: list[SessionLike] = field(default_factory=list)
    targets: list[tuple[str, Outbound]] = field(default_factory=list)
    epoch: int = 0
    seq: int = 0
    mine: bool = True
    owner: str = ""
    synced: Pos = (0, 0)
    ring: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    ack_waiters: deque[tuple[int, int, SessionLike, int]] = field(default_factory=deque)
    idems: dict[str, RecentKeys[Pos]] = field(default_factory=dict)
    catchup: dict[str, Pos] = field(default_factory=dict)
    linger: asyncio.TimerHandle | None = None
    #: Messages of an origin-bound room waiting to be durable before they go up:
    #: (epoch, seq, sender, payload).  The origin gets what the edge acknowledged,
    #: once; a message whose epoch is lost is re-published and goes up then.
    uplink_wait: deque[tuple[int, int, str, bytes]] = field(default_factory=deque)

    def rebuild(self) -> None:
        """Recompute the fan-out target list after a membership change."""
        self.targets = [(sid, s.out) for sid, s in self.members.items()]
        self.watchers = [s for sid, s in self.members.items()
                         if self.flags.get(sid, 0) & JOIN_PRESENCE]
        self.no_echo = {sid for sid in self.members if self.flags.get(sid, 0) & JOIN_NO_ECHO}


class Hub:
    """All rooms of one edge.  ``sync`` is ``None`` for a Redis-less edge."""

    def __init__(self, edge_id: str, metrics: EdgeMetrics,
                 settings: HubSettings | None = None) -> None:
        self.edge_id = edge_id
        self.metrics = metrics
        self.stats = metrics.stats
        self.cfg = settings or HubSettings()
        self.rooms: dict[str, Room] = {}
        self.sync: RoomSync | None = None
        self._activating: dict[str, asyncio.Future[None]] = {}
        self._forwarded: dict[tuple[str, int], _Forwarded] = {}
        self._observe = metrics.fanout_seconds.observe
        #: While draining, rooms left empty are handed (not released) to the edge
        #: their last member moved to: ``handoff_target(session_id) -> edge id``.
        self.draining = False
        self.handoff_target: Any = None
        self._handed: dict[str, str] = {}  # room -> edge we handed its lease to
        #: room -> publishes forwarded to us while we take the room over (settle).
        self._settling: dict[str, list[tuple[str, str, bytes, str, int, int]]] = {}
        #: Origin-bound messages of rooms that closed before they were durable.
        self._retired: dict[str, deque[tuple[int, int, str, bytes]]] = {}
        #: Uplink to the origin, and the room patterns whose messages it gets.
        self.uplink: Any = None
        self.uplink_rooms: tuple[str, ...] = ()
        self._uplinked: dict[str, bool] = {}

    # -- membership ---------------------------------------------------------

    async def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        while room is None:
            pending = self._activating.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                room = self.rooms.get(name)
            else:
                room = await self._activate(name)
        if room.linger is not None:
            room.linger.cancel()
            room.linger = None
        return room

    def _add(self, s: SessionLike, room: Room, flags: int) -> None:
        room.members[s.session_id] = s
        room.flags[s.session_id] = flags
        room.rebuild()
        self._presence(room, s.member, joined=True)

    async def join(self, s: SessionLike, name: str, flags: int) -> Pos:
        """Add ``s`` to room ``name``; return the room's current position."""
        room = await self._room(name)
        self._add(s, room, flags)
        return room.epoch, room.seq

    async def _activate(self, name: str) -> Room:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._activating[name] = fut
        try:
            room = Room(name)
            if self.sync is not None:
                try:
                    lease = await self.sync.activate(name)
                    await self._apply_lease(room, lease)
                except SyncUnavailable as exc:
                    # Local first: keep serving with an unsynced epoch 0.
                    log.warning("room activated without Redis",
                                extra={"room": name, "error": str(exc)})
                    room.mine, room.epoch, room.owner = True, 0, self.edge_id
            else:
                room.mine, room.epoch, room.owner = True, 1, self.edge_id
            self.rooms[name] = room
            self.stats.rooms = len(self.rooms)
            return room
        finally:
            del self._activating[name]
            fut.set_result(None)

    async def _apply_lease(self, room: Room, lease: Lease) -> None:
        if not lease.mine:
            room.owner, room.mine = lease.owner_edge, False
            room.epoch, room.seq = lease.last_epoch, lease.last_seq
            return
        assert self.sync is not None
        # Rebuild dedupe state first, so re-sent publishes are recognised after a
        # takeover.  Until the room is switched to "mine" below, new publishes keep
        # going the forwarding way and wait in order with the earlier ones.
        try:
            for e in await self.sync.recent(room.name, self.cfg.dedupe_load):
                if e.idem:
                    self._remember(room, e.sender, e.idem, (e.epoch, e.seq))
        except SyncUnavailable:
            pass
        seq = lease.last_seq if lease.last_epoch == lease.epoch else 0
        queued = self.sync.last_queued(room.name)
        if queued is not None and queued[0] == lease.epoch:
            seq = max(seq, queued[1])
        room.owner, room.mine = lease.owner_edge, True
        room.epoch, room.seq = lease.epoch, max(seq, room.seq if room.epoch == lease.epoch
                                                else 0)
        room.synced = (lease.last_epoch, lease.last_seq)

    def leave(self, s: SessionLike, name: str, quiet: bool = False) -> bool:
        """Remove ``s`` from room ``name``; False if it was not a member.

        ``quiet``: the session moved to another edge (handoff), so it is still a
        member of the room: no presence leave event.
        """
        room = self.rooms.get(name)
        if room is None or room.members.pop(s.session_id, None) is None:
            return False
        room.flags.pop(s.session_id, None)
        room.catchup.pop(s.session_id, None)
        room.rebuild()
        if not quiet:
            self._presence(room, s.member, joined=False)
        if not room.members and self.draining:
            target = self.handoff_target(s.session_id) if self.handoff_target else None
            self._expire_room(name, target)
            return True
        if not room.members and room.linger is None:
            # Keep an empty room (and its lease) briefly: members often come back
            # (reconnect, resume) and re-activation would cost an epoch.
            room.linger = asyncio.get_running_loop().call_later(
                self.cfg.room_linger, self._expire_room, name)
        return True

    def _expire_room(self, name: str, hand_to: str | None = None) -> None:
        room = self.rooms.get(name)
        if room is None or room.members:
            return
        if room.linger is not None:
            room.linger.cancel()
        del self.rooms[name]
        self.stats.rooms = len(self.rooms)
        if room.uplink_wait:
            # Its last appends become durable after this: they still go up then.
            self._retired[name] = room.uplink_wait
        if self.sync is not None:
            if hand_to:
                # A room already handed over at the start of the drain keeps its owner.
                self._handed.setdefault(name, hand_to)
            spawn(self.sync.deactivate(name, hand_to))

    async def hand_over(self, name: str, to: str) -> bool:
        """Draining: give the lease of room ``name`` (ours) to edge ``to`` now, same
        epoch.  The room stays here as a mirror while its members move: their
        publishes are forwarded to ``to`` and its messages reach them from the
        stream.  False (the room stays ours) if the lease could not be handed."""
        room = self.rooms.get(name)
        sync = self.sync
        if room is None or not room.mine or sync is None or not room.epoch \
                or not sync.owns(name):
            return False
        # From here on nothing is assigned here: local publishes take the forwarding
        # path (held back until the new owner has been told).
        room.mine, room.owner = False, to
        self._handed[name] = to
        try:
            ok = await sync.hand_over(name, to, (room.epoch, room.seq))
        except SyncUnavailable as exc:
            log.warning("room handover failed", extra={"room": name, "error": str(exc)})
            ok = False
        if not ok and sync.owns(name) and self.rooms.get(name) is room:
            room.mine, room.owner = True, self.edge_id
            self._handed.pop(name, None)
            self._reforward(room)  # publishes forwarded meanwhile are assigned here
        return ok

    # -- publishing ---------------------------------------------------------

    def publish(self, s: SessionLike, name: str, payload: bytes, reliable: bool,
                req_id: int, idem: int) -> None:
        """Publish from a local member (membership already checked)."""
        room = self.rooms[name]
        sid = s.session_id
        if not reliable:
            self.stats.publishes["unreliable"] += 1
            self._fanout(room, encode_message(name, 0, 0, sid, payload), sid, False)
            if self.sync is not None:
                self.sync.publish_live(name, LIVE_UNRELIABLE, [sid, payload])
            return
        self.stats.publishes["reliable"] += 1
        if room.mine:
            dup = self._duplicate(room, sid, idem)
            if dup is not None:
                self._ack_when_durable(room, dup, s, req_id)
                return
            pos = self._assign(room, sid, payload, self.edge_id, req_id, idem)
            self._ack_when_durable(room, pos, s, req_id)
            return
        assert self.sync is not None
        self._forwarded[(sid, req_id)] = _Forwarded(
            s, name, payload, idem, time.monotonic() + self.cfg.forward_timeout)
        self.sync.forward(room.owner, [name, sid, payload, self.edge_id, req_id, idem])

    def _duplicate(self, room: Room, sender: str, idem: int) -> Pos | None:
        if not idem:
            return None
        seen = room.idems.get(sender)
        pos = seen.get(idem) if seen is not None else None
        if pos is not None:
            self.stats.duplicates_dropped += 1
        return pos

    def _remember(self, room: Room, sender: str, idem: int, pos: Pos) -> None:
        seen = room.idems.get(sender)
        if seen is None:
            seen = room.idems[sender] = RecentKeys(self.cfg.dedupe_window)
        seen.add(idem, pos)

    def _ack_when_durable(self, room: Room, pos: Pos, s: SessionLike, req_id: int) -> None:
        if self.sync is None or room.epoch == 0 or pos <= room.synced:
            s.send(encode(Ack(req_id, pos[0], pos[1])))
        else:
            room.ack_waiters.append((pos[0], pos[1], s, req_id))

    def _assign(self, room: Room, sender: str, payload: bytes, origin: str,
                req_id: int, idem: int) -> Pos:
        room.seq += 1
        epoch, seq = room.epoch, room.seq
        body = encode_message(room.name, epoch, seq, sender, payload, idem)
        self._fanout(room, body, sender, True)
        self._ring(room, epoch, seq, body)
        if idem:
            self._remember(room, sender, idem, (epoch, seq))
        if self.sync is not None and epoch:
            self.sync.append(room.name, epoch, seq, _pack([sender, payload, origin, req_id, idem]))
        if self.uplink is not None and self._to_origin(room.name):
            if self.sync is None or epoch == 0:  # no durability to wait for
                self._uplink_event(room.name, epoch, seq, sender, payload)
            else:
                room.uplink_wait.append((epoch, seq, sender, payload))
        return epoch, seq

    def _uplink_event(self, room: str, epoch: int, seq: int, sender: str,
                      payload: bytes) -> None:
        if self.uplink is not None:
            self.uplink.submit("room_event", room,
                               {"sender": sender, "payload": payload, "pos": [epoch, seq]})

    def _to_origin(self, name: str) -> bool:
        hit = self._uplinked.get(name)
        if hit is None:
            if len(self._uplinked) > 100_000:
                self._uplinked.clear()
            hit = self._uplinked[name] = room_allowed(self.uplink_rooms, name)
        return hit

    def _ring(self, room: Room, epoch: int, seq: int, body: bytes) -> None:
        ring = room.ring
        ring.append((epoch, seq, body))
        if len(ring) > self.cfg.ring_size:
            ring.popleft()

    def _fanout(self, room: Room, body: bytes, sender: str, reliable: bool,
                skip: set[str] | None = None) -> None:
        t0 = time.perf_counter()
        frame = ws_binary_frame(body)
        own = sender if sender in room.no_echo else None
        n = 0
        for sid, out in room.targets:
            if sid == own or (skip is not None and sid in skip):
                continue
            if out.push(frame, reliable):
                n += 1
            elif not reliable:
                self.stats.dropped_unreliable += 1
        self.stats.deliveries += n
        self.stats.delivered_bytes += n * len(body)
        self._observe(time.perf_counter() - t0)

    # -- upcalls from RoomSync ----------------------------------------------

    def on_durable(self, room_name: str, epoch: int, seq: int) -> None:
        """A batch up to ``(epoch, seq)`` is in Redis: acknowledge its publishers and
        send origin-bound messages up."""
        pos = (epoch, seq)
        retired = self._retired.get(room_name)
        if retired is not None:
            for item in _durable_upto(retired, pos):
                self._uplink_event(room_name, *item)
            if not retired:
                del self._retired[room_name]
        room = self.rooms.get(room_name)
        if room is None:
            return
        if pos > room.synced:
            room.synced = pos
        for e, sq, s, req_id in _durable_upto(room.ack_waiters, pos):
            if not s.closed:
                s.send(encode(Ack(req_id, e, sq)))
        for item in _durable_upto(room.uplink_wait, pos):
            self._uplink_event(room_name, *item)

    def on_remote_message(self, room_name: str, e: Entry) -> None:
        """A message from the room stream (room owned elsewhere)."""
        room = self.rooms.get(room_name)
        if room is None or room.mine:
            return
        pos = (e.epoch, e.seq)
        if pos <= (room.epoch, room.seq):
            return  # already delivered (catch-up overlaps the tail)
        room.epoch, room.seq = pos
        room.synced = pos
        if e.idem:
            self._remember(room, e.sender, e.idem, pos)
        body = encode_message(room_name, e.epoch, e.seq, e.sender, e.payload, e.idem)
        skip = None
        if room.catchup:
            skip = {sid for sid, p in room.catchup.items() if p >= pos}
            for sid in [sid for sid, p in room.catchup.items() if p <= pos]:
                del room.catchup[sid]
        self._fanout(room, body, e.sender, True, skip)
        self._ring(room, e.epoch, e.seq, body)
        if e.origin == self.edge_id:
            fw = self._forwarded.pop((e.sender, e.req_id), None)
            if fw is not None and not fw.session.closed:
                fw.session.send(encode(Ack(e.req_id, e.epoch, e.seq)))

    def on_forwarded_publish(self, room_name: str, sender: str, payload: bytes,
                             origin_edge: str, req_id: int, idem: int) -> None:
        """A publish another edge forwarded to us as the room's owner."""
        held = self._settling.get(room_name)
        if held is not None:  # taking the room over: handled once the lease is applied
            held.append((room_name, sender, payload, origin_edge, req_id, idem))
            return
        room = self.rooms.get(room_name)
        if room is None or not room.mine:
            target = self._handed.get(room_name)
            if target and self.sync is not None:
                # We handed this room over (drain): pass it on rather than make the
                # sender wait until it notices the new owner.
                self.sync.forward(target, [room_name, sender, payload, origin_edge, req_id,
                                           idem])
                return
            log.info("forwarded publish for a room we do not own; the origin will retry",
                     extra={"room": room_name, "origin": origin_edge})
            return
        self.stats.publishes["forwarded"] += 1
        dup = self._duplicate(room, sender, idem)
        if dup is not None:
            if self.sync is not None:
                self.sync.forward_ack(origin_edge, sender, req_id, dup[0], dup[1])
            return
        self._assign(room, sender, payload, origin_edge, req_id, idem)

    def on_remote_ack(self, sender: str, req_id: int, epoch: int, seq: int) -> None:
        """The owner recognised our forwarded publish as a duplicate."""
        fw = self._forwarded.pop((sender, req_id), None)
        if fw is not None and not fw.session.closed:
            fw.session.send(encode(Ack(req_id, epoch, seq)))

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
        self._retired.pop(room_name, None)  # re-published through the new owner
        room = self.rooms.get(room_name)
        log.warning("lease lost", extra={"room": room_name})
        if room is None or self.sync is None:
            return
        room.mine = False
        # Publishes of the lost epoch that were not durable yet never will be: tell
        # their publishers to retry (their SDK re-sends with the same idempotency key,
        # and members deduplicate the copy they already saw) instead of letting a
        # later epoch's durable batch acknowledge them by mistake.
        waiters, room.ack_waiters = room.ack_waiters, deque()
        for _e, _sq, s, req_id in waiters:
            if not s.closed:
                s.send(encode(Error(req_id, ErrorCode.PUBLISH_TIMEOUT,
                                    "the room moved before the message was stored; retry")))
            self.stats.errors[ErrorCode.PUBLISH_TIMEOUT] += 1
        # Forget positions that may never have been stored; the dedupe state is
        # rebuilt from the stream when the lease is applied again.  Origin-bound
        # messages of the lost epoch go up when they are re-published.
        room.idems.clear()
        room.uplink_wait.clear()
        sync = self.sync

        synced = room.synced

        async def remirror() -> None:
            # Redis may be failing over right now: keep trying while the room is used,
            # or the room would stay owner-less here for good.
            delay = 0.1
            while self.rooms.get(room_name) is room:
                try:
                    lease = await sync.activate(room_name, since=synced)
                except SyncUnavailable:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if self.rooms.get(room_name) is room:
                    await self._apply_lease(room, lease)
                    if not lease.mine:
                        # Members here saw only what this edge served: replay from the
                        # last stored position (the new owner's messages come after it).
                        room.epoch, room.seq = min(synced, (room.epoch, room.seq))
                    self._reforward(room)
                return

        spawn(remirror())

    def on_lease_acquired(self, room_name: str, lease: Lease) -> None:
        """We took over a room whose owner went away."""
        room = self.rooms.get(room_name)
        if room is None:
            return
        log.info("took over room", extra={"room": room_name, "epoch": lease.epoch})
        # Publishes forwarded to us from now on wait until the lease is applied, then go
        # in arrival order (refusing them would let later ones overtake their retries).
        self._settling.setdefault(room_name, [])

        async def settle() -> None:
            try:
                await self._apply_lease(room, lease)
            finally:
                held = self._settling.pop(room_name, [])
            for args in held:
                self.on_forwarded_publish(*args)
            self._reforward(room)

        spawn(settle())

    def on_owner_changed(self, room_name: str, owner_edge: str) -> None:
        """Another edge took the room over: re-send publishes still waiting."""
        room = self.rooms.get(room_name)
        if room is not None and not room.mine:
            room.owner = owner_edge
            self._reforward(room)

    def _reforward(self, room: Room) -> None:
        """Re-submit forwarded publishes of ``room`` to its current owner (idempotent)."""
        for key, fw in list(self._forwarded.items()):
            if fw.room != room.name:
                continue
            if room.mine:
                del self._forwarded[key]
                if not fw.session.closed:
                    self.publish(fw.session, room.name, fw.payload, True, key[1], fw.idem)
            elif self.sync is not None:
                fw.deadline = time.monotonic() + self.cfg.forward_timeout
                self.sync.forward(room.owner, [room.name, key[0], fw.payload, self.edge_id,
                                               key[1], fw.idem])

    def expire_forwarded(self, now: float) -> None:
        """Answer forwarded publishes that got no position in time (4005, retryable).

        A publish unconfirmed for ``suspect_after`` seconds makes the owner a
        suspect: it is probed, and its rooms are taken over if it is dead.
        """
        if self.sync is not None:
            late = now + self.cfg.forward_timeout - self.cfg.suspect_after
            for fw in self._forwarded.values():
                if fw.deadline <= late:
                    room = self.rooms.get(fw.room)
                    if room is not None and not room.mine:
                        self.sync.suspect(room.owner)
        for key, fw in list(self._forwarded.items()):
            if fw.deadline <= now:
                del self._forwarded[key]
                if not fw.session.closed:
                    fw.session.send(encode(Error(
                        key[1], ErrorCode.PUBLISH_TIMEOUT,
                        "the room owner did not confirm the publish in time; retry")))
                self.stats.errors[ErrorCode.PUBLISH_TIMEOUT] += 1

    # -- resume ---------------------------------------------------------------

    async def resume_join(self, s: SessionLike, name: str, flags: int, pos: Pos,
                          invalid: str = "") -> Resumed:
        """Re-join ``name`` for a resuming session and replay what it missed.

        Sends RESUMED, then the replayed MESSAGE frames, then adds the member so
        live traffic follows without a gap or an overlap.  A non-empty
        ``invalid`` (e.g. ``"session_expired"``: the resume window passed) joins
        at the current position with ``recovered=False`` and that reason.
        """
        room = await self._room(name)
        if invalid:
            return self._finish_resume(s, room, flags, Resumed(
                name, False, pos[0], pos[1], 0, invalid,
                {"current": [room.epoch, room.seq]}), [])
        bodies: list[bytes] = []
        last = pos
        ring = room.ring
        if pos < (room.epoch, room.seq) and not (ring and (ring[0][0], ring[0][1]) <= pos):
            if self.sync is None:
                return self._finish_resume(s, room, flags, Resumed(
                    name, False, pos[0], pos[1], 0, "no_history", {}), [])
            try:
                entries, gap, first = await self.sync.history_after(
                    name, pos[0], pos[1], self.cfg.max_replay + 1)
            except SyncUnavailable:
                return self._finish_resume(s, room, flags, Resumed(
                    name, False, pos[0], pos[1], 0, "history_unavailable", {}), [])
            if gap:
                info: dict[str, Any] = {"first_available": list(first) if first else None}
                return self._finish_resume(s, room, flags, Resumed(
                    name, False, pos[0], pos[1], 0, "history_trimmed", info), [])
            if len(entries) > self.cfg.max_replay:
                return self._finish_resume(s, room, flags, Resumed(
                    name, False, pos[0], pos[1], 0, "too_many",
                    {"max_replay": self.cfg.max_replay}), [])
            for e in entries:
                bodies.append(encode_message(name, e.epoch, e.seq, e.sender, e.payload, e.idem))
                last = (e.epoch, e.seq)
        # From here on no await: the ring tail and the live stream join seamlessly.
        tail = [(e, sq, b) for e, sq, b in room.ring if (e, sq) > last]
        if tail and last != pos and tail[0][0] == last[0] and tail[0][1] != last[1] + 1:
            return self._finish_resume(s, room, flags, Resumed(
                name, False, pos[0], pos[1], 0, "overflow", {}), [])
        for _e, _sq, b in tail:
            bodies.append(b)
        if tail:
            last = (tail[-1][0], tail[-1][1])
        if not room.mine and last > (room.epoch, room.seq):
            room.catchup[s.session_id] = last  # the tail reader has not got there yet
        info = {"to": [last[0], last[1]]}
        return self._finish_resume(s, room, flags, Resumed(
            name, True, pos[0], pos[1], len(bodies), "", info), bodies)

    def _finish_resume(self, s: SessionLike, room: Room, flags: int, r: Resumed,
                       bodies: list[bytes]) -> Resumed:
        s.send(encode(r))
        for b in bodies:
            s.out.push(ws_binary_frame(b))
        self.stats.replayed += len(bodies)
        self.stats.recoveries["recovered" if r.recovered else "not_recovered"] += 1
        self._add(s, room, flags)
        return r

    # -- presence -----------------------------------------------------------

    def _presence(self, room: Room, m: Member, joined: bool) -> None:
        ev = PresenceJoin(room.name, m) if joined else PresenceLeave(room.name, m)
        data = encode(ev)
        for w in room.watchers:
            if w.session_id != m.session_id:
                w.send(data)
        if self.uplink is not None:
            self.uplink.submit("presence", room.name, {"member": m.session_id,
                                                      "subject": m.subject, "online": joined})
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
            except SyncUnavailable as exc:  # local members only: say so in the log
                log.warning("presence from other edges unavailable",
                            extra={"room": name, "error": str(exc)})
        return sorted(local.values(), key=lambda m: m.session_id)

    def position(self, name: str) -> Pos:
        """Current position of a room on this edge (``(0, 0)`` if unknown)."""
        room = self.rooms.get(name)
        return (room.epoch, room.seq) if room else (0, 0)
