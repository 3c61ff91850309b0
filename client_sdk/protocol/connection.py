"""The client protocol core: a client session as a sans-I/O object.

Frames in, events out; the caller owns the sockets and the clock::

    core = ClientConnection()
    link.send(core.hello(token, name))              # on a fresh link
    core.connection_made(core.decode(first_frame), now)
    req = core.send_request(Join(0, "lobby", 0), now, timeout=10)  # queues JOIN
    for data, reliable in core.data_to_send(): ...   # write them
    core.receive_frame(raw, now)                     # for each frame read
    m = core.receive(raw, now)                       # (or: messages returned, not queued)
    for ev in core.events(): ...                     # RequestAnswered(req, Joined(...)), ...
    core.handle_timer(now) when now >= core.next_deadline(now)

It owns what outlives one connection, each part kept by a collaborator: request
ids and pending requests (:class:`~.requests.Requests`), the outbox of reliable
publishes (one :class:`~.outbox.OutboxItem` each, sent, retried and resolved by
:class:`~.publisher.Publisher`), the tracked rooms and the resume map (room ->
last position and dedupe memory, :class:`~.resume.ResumeTracker`), every
deadline (:class:`~.timers.Deadlines`, plus the optional
:class:`~.timers.Keepalive`); and the session's identity itself.  It never
reads a clock, sleeps or touches a socket; the reconnect, backoff and failover
policy belongs to the driver (:class:`client_sdk.Client`).

Incoming frames are dispatched by a table keyed on the frame's type (answers to
requests, publishes and pings go to :class:`~.answers.Answers`); frames the
core does not handle itself come out as :class:`~.events.FrameReceived` (the
extension seam: device frames).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

from ..errors import (
    ClientClosedError,
    ConnectionLostError,
)
from .answers import Answers
from .codec import Decoder, encode
from .delivery import Dropped
from .errors import ProtocolError
from .events import (
    Event,
    FrameIgnored,
    FrameReceived,
    HandoffRequested,
    NeighboursChanged,
    PresenceEvent,
    RecoveryEvent,
)
from .function_frames import Rpc, RpcResult
from .limits import Limits
from .messages import (
    Ack,
    Error,
    Frame,
    Handoff,
    Join,
    Joined,
    Leave,
    Message,
    Neighbours,
    Ping,
    Pong,
    PresenceJoin,
    PresenceLeave,
    PresenceList,
    PresenceMembers,
    Publish,
    ReportState,
    Resumed,
    Welcome,
)
from .outbox import Outbox, OutboxItem
from .publisher import Publisher, check_publish_size
from .requests import Requests
from .resume import ResumeTracker
from .room_frames import History, HistoryPage, RoomList, RoomListing
from .rooms import RoomState
from .timers import Deadlines, Keepalive
from .token_frames import Refresh, Refreshed

__all__ = ["ClientConnection", "ConnState", "INBOUND_LIMITS", "REQUEST_TYPES"]

#: What a client accepts from an edge (larger than what an edge accepts from a client).
INBOUND_LIMITS = Limits(max_frame_bytes=16 * 1024 * 1024, max_presence_list=100_000)

#: Frames that are requests: they carry a ``req_id`` and get one reply (or ERROR).
REQUEST_TYPES: frozenset[type[Any]] = frozenset({Join, Leave, PresenceList, ReportState,
                                                  RoomList, History, Rpc, Refresh})


#: The replies to requests (each answers its ``req_id``; ACK and ERROR also answer
#: publishes and are routed on their own).
REPLY_TYPES: tuple[type[Any], ...] = (Joined, PresenceMembers, RoomListing, HistoryPage,
                                      RpcResult, Refreshed)


class ConnState(enum.Enum):
    """Where the session is: no link yet, on a link, between links, or ended."""

    IDLE = "idle"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


class ClientConnection:
    """One client session across its connections to edges (sans-I/O).

    Contract: call :meth:`connection_made` when a link's WELCOME arrives,
    :meth:`connection_lost` when the link dies, :meth:`close` once for good.
    After every call that may produce output (``send_*``, ``join``,
    ``receive_frame``, ``handle_timer``, ``connection_made``) write
    :meth:`data_to_send` to the current link and dispatch :meth:`events`; then
    arm a timer for :meth:`next_deadline`.  All times are seconds on the
    caller's monotonic clock.

    ``retry_delay``: wait before re-sending a publish the edge refused with a
    transient code.  ``ping_interval``/``ping_timeout``: optional protocol
    keepalive (a PING after ``ping_interval`` s without any frame from the edge;
    :class:`~.events.KeepaliveTimeout` if nothing arrives ``ping_timeout`` s
    after it) for links that have no keepalive of their own; off by default.
    """

    def __init__(self, *, limits: Limits = INBOUND_LIMITS, max_outbox: int = 100_000,
                 retry_delay: float = 0.5, ping_interval: float | None = None,
                 ping_timeout: float | None = None) -> None:
        self.state = ConnState.IDLE
        self.session_id = ""
        self.edge_id = ""
        self.server_info: dict[str, object] = {}
        self.resume_token = ""
        #: Other edges announced by the current edge (WELCOME, NEIGHBOURS), best first.
        self.neighbours: list[str] = []
        #: Unreliable publishes dropped because no link was up ("dropped if not connected").
        self.unreliable_dropped = 0
        self.keepalive = Keepalive(ping_interval, ping_timeout)
        self.outbox = Outbox(max_outbox)
        self._resume = ResumeTracker()
        #: The tracked rooms (see :meth:`track_room`); read it, don't change it.
        self.rooms = self._resume.rooms
        self._decoder = Decoder(limits)
        self._closed: ClientClosedError | None = None
        self._requests = Requests()
        self._deadlines = Deadlines(self._requests, self.outbox)
        self._publisher = Publisher(self.outbox, self._requests, self._deadlines, retry_delay)
        answers = Answers(self._requests, self._publisher, self.keepalive, self.rooms)
        self._out: list[tuple[bytes, bool]] = []
        self._events: list[Event] = []
        self._last_rx = 0.0  # when the edge last sent anything (the keepalive's clock)
        # Each handler returns the event to queue (None: no event).
        self._dispatch: dict[type[Any], Callable[[Any, float], Event | None]] = {
            Message: self._on_message,
            Ack: answers.ack,
            **dict.fromkeys(REPLY_TYPES, answers.reply),
            Error: answers.error,
            Pong: answers.pong,
            Ping: self._on_ping,
            Handoff: self._on_handoff,
            Neighbours: self._on_neighbours,
            Resumed: self._on_resumed,
            **dict.fromkeys((PresenceJoin, PresenceLeave, Dropped), self._on_room),
        }

    # -- output ----------------------------------------------------------------

    def data_to_send(self) -> list[tuple[bytes, bool]]:
        """Encoded frames to write, oldest first, as ``(data, reliable)``; clears them.

        ``reliable=False`` frames may go as a datagram.  The returned list must
        not be kept (it may be the core's empty buffer).
        """
        out = self._out
        if out:
            self._out = []
        return out

    def events(self) -> list[Event]:
        """Events since the last call, in order; clears them (same caveat as above)."""
        evs = self._events
        if evs:
            self._events = []
        return evs

    # -- connection lifecycle ----------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a link is up (between :meth:`connection_made` and loss/close)."""
        return self.state is ConnState.CONNECTED

    @property
    def ping_interval(self) -> float | None:
        """The protocol keepalive's interval (None: off); see :class:`Keepalive`."""
        return self.keepalive.interval

    @property
    def ping_timeout(self) -> float | None:
        """How long the keepalive waits for an answer to its PING."""
        return self.keepalive.timeout

    @property
    def retry_delay(self) -> float:
        """Wait before re-sending a publish the edge refused with a transient code."""
        return self._publisher.retry_delay

    @property
    def closed(self) -> ClientClosedError | None:
        """Why the session ended, once :meth:`close` was called."""
        return self._closed

    def resume_map(self) -> dict[str, object] | None:
        """The HELLO ``resume`` map (None before the first WELCOME)."""
        return self._resume.resume_map(self.session_id, self.resume_token)

    def hello(self, token: str, name: str = "") -> bytes:
        """The HELLO for a new link (counts a connection attempt).  Write it first;
        the link's first frame should then be the WELCOME (see :meth:`decode`)."""
        return self._resume.hello(token, name, self.session_id, self.resume_token)

    def decode(self, data: bytes) -> Frame:
        """Decode one frame from the edge (raises :class:`ProtocolError`)."""
        return self._decoder.decode(data)

    def connection_made(self, welcome: Welcome, now: float) -> None:
        """A link was welcomed; it is now the current one.

        Requests still pending on a previous link fail (a handoff moved us: they
        are not answered there); every publish in the outbox is queued again,
        in order, with its idempotency key; the edge replays each room from the
        resume map the HELLO carried.
        """
        if self._closed is not None:
            raise self._closed
        self.connection_lost("moved to another edge; retry")  # if still on the old link
        self.session_id = welcome.session_id
        self.edge_id = welcome.edge_id
        self.server_info = dict(welcome.info)
        rt = welcome.info.get("resume_token")
        self.resume_token = rt if isinstance(rt, str) else ""
        nb = welcome.info.get("neighbours")
        if isinstance(nb, list):
            self.neighbours = [u for u in nb if isinstance(u, str)]
        self.state = ConnState.CONNECTED
        self._last_rx = now
        self.keepalive.reset()
        self._out = [self._publisher.copy(item) for item in self.outbox.pending()]

    def connection_lost(self, why: str) -> None:
        """The current link died: pending requests and pings fail with
        :class:`ConnectionLostError` (``why`` in its message); publishes stay in
        the outbox until the next :meth:`connection_made`."""
        if self.state is not ConnState.CONNECTED:
            return
        self.state = ConnState.DISCONNECTED
        self._out = []
        self.keepalive.reset()
        self.outbox.unbind_all()
        self._events += self._requests.fail_all(ConnectionLostError(why))

    def close(self, exc: ClientClosedError) -> None:
        """End the session: every request, ping and publish fails with ``exc``."""
        if self._closed is not None:
            return
        self._closed = exc
        self.state = ConnState.CLOSED
        self._out = []
        self._events += self._requests.fail_all(exc)
        self._events += self._publisher.fail_all(exc)
        self._deadlines.clear()

    def _check_sendable(self) -> None:
        if self._closed is not None:
            raise self._closed
        if self.state is not ConnState.CONNECTED:
            raise ConnectionLostError("not connected")

    # -- requests ----------------------------------------------------------------

    def send_request(self, frame: Frame, now: float, timeout: float | None = None) -> int:
        """Queue a request frame (JOIN, LEAVE, PRESENCE_LIST, REPORT_STATE, ...) under
        a fresh request id, which replaces the frame's ``req_id``; returns the id.

        Its outcome is one :class:`RequestAnswered` or :class:`RequestFailed`
        event (ERROR frame, no answer within ``timeout``, link lost, closed).
        Raises :class:`ConnectionLostError` when no link is up and ``TypeError``
        for a frame that is not a request (reliable publishes go through
        :meth:`send_publish`).
        """
        if type(frame) not in REQUEST_TYPES:
            raise TypeError(f"{type(frame).__name__} is not a request frame")
        self._check_sendable()
        req_id, deadline = self._requests.add(type(frame).__name__, getattr(frame, "room", ""),
                                              now, timeout)
        out = dataclasses.replace(frame, req_id=req_id)  # type: ignore[arg-type]
        if deadline is not None:
            self._deadlines.request(req_id, deadline)
        self._out.append((encode(out), True))
        return req_id

    def cancel_request(self, req_id: int) -> None:
        """Forget a request whose caller stopped waiting (its reply is then ignored)."""
        self._requests.cancel(req_id)

    def track_room(self, room: str, flags: int) -> RoomState:
        """Start tracking ``room`` (no frame is sent; kept with its first ``flags``
        if already tracked) and return its state.  Then send a JOIN with
        :meth:`send_request`: its JOINED reply sets the room's position.  From
        now on the room's messages are delivered (deduplicated) and the room is
        in the resume map; if the join fails, call :meth:`forget_room`."""
        return self._resume.track(room, flags)

    def forget_room(self, room: str) -> None:
        """Stop tracking ``room`` (no frame is sent; a LEAVE is the caller's request)."""
        self._resume.forget(room)

    def handles(self, frame_type: type[Any]) -> bool:
        """True when frames of ``frame_type`` are handled by the core itself (they
        never come out as :class:`FrameReceived`)."""
        return frame_type in self._dispatch

    def send_ping(self, now: float, timeout: float | None = None) -> int:
        """Queue a PING; returns its stamp.  Outcome: :class:`PongReceived` (with the
        round trip) or :class:`PingFailed`."""
        self._check_sendable()
        stamp, deadline = self._requests.add_ping(now, timeout)
        if deadline is not None:
            self._deadlines.ping(stamp, deadline)
        self._out.append((encode(Ping(stamp)), True))
        return stamp

    def send_frame(self, frame: Frame, reliable: bool = True) -> None:
        """Queue a one-way frame (TELEMETRY, COMMAND_ACK, ...) as is."""
        self.send_bytes(encode(frame), reliable)

    def send_bytes(self, data: bytes, reliable: bool = True) -> None:
        """Queue already encoded bytes (tests, tools: the core does not look at them)."""
        self._check_sendable()
        self._out.append((data, reliable))

    # -- publishes -----------------------------------------------------------------

    def send_publish(self, room: str, payload: bytes, now: float, *, reliable: bool = True,
                     timeout: float | None = None, key: str = "") -> int:
        """Publish ``payload`` to ``room``; returns the idempotency key (0: unreliable).

        Reliable: the publish enters the outbox and is sent now if a link is up,
        else after the next :meth:`connection_made`; its outcome is one
        :class:`PublishAcked` or :class:`PublishFailed` (refused, or ``timeout``
        s passed: it leaves the outbox then, though it may have been delivered).
        Unreliable: sent now if a link is up, else dropped and counted in
        :attr:`unreliable_dropped`; ``key``: its conflation key.  Raises
        :class:`ClientClosedError` once closed, a :class:`ServerError` (4413) for a
        publish the edge would refuse as too large, and :class:`EdgeRelayError`
        when the outbox is full.
        """
        if self._closed is not None:
            raise self._closed
        if not reliable:
            self.check_size(room, payload)
            if self.state is not ConnState.CONNECTED:
                self.unreliable_dropped += 1
                return 0
            self._out.append((encode(Publish(0, room, payload, False, 0, key)), False))
            return 0
        item = self._publisher.queue(room, payload, now, timeout,
                                     self.server_info.get("max_frame_bytes"))
        if self.state is ConnState.CONNECTED:
            self._out.append(self._publisher.copy(item))
        return item.idem

    def discard_publish(self, idem: int) -> bool:
        """Take a publish out of the outbox without an event (the caller gave up);
        False if it was no longer pending."""
        return self.outbox.discard(idem) is not None

    def check_size(self, room: str, payload: bytes) -> None:
        """Refuse locally what the edge would refuse (4413) instead of waiting on it
        (:func:`~.publisher.check_publish_size` with the WELCOME's limit)."""
        check_publish_size(room, payload, self.server_info.get("max_frame_bytes"))

    # -- input -----------------------------------------------------------------------

    def receive_frame(self, data: bytes | Frame, now: float, *, retiring: bool = False) -> None:
        """Take one frame from the edge: raw bytes (decoded here) or a decoded frame.

        Undecodable bytes and unknown frame types become :class:`FrameIgnored`;
        nothing else changes.  A new message for the application comes out as
        the :class:`Message` event.  ``retiring=True``: the frame came on a link
        a handoff left (make before break); only its messages still count (the
        new link carries replies, acks and control frames).
        """
        if retiring:
            if self._closed is None:
                f = self._decode(data)
                if type(f) is Message and self._on_message(f, now) is not None:
                    self._events.append(f)
            return
        m = self.receive(data, now)
        if m is not None:
            self._events.append(m)

    def receive(self, data: bytes | Frame, now: float) -> Message | None:
        """:meth:`receive_frame` for the current link, with a fast path for messages.

        A new message for the application is *returned* (not queued as an event)
        when no event is pending, so messages and events keep their order.  A
        call that returns a message had no other effect to act on: no data to
        send, no event, no deadline earlier than before (the keepalive's moves
        later), so the caller may deliver it and skip :meth:`data_to_send`,
        :meth:`events` and :meth:`next_deadline`.  After a call that returns
        None, do all three as after any other call.
        """
        if self._closed is not None:
            return None
        if type(data) is bytes:  # _decode inlined: this runs once per message
            try:
                f: Frame = self._decoder.decode(data)
            except ProtocolError as exc:
                self._events.append(FrameIgnored.from_error(exc))
                return None
        else:
            decoded = self._decode(data)
            if decoded is None:
                return None
            f = decoded
        self._last_rx = now
        if type(f) is Message:
            # The hot path (once per message): no dispatch table, no event list.
            room = self.rooms.get(f.room)
            if room is None or not room.accept(f, self.session_id):
                return None
            if self._events:
                self._events.append(f)
                return None
            return f
        handler = self._dispatch.get(type(f))
        ev = FrameReceived(f) if handler is None else handler(f, now)
        if ev is not None:
            self._events.append(ev)
        return None

    def _decode(self, data: bytes | Frame) -> Frame | None:
        """``data`` as a frame; None (and :class:`FrameIgnored`) if it does not decode."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                return self._decoder.decode(data)
            except ProtocolError as exc:
                self._events.append(FrameIgnored.from_error(exc))
                return None
        return data

    def _on_message(self, m: Message, now: float) -> Message | None:
        room = self.rooms.get(m.room)
        return m if room is not None and room.accept(m, self.session_id) else None

    def _on_ping(self, f: Ping, now: float) -> None:
        self._out.append((encode(Pong(f.stamp)), True))

    def _on_handoff(self, f: Handoff, now: float) -> HandoffRequested:
        return HandoffRequested(f.url, f.reason, f.deadline_ms)

    def _on_neighbours(self, f: Neighbours, now: float) -> NeighboursChanged:
        self.neighbours = list(f.urls)
        return NeighboursChanged(f.urls)

    def _on_resumed(self, f: Resumed, now: float) -> RecoveryEvent:
        return RecoveryEvent(f.room, f.recovered, (f.epoch, f.seq), f.replayed, f.reason,
                             dict(f.info))

    def _on_room(self, f: PresenceJoin | PresenceLeave | Dropped,
                 now: float) -> PresenceEvent | Dropped | None:
        if f.room not in self.rooms:
            return None
        if isinstance(f, PresenceLeave):
            return PresenceEvent(f.room, False, f.member, f.lost)
        return f if isinstance(f, Dropped) else PresenceEvent(f.room, True, f.member)

    # -- time --------------------------------------------------------------------------

    def next_deadline(self, now: float) -> float | None:
        """When :meth:`handle_timer` must run next (``now`` if something is already
        due), or None when nothing waits on time."""
        best = self._deadlines.earliest()
        if self.state is ConnState.CONNECTED:
            ka = self.keepalive.deadline(self._last_rx)
            if ka is not None and (best is None or ka < best):
                best = ka
        return None if best is None else max(best, now)

    def handle_timer(self, now: float) -> None:
        """Act on every deadline up to ``now``: request, ping and publish timeouts,
        re-sends of refused publishes, the protocol keepalive."""
        connected = self.state is ConnState.CONNECTED
        for due in self._deadlines.expire(now):
            if not isinstance(due, OutboxItem):
                self._events.append(due)
            elif connected and not due.req_id:
                self._out.append(self._publisher.copy(due))
        if connected:
            ka = self.keepalive.tick(now, self._last_rx, self._requests.next_stamp)
            if isinstance(ka, Ping):
                self._out.append((encode(ka), True))
            elif ka is not None:
                self._events.append(ka)
