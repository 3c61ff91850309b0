"""The I/O half of the room machines: events fed in, their commands executed.

A :class:`~edge_node.rooms.machine.RoomMachine` does no I/O and reads no clock.
:class:`MachineDriver` does both for every room of the hub: it feeds a machine one event
at a time (counting the state changes in ``edge_room_transitions_total``) and runs the
commands that come back: fan-out to the room's members, acknowledgements and errors to
publishers, appends, forwards, acks and probes through the store, messages up to the
origin, and the release of a closed room.  It keeps the rooms that have a deadline
(:meth:`MachineDriver.tick` feeds them :class:`~edge_node.rooms.events.Timer`) and the
machines of closed rooms that still have work (``retired``).

Fan-out encodes once: one msgpack body, one WebSocket frame, the same bytes pushed
to every WebSocket member's :class:`~edge_node.transports.outbound.Outbound`; a QUIC
member's sink gets the body and frames it itself (a stream record or a datagram).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from client_sdk.protocol import Ack, Error, encode, encode_message
from edge_node.fanout.room import Machine, Room, SessionLike
from edge_node.rooms import events as ev
from edge_node.rooms.events import Pos
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.runtime.tasks import spawn
from edge_node.store.base import RoomStore
from edge_node.store.records import Forwarded, pack_record
from edge_node.transports.outbound import ws_binary_frame

if TYPE_CHECKING:
    from edge_node.fanout.games import GameHost
    from edge_node.functions.host import FunctionHost

__all__ = ["MachineDriver"]


class MachineDriver:
    """Drives the machines of the rooms in ``rooms``: the hub's map of open rooms, shared
    with it; the driver only ever removes a room from it, when the room's machine
    releases it (:class:`~edge_node.rooms.events.Release`).

    ``store`` and ``uplink`` (None: no origin) are where the commands go; the hub's
    attributes of the same names are these.  ``settle(room, count)`` and
    ``reactivate(room, since)`` are the hub's coroutines for
    :class:`~edge_node.rooms.events.LoadRecent` and
    :class:`~edge_node.rooms.events.Activate` (run in the background).  Commands for a
    closed room (``room`` None) reach its publishers, the store and the origin only.
    """

    def __init__(self, rooms: dict[str, Room], metrics: EdgeMetrics, store: RoomStore, *,
                 settle: Callable[[Room, int], Coroutine[Any, Any, None]],
                 reactivate: Callable[[Room, Pos | None], Coroutine[Any, Any, None]]) -> None:
        self.rooms = rooms
        self.stats = metrics.stats
        self.store = store
        self.uplink: Any = None
        #: The edge's game rooms (None: no handler configured).
        self.games: GameHost | None = None
        #: The edge's functions (None: none loaded): message events go to them.
        self.functions: FunctionHost | None = None
        #: Whether a room's messages go up to the origin (the hub's rule).
        self.to_origin: Callable[[str], bool] = lambda name: True
        self._observe = metrics.fanout_seconds.observe
        self._settle = settle
        self._reactivate = reactivate
        #: Closed rooms with work left (acks and uplinks waiting for durability, or a
        #: handed-over lease that forwarded publishes follow).
        self.retired: dict[str, Machine] = {}
        #: Rooms whose machine has a deadline (forwarded publishes, linger).
        self.timed: set[str] = set()
        self._exec: dict[type[Any], Callable[[str, Room | None, Any], None]] = {
            ev.Fanout: self._do_fanout, ev.Ack: self._do_ack, ev.Refuse: self._do_refuse,
            ev.Append: self._do_append, ev.Forward: self._do_forward,
            ev.ForwardAck: self._do_forward_ack, ev.Uplink: self._do_uplink,
            ev.Activate: self._do_activate, ev.LoadRecent: self._do_load_recent,
            ev.Suspect: self._do_suspect, ev.Release: self._do_release,
        }

    # -- feeding ----------------------------------------------------------------

    def feed(self, name: str, room: Room | None, m: Machine, event: Any) -> None:
        """Feed one event to ``m`` (room ``name``; ``room`` None once closed) and run
        the commands it returns."""
        cmds = self.handle(m, event, time.monotonic())
        if cmds:
            self.run(name, room, cmds)
        if m.forwarded or m.linger_at is not None:
            self.timed.add(name)

    def feed_retired(self, name: str, event: Any) -> None:
        """Feed ``event`` to the machine of closed room ``name`` if it still has work,
        and forget that machine once it has none left."""
        old = self.retired.get(name)
        if old is not None:
            self.feed(name, None, old, event)
            if not old.pending_uplinks():
                del self.retired[name]

    def handle(self, m: Machine, event: Any, now: float) -> list[Any]:
        """``m.handle(event, now)``, counting the state change it makes (if any) in
        ``edge_room_transitions_total{from,to}``."""
        before = m.state
        cmds = m.handle(event, now)
        if m.state is not before:
            self.stats.room_transitions[(before.name, m.state.name)] += 1
            if self.games is not None and self.games.is_game(m.name):
                self.games.on_machine_state(m.name, m)
        return cmds

    def run(self, name: str, room: Room | None, cmds: list[Any]) -> None:
        """Execute ``cmds`` (from the machine of room ``name``), in order."""
        run = self._exec
        for c in cmds:
            run[type(c)](name, room, c)

    def tick(self, now: float) -> None:
        """Feed :class:`~edge_node.rooms.events.Timer` to every room whose deadline
        passed."""
        for name in list(self.timed):
            room = self.rooms.get(name)
            if room is None:
                self.timed.discard(name)
                continue
            m = room.machine
            due = m.next_deadline()
            if due is None:
                self.timed.discard(name)
            elif due <= now:
                cmds = self.handle(m, ev.Timer(), now)
                self.run(name, room, cmds)
                if m.next_deadline() is None:
                    self.timed.discard(name)

    # -- fan-out ------------------------------------------------------------------

    def fanout(self, room: Room, body: bytes, sender: str, reliable: bool,
               skip: frozenset[str] | None = None, key: str = "",
               pos: tuple[int, int] = (0, 0)) -> None:
        """Push ``body`` (an encoded MESSAGE) to the members of ``room``: not to the
        sender if it joined with no-echo, nor to the sessions in ``skip``.  ``key``
        (else the sender) and ``pos`` (a reliable message's position) are for members
        with a delivery policy (:meth:`~edge_node.transports.outbound.Outbound.push_policy`)."""
        t0 = time.perf_counter()
        own = sender if sender in room.no_echo else None
        n = 0
        frame = b""
        if room.framed:  # WebSocket members: one frame for all of them
            frame = ws_binary_frame(body)
            for sid, out in room.framed:
                if sid == own or (skip is not None and sid in skip):
                    continue
                if out.push_framed(frame, reliable):
                    n += 1
                elif not reliable:
                    self.stats.dropped_unreliable += 1
        for sid, sink in room.bodies:  # QUIC members: their sink frames (record or datagram)
            if sid == own or (skip is not None and sid in skip):
                continue
            if sink.push(body, reliable):
                n += 1
            elif not reliable:
                self.stats.dropped_unreliable += 1
        if room.policied:
            n += self._fanout_policied(room, body, frame, sender, reliable, own, skip,
                                       key or sender, pos)
        self.stats.deliveries += n
        self.stats.delivered_bytes += n * len(body)
        self._observe(time.perf_counter() - t0)

    def fanout_unreliable(self, room: Room, sender: str, payload: bytes, key: str) -> None:
        """Fan an unreliable message out (position ``(0, 0)``; ``key``: its conflation
        key for ``latest`` members)."""
        self.fanout(room, encode_message(room.name, 0, 0, sender, payload), sender, False,
                    key=key)

    def _fanout_policied(self, room: Room, body: bytes, frame: bytes, sender: str,
                         reliable: bool, own: str | None, skip: frozenset[str] | None,
                         key: str, pos: tuple[int, int]) -> int:
        n = 0
        for sid, sink, policy in room.policied:
            if sid == own or (skip is not None and sid in skip):
                continue
            if sink.framed:
                if not frame:
                    frame = ws_binary_frame(body)
                data = frame
            else:
                data = body
            if sink.push_policy(data, reliable, room.name, policy, key, pos):
                n += 1
            elif not reliable:
                self.stats.dropped_unreliable += 1
        return n

    # -- the commands -------------------------------------------------------------

    def _do_fanout(self, name: str, room: Room | None, c: ev.Fanout) -> None:
        if room is not None:
            if room.game and self.games is not None:
                self.games.on_entry(name, c.body)  # an input for the room's handler
            else:
                self.fanout(room, c.body, c.sender, c.reliable, c.skip, pos=c.pos)

    def _do_ack(self, name: str, room: Room | None, c: ev.Ack[SessionLike]) -> None:
        if not c.session.closed:
            c.session.send(encode(Ack(c.req_id, c.pos[0], c.pos[1])))

    def _do_refuse(self, name: str, room: Room | None, c: ev.Refuse[SessionLike]) -> None:
        if not c.session.closed:
            c.session.send(encode(Error(c.req_id, c.code, c.text)))
        self.stats.errors[c.code] += 1

    def _do_append(self, name: str, room: Room | None, c: ev.Append) -> None:
        self.store.append(name, c.epoch, c.seq,
                          pack_record(c.sender, c.payload, c.origin, c.req_id, c.idem))

    def _do_forward(self, name: str, room: Room | None, c: ev.Forward) -> None:
        self.store.forward(c.to, Forwarded(name, c.sender, c.payload, c.origin, c.req_id,
                                           c.idem))

    def _do_forward_ack(self, name: str, room: Room | None, c: ev.ForwardAck) -> None:
        self.store.forward_ack(c.to, c.sender, c.req_id, c.pos[0], c.pos[1])

    def _do_uplink(self, name: str, room: Room | None, c: ev.Uplink) -> None:
        body = {"sender": c.sender, "payload": c.payload, "pos": [c.pos[0], c.pos[1]]}
        if self.uplink is not None and self.to_origin(name):
            self.uplink.submit("room_event", name, body)
        if self.functions is not None:
            self.functions.emit("message", name, body)

    def _do_suspect(self, name: str, room: Room | None, c: ev.Suspect) -> None:
        self.store.suspect(c.owner)

    def _do_activate(self, name: str, room: Room | None, c: ev.Activate) -> None:
        if room is not None:
            spawn(self._reactivate(room, c.since))

    def _do_load_recent(self, name: str, room: Room | None, c: ev.LoadRecent) -> None:
        if room is not None:
            spawn(self._settle(room, c.count))

    def _do_release(self, name: str, room: Room | None, c: ev.Release) -> None:
        if room is not None and self.rooms.get(name) is room:
            del self.rooms[name]
            self.stats.rooms = len(self.rooms)
            if room.machine.pending_uplinks():
                self.retired[name] = room.machine
        spawn(self.store.deactivate(name, c.hand_to))
