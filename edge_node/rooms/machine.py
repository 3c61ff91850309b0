"""One room's ownership as an explicit, sans-I/O state machine.

A :class:`RoomMachine` holds the only copy of a room's continuity state on this edge:
who owns it, the position ``(epoch, seq)`` of its last message here, the durable
position, the publishers waiting for durability, the publishes forwarded to the owner,
duplicate detection and the ring of recent messages for resume.  It does no I/O and
reads no clock: the driver (:class:`edge_node.fanout.hub.Hub`) feeds events with
:meth:`RoomMachine.handle` (``now`` passed in), executes the commands it returns, feeds
store replies back as events, and calls it again with :class:`~.events.Timer` at
:meth:`RoomMachine.next_deadline`.

States (:class:`RoomState`) and which event may move a room from one state to which
others (:data:`TRANSITIONS`) are data; ``python -m edge_node.rooms`` prints the table,
and docs/architecture.md draws it.  An event that a state's row does not list is
ignored (counted in :attr:`RoomMachine.ignored`): for example a stream record read for
a room this edge owns, or a durable notice for an epoch already given up.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from client_sdk.protocol import ErrorCode, encode_message
from edge_node.rooms.events import (
    Ack,
    Activate,
    Append,
    Command,
    Durable,
    Emptied,
    Event,
    Fanout,
    Forward,
    ForwardAck,
    ForwardedPublish,
    HandOverDone,
    HandOverFailed,
    HandOverStart,
    LeaseAcquired,
    LeaseLost,
    LeaseResult,
    LoadRecent,
    LocalPublish,
    Occupied,
    OwnerChanged,
    Pos,
    RecentLoaded,
    Refuse,
    Release,
    RemoteAck,
    RemoteEntry,
    RunLocal,
    Suspect,
    Timer,
    Uplink,
)
from edge_node.rooms.idempotency import PublisherKeys

__all__ = ["RoomState", "RoomSettings", "RoomMachine", "TRANSITIONS", "transition_rows"]

S = TypeVar("S")


class RoomState(enum.Enum):
    """Where a room stands on this edge."""

    #: The store is being asked for the lease (no member is in yet).
    ACTIVATING = "activating"
    #: Served without a store lease: the store (Redis) was unreachable when the room was
    #: activated (epoch 0, or the epoch of :class:`~.events.RunLocal`).  Positions are
    #: assigned here and acknowledged at once; nothing is stored.
    LOCAL = "local"
    #: The lease is ours; duplicate detection is being rebuilt from the stream.  Local
    #: publishes and forwarded ones wait, in order, until it is done.
    SETTLING = "settling"
    #: The lease is ours: positions are assigned here, appended to the stream, and
    #: acknowledged once durable.
    OWNED = "owned"
    #: Drain: the lease is moving to a neighbour; publishes go to it.
    HANDING_OVER = "handing_over"
    #: Another edge owns the room: publishes are forwarded to it, its messages come
    #: from the room stream.
    MIRROR = "mirror"
    #: The lease was lost (another edge took the room); the store is asked again.
    #: Publishes wait.
    FENCED = "fenced"
    #: No member is left; the room is gone from this edge (what is not yet durable is
    #: still acknowledged and sent up when it becomes durable).
    CLOSED = "closed"

    # Members are singletons: identity hashing is exact, and the machine looks its state
    # up (transition row, state sets) on every publish, where Enum's own __hash__ (a
    # Python-level hash of the name) showed up in profiles.
    __hash__ = object.__hash__


St = RoomState

#: state -> event type -> the states that event may lead to (the first is the usual one).
TRANSITIONS: dict[RoomState, dict[type[Any], tuple[RoomState, ...]]] = {
    St.ACTIVATING: {
        LeaseResult: (St.SETTLING, St.MIRROR),
        RunLocal: (St.LOCAL,),
    },
    St.LOCAL: {
        LocalPublish: (St.LOCAL,), ForwardedPublish: (St.LOCAL,), RemoteAck: (St.LOCAL,),
        Timer: (St.LOCAL, St.CLOSED), Emptied: (St.LOCAL, St.CLOSED), Occupied: (St.LOCAL,),
    },
    St.SETTLING: {
        RecentLoaded: (St.OWNED,), LeaseLost: (St.FENCED,),
        LocalPublish: (St.SETTLING,), ForwardedPublish: (St.SETTLING,),
        Durable: (St.SETTLING,), RemoteAck: (St.SETTLING,),
        Timer: (St.SETTLING, St.CLOSED), Emptied: (St.SETTLING, St.CLOSED),
        Occupied: (St.SETTLING,),
    },
    St.OWNED: {
        LocalPublish: (St.OWNED,), ForwardedPublish: (St.OWNED,), Durable: (St.OWNED,),
        LeaseLost: (St.FENCED,), HandOverStart: (St.HANDING_OVER,), RemoteAck: (St.OWNED,),
        Timer: (St.OWNED, St.CLOSED), Emptied: (St.OWNED, St.CLOSED), Occupied: (St.OWNED,),
    },
    St.HANDING_OVER: {
        HandOverDone: (St.MIRROR,), HandOverFailed: (St.OWNED, St.MIRROR),
        LeaseLost: (St.FENCED,),
        # The reader mirrors the room as soon as the lease has moved, before the
        # handover is done here: the new owner's first records may come now.
        RemoteEntry: (St.HANDING_OVER,),
        LocalPublish: (St.HANDING_OVER,), ForwardedPublish: (St.HANDING_OVER,),
        Durable: (St.HANDING_OVER,), RemoteAck: (St.HANDING_OVER,),
        Timer: (St.HANDING_OVER, St.CLOSED), Emptied: (St.HANDING_OVER, St.CLOSED),
        Occupied: (St.HANDING_OVER,),
    },
    St.MIRROR: {
        RemoteEntry: (St.MIRROR,), LeaseAcquired: (St.SETTLING,), OwnerChanged: (St.MIRROR,),
        LocalPublish: (St.MIRROR,), ForwardedPublish: (St.MIRROR,), Durable: (St.MIRROR,),
        RemoteAck: (St.MIRROR,),
        Timer: (St.MIRROR, St.CLOSED), Emptied: (St.MIRROR, St.CLOSED), Occupied: (St.MIRROR,),
    },
    St.FENCED: {
        LeaseResult: (St.SETTLING, St.MIRROR), LeaseLost: (St.FENCED,),
        RemoteEntry: (St.FENCED,), LocalPublish: (St.FENCED,),
        ForwardedPublish: (St.FENCED,), RemoteAck: (St.FENCED,),
        Timer: (St.FENCED, St.CLOSED), Emptied: (St.FENCED, St.CLOSED), Occupied: (St.FENCED,),
    },
    St.CLOSED: {
        Durable: (St.CLOSED,), LeaseLost: (St.CLOSED,), ForwardedPublish: (St.CLOSED,),
    },
}

#: States in which positions are assigned on this edge.
_ASSIGNING = frozenset({St.OWNED, St.LOCAL})
#: States in which forwarded publishes wait until the room has an owner again.
_HOLDING = frozenset({St.SETTLING, St.FENCED, St.ACTIVATING})


def transition_rows() -> list[tuple[str, str, str]]:
    """``(state, event, next states)`` rows of :data:`TRANSITIONS`, for docs and tests."""
    return [(s.name, ev.__name__, " | ".join(t.name for t in targets))
            for s, row in TRANSITIONS.items() for ev, targets in row.items()]


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """Tunables of every room (see :class:`edge_node.config.EdgeSettings`)."""

    #: Recent messages kept per room for resume from memory.
    ring_size: int = 4096
    #: Most messages replayed to one resuming client; past it ``recovered: false``.
    max_replay: int = 10_000
    #: Seconds a forwarded publish waits for its position before 4005 (retry).
    forward_timeout: float = 5.0
    #: Seconds an empty room (and its lease) is kept for members coming back.
    room_linger: float = 5.0
    #: Idempotency keys remembered per publisher, and records read to rebuild them.
    dedupe_window: int = 1024
    dedupe_load: int = 2000
    #: Seconds a forwarded publish may wait before its room's owner is probed.
    suspect_after: float = 0.4


@dataclass(slots=True)
class _Forwarded(Generic[S]):
    session: S
    payload: bytes
    idem: int
    deadline: float


class RoomMachine(Generic[S]):
    """One room on one edge.  Create it in ACTIVATING, then feed the store's answer
    (:class:`~.events.LeaseResult` or :class:`~.events.RunLocal`).

    ``to_origin``: the room's messages also go to the origin (:class:`~.events.Uplink`
    once durable).  ``count_duplicate`` is called once per re-sent publish recognised
    (see :class:`~.idempotency.PublisherKeys`, the room's duplicate detection).
    """

    __slots__ = (
        "_handlers",
        "_pending",
        "ack_waiters",
        "catchup",
        "cfg",
        "durable",
        "edge_id",
        "epoch",
        "forwarded",
        "handed_to",
        "held",
        "idems",
        "ignored",
        "lease_epoch",
        "linger_at",
        "name",
        "owner",
        "ring",
        "seq",
        "state",
        "to_origin",
        "uplink_wait",
    )

    def __init__(self, name: str, edge_id: str, cfg: RoomSettings | None = None, *,
                 to_origin: bool = False,
                 count_duplicate: Callable[[], None] | None = None) -> None:
        self.name = name
        self.edge_id = edge_id
        self.cfg = cfg or RoomSettings()
        self.to_origin = to_origin
        self.state = St.ACTIVATING
        self.owner = ""
        #: Position of the last message assigned (owner) or delivered (mirror) here.
        self.epoch = 0
        self.seq = 0
        #: The epoch of the lease when this edge last learned it (a mirror's position
        #: is never reported below ``(lease_epoch, 0)``: the same on every edge).
        self.lease_epoch = 0
        #: Everything up to here is in the store.
        self.durable: Pos = (0, 0)
        self.ring: deque[tuple[int, int, bytes]] = deque()
        #: (epoch, seq, session, req_id) of local publishes not yet durable, in order.
        self.ack_waiters: deque[tuple[int, int, S, int]] = deque()
        #: Duplicate detection: the publishers' recent idempotency keys.
        self.idems = PublisherKeys(self.cfg.dedupe_window, count_duplicate)
        #: session id -> position a resumed member was replayed to (mirror: the stream
        #: reader has not got there yet; records up to it are not pushed again).
        self.catchup: dict[str, Pos] = {}
        #: (epoch, seq, sender, payload) of origin-bound messages waiting for durability.
        self.uplink_wait: deque[tuple[int, int, str, bytes]] = deque()
        #: (sender, req_id) -> a local publish sent to (or waiting for) the owner.
        self.forwarded: dict[tuple[str, int], _Forwarded[S]] = {}
        #: Publishes forwarded here while SETTLING, handled in order once OWNED.
        self.held: list[ForwardedPublish] = []
        #: The edge this room's lease was handed to (drain): forwards go on there.
        self.handed_to: str | None = None
        self.linger_at: float | None = None
        self.ignored = 0
        self._pending: tuple[int, Pos, Pos | None] | None = None  # lease being settled
        self._handlers: dict[type[Any], Callable[[Any, float], list[Any]]] = {
            LeaseResult: self._on_lease_result, RunLocal: self._on_run_local,
            RecentLoaded: self._on_recent_loaded, LeaseLost: self._on_lease_lost,
            LeaseAcquired: self._on_lease_acquired, OwnerChanged: self._on_owner_changed,
            HandOverStart: self._on_handover_start, HandOverDone: self._on_handover_done,
            HandOverFailed: self._on_handover_failed, Durable: self._on_durable,
            RemoteEntry: self._on_remote_entry, ForwardedPublish: self._on_forwarded,
            LocalPublish: self._on_local_publish, RemoteAck: self._on_remote_ack,
            Timer: self._on_timer, Emptied: self._on_emptied, Occupied: self._on_occupied,
        }

    # -- the one entry point --------------------------------------------------------

    def handle(self, event: Event[S], now: float) -> list[Command[S]]:
        """Apply one event at time ``now``; return the commands to execute, in order."""
        allowed = TRANSITIONS[self.state].get(type(event))
        if allowed is None:
            self.ignored += 1
            return []
        out = self._handlers[type(event)](event, now)
        assert self.state in allowed, (self.state, type(event).__name__, allowed)
        return out

    def next_deadline(self) -> float | None:
        """When to feed :class:`~.events.Timer` next (None: no timer needed)."""
        best = self.linger_at
        if self.forwarded:
            first = next(iter(self.forwarded.values())).deadline
            if self.state in (St.MIRROR, St.HANDING_OVER):
                first -= self.cfg.forward_timeout - self.cfg.suspect_after
            best = first if best is None else min(best, first)
        return best

    # -- what the driver asks --------------------------------------------------------

    @property
    def mine(self) -> bool:
        """True while positions are assigned here (OWNED or LOCAL)."""
        return self.state in _ASSIGNING

    @property
    def last(self) -> Pos:
        """Position of the last message assigned or delivered here."""
        return self.epoch, self.seq

    def position(self) -> Pos:
        """The room's current position as told to a joining client: the same on the
        owner and on every mirror (a mirror that has seen nothing of the current epoch
        yet says ``(lease epoch, 0)``, as the owner does)."""
        pos = (self.epoch, self.seq)
        return max(pos, (self.lease_epoch, 0)) if self.state is St.MIRROR else pos

    def pending_uplinks(self) -> bool:
        """Work left after CLOSED: acknowledgements or uplinks waiting for durability,
        or a handed-over lease that forwards still follow."""
        return bool(self.ack_waiters or self.uplink_wait or self.handed_to)

    # -- lease events ---------------------------------------------------------------

    def _on_lease_result(self, ev: LeaseResult, now: float) -> list[Command[S]]:
        self.lease_epoch = ev.epoch
        if ev.mine:
            return self._settle(ev.epoch, ev.last, ev.queued)
        fenced = self.state is St.FENCED
        self.state, self.owner = St.MIRROR, ev.owner
        if fenced:
            # Members here saw only what this edge served: mirror from the last stored
            # position (the new owner's messages come after it).
            self.epoch, self.seq = min(self.durable, ev.last)
        else:
            self.epoch, self.seq = ev.last
            self.durable = ev.last
        return self._reforward(now)

    def _settle(self, epoch: int, last: Pos, queued: Pos | None) -> list[Command[S]]:
        self.state = St.SETTLING
        self._pending = (epoch, last, queued)
        return [LoadRecent(self.cfg.dedupe_load)]

    def _on_run_local(self, ev: RunLocal, now: float) -> list[Command[S]]:
        self.state, self.owner = St.LOCAL, self.edge_id
        self.epoch = self.lease_epoch = ev.epoch
        return []

    def _on_recent_loaded(self, ev: RecentLoaded, now: float) -> list[Command[S]]:
        assert self._pending is not None
        epoch, last, queued = self._pending
        self._pending = None
        for r in ev.records:
            if r.idem:
                self.idems.remember(r.sender, r.idem, (r.epoch, r.seq))
        seq = last[1] if last[0] == epoch else 0
        if queued is not None and queued[0] == epoch:
            seq = max(seq, queued[1])
        if self.epoch == epoch:
            seq = max(seq, self.seq)
        self.state, self.owner = St.OWNED, self.edge_id
        self.epoch, self.seq, self.lease_epoch = epoch, seq, epoch
        self.durable = max(self.durable, last)
        out: list[Command[S]] = []
        held, self.held = self.held, []
        for fp in held:
            out += self._on_forwarded(fp, now)
        out += self._reforward(now)
        return out

    def _on_lease_lost(self, ev: LeaseLost, now: float) -> list[Command[S]]:
        # Publishes of the lost epoch that were not durable yet never will be: their
        # publishers retry (same idempotency key; members drop the copy they saw)
        # rather than a later epoch's durable batch acknowledging them by mistake.
        out: list[Command[S]] = [
            Refuse(s, req_id, ErrorCode.PUBLISH_TIMEOUT,
                   "the room moved before the message was stored; retry")
            for _e, _sq, s, req_id in self.ack_waiters]
        self.ack_waiters.clear()
        # Positions that may never have been stored are forgotten (rebuilt from the
        # stream on the next lease); origin-bound messages of the lost epoch go up when
        # they are re-published.
        self.idems.clear()
        self.uplink_wait.clear()
        self.held.clear()  # forwarded to us as owner: their senders retry elsewhere
        self._pending = None
        if self.state is St.CLOSED or self.state is St.FENCED:
            return out  # already closed, or already asking the store again
        self.state = St.FENCED
        out.append(Activate(since=self.durable))
        return out

    def _on_lease_acquired(self, ev: LeaseAcquired, now: float) -> list[Command[S]]:
        self.lease_epoch = ev.epoch
        return self._settle(ev.epoch, ev.last, None)

    def _on_owner_changed(self, ev: OwnerChanged, now: float) -> list[Command[S]]:
        self.owner = ev.owner
        return self._reforward(now)

    def _on_handover_start(self, ev: HandOverStart, now: float) -> list[Command[S]]:
        # From here on nothing is assigned here: publishes go to the new owner (the
        # store holds them back until it has been told).
        self.state, self.owner, self.handed_to = St.HANDING_OVER, ev.to, ev.to
        return []

    def _on_handover_done(self, ev: HandOverDone, now: float) -> list[Command[S]]:
        self.state = St.MIRROR
        return []

    def _on_handover_failed(self, ev: HandOverFailed, now: float) -> list[Command[S]]:
        if not ev.still_owner:  # the lease left anyway (the notice failed): mirror it
            self.state = St.MIRROR
            return []
        self.state, self.owner, self.handed_to = St.OWNED, self.edge_id, None
        return self._reforward(now)  # publishes forwarded meanwhile are assigned here

    # -- messages --------------------------------------------------------------------

    def _on_durable(self, ev: Durable, now: float) -> list[Command[S]]:
        pos = ev.pos
        if pos > self.durable:
            self.durable = pos
        out: list[Command[S]] = []
        q = self.ack_waiters
        while q and (q[0][0], q[0][1]) <= pos:
            e, sq, s, req_id = q.popleft()
            out.append(Ack(s, req_id, (e, sq)))
        u = self.uplink_wait
        while u and (u[0][0], u[0][1]) <= pos:
            e, sq, sender, payload = u.popleft()
            out.append(Uplink((e, sq), sender, payload))
        return out

    def _on_local_publish(self, ev: LocalPublish[S], now: float) -> list[Command[S]]:
        st = self.state
        if st in _ASSIGNING:
            out: list[Command[S]] = []
            pos = self.idems.seen(ev.sender, ev.idem)
            if pos is None:
                pos = self._assign(ev.sender, ev.payload, self.edge_id, ev.req_id, ev.idem, out)
            if st is St.LOCAL or pos <= self.durable:
                out.append(Ack(ev.session, ev.req_id, pos))
            else:
                self.ack_waiters.append((pos[0], pos[1], ev.session, ev.req_id))
            return out
        self.forwarded[(ev.sender, ev.req_id)] = _Forwarded(
            ev.session, ev.payload, ev.idem, now + self.cfg.forward_timeout)
        if st in _HOLDING:
            return []  # sent once the room has an owner again
        return [Forward(self.owner, ev.sender, ev.payload, self.edge_id, ev.req_id, ev.idem)]

    def _on_forwarded(self, ev: ForwardedPublish, now: float) -> list[Command[S]]:
        st = self.state
        if st is St.SETTLING:
            self.held.append(ev)
            return []
        if st in _ASSIGNING:
            pos = self.idems.seen(ev.sender, ev.idem)
            if pos is not None:
                return [ForwardAck(ev.origin, ev.sender, ev.req_id, pos)]
            out: list[Command[S]] = []
            self._assign(ev.sender, ev.payload, ev.origin, ev.req_id, ev.idem, out)
            return out
        if self.handed_to:
            # We handed this room over (drain): pass it on rather than make the sender
            # wait until it notices the new owner.
            return [Forward(self.handed_to, ev.sender, ev.payload, ev.origin, ev.req_id,
                            ev.idem)]
        self.ignored += 1  # not ours: the sender's edge times out and retries
        return []

    def _on_remote_entry(self, ev: RemoteEntry, now: float) -> list[Command[S]]:
        r = ev.record
        pos = (r.epoch, r.seq)
        if pos <= (self.epoch, self.seq):
            return []  # already delivered (a catch-up read overlaps the tail)
        self.epoch, self.seq = pos
        self.durable = pos
        if r.idem:
            self.idems.remember(r.sender, r.idem, pos)
        body = encode_message(self.name, r.epoch, r.seq, r.sender, r.payload, r.idem)
        skip = None
        if self.catchup:
            skip = frozenset(sid for sid, p in self.catchup.items() if p >= pos)
            for sid in [sid for sid, p in self.catchup.items() if p <= pos]:
                del self.catchup[sid]
        out: list[Command[S]] = [Fanout(body, r.sender, True, skip, pos)]
        self._ring(r.epoch, r.seq, body)
        if r.origin == self.edge_id:
            fw = self.forwarded.pop((r.sender, r.req_id), None)
            if fw is not None:
                out.append(Ack(fw.session, r.req_id, pos))
        return out

    def _on_remote_ack(self, ev: RemoteAck, now: float) -> list[Command[S]]:
        fw = self.forwarded.pop((ev.sender, ev.req_id), None)
        return [] if fw is None else [Ack(fw.session, ev.req_id, ev.pos)]

    # -- time and membership -------------------------------------------------------------

    def _on_timer(self, ev: Timer, now: float) -> list[Command[S]]:
        out: list[Command[S]] = []
        if self.forwarded:
            if self.state in (St.MIRROR, St.HANDING_OVER):
                late = now + self.cfg.forward_timeout - self.cfg.suspect_after
                if any(fw.deadline <= late for fw in self.forwarded.values()):
                    out.append(Suspect(self.owner))
            for key, fw in list(self.forwarded.items()):
                if fw.deadline <= now:
                    del self.forwarded[key]
                    out.append(Refuse(fw.session, key[1], ErrorCode.PUBLISH_TIMEOUT,
                                      "the room owner did not confirm the publish in time; "
                                      "retry"))
        if self.linger_at is not None and now >= self.linger_at:
            out += self._close(None)
        return out

    def _on_emptied(self, ev: Emptied, now: float) -> list[Command[S]]:
        if ev.draining:
            return self._close(ev.hand_to)
        if self.linger_at is None:
            # Keep an empty room (and its lease) briefly: members often come back
            # (reconnect, resume) and re-activation would cost an epoch.
            self.linger_at = now + self.cfg.room_linger
        return []

    def _on_occupied(self, ev: Occupied, now: float) -> list[Command[S]]:
        self.linger_at = None
        return []

    def _close(self, hand_to: str | None) -> list[Command[S]]:
        if hand_to and not self.handed_to:
            self.handed_to = hand_to  # a room handed over at drain start keeps its owner
        self.state = St.CLOSED
        self.linger_at = None
        self.ring.clear()
        self.catchup.clear()
        self.forwarded.clear()  # their sessions left the room
        held, self.held = self.held, []
        out: list[Command[S]] = [Release(hand_to)]
        if self.handed_to:
            out += [Forward(self.handed_to, f.sender, f.payload, f.origin, f.req_id, f.idem)
                    for f in held]
        return out

    # -- helpers ----------------------------------------------------------------------

    def _reforward(self, now: float) -> list[Command[S]]:
        """Re-submit the publishes waiting for an owner: assign them here if the room
        is ours now, else send them to the current owner (idempotent either way)."""
        if not self.forwarded:
            return []
        out: list[Command[S]] = []
        if self.state in _ASSIGNING:
            waiting, self.forwarded = self.forwarded, {}
            for (sender, req_id), fw in waiting.items():
                out += self._on_local_publish(
                    LocalPublish(fw.session, sender, fw.payload, req_id, fw.idem), now)
            return out
        deadline = now + self.cfg.forward_timeout
        for (sender, req_id), fw in self.forwarded.items():
            fw.deadline = deadline
            out.append(Forward(self.owner, sender, fw.payload, self.edge_id, req_id, fw.idem))
        return out

    def _assign(self, sender: str, payload: bytes, origin: str, req_id: int, idem: int,
                out: list[Command[S]]) -> Pos:
        self.seq += 1
        epoch, seq = self.epoch, self.seq
        body = encode_message(self.name, epoch, seq, sender, payload, idem)
        out.append(Fanout(body, sender, True, None, (epoch, seq)))
        self._ring(epoch, seq, body)
        if idem:
            self.idems.remember(sender, idem, (epoch, seq))
        local = self.state is St.LOCAL
        if not local:
            out.append(Append(epoch, seq, sender, payload, origin, req_id, idem))
        if self.to_origin:
            if local:  # no durability to wait for
                out.append(Uplink((epoch, seq), sender, payload))
            else:
                self.uplink_wait.append((epoch, seq, sender, payload))
        return epoch, seq

    def _ring(self, epoch: int, seq: int, body: bytes) -> None:
        ring = self.ring
        ring.append((epoch, seq, body))
        if len(ring) > self.cfg.ring_size:
            ring.popleft()
