"""The pump between the protocol core and an asyncio link.

:class:`ClientPump` is the I/O half of :class:`client_sdk.Client` without the
connection policy: it feeds frames read from the current link to the sans-I/O
core (:class:`~client_sdk.protocol.connection.ClientConnection`), writes
``data_to_send()`` to the link, turns the core's events into resolved futures,
subscription deliveries and callbacks, and keeps one timer armed for the core's
``next_deadline``.  It also holds the public extension seam:
:meth:`ClientPump.request`, :meth:`ClientPump.send_frame` and
:meth:`ClientPump.add_frame_handler` (what :mod:`client_sdk.device` builds on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ClientClosedError, EdgeRelayError
from .protocol import Dropped, Frame, History, HistoryPage, Message, Welcome
from .protocol.connection import ClientConnection
from .protocol.events import (
    FrameIgnored,
    FrameReceived,
    HandoffRequested,
    KeepaliveTimeout,
    NeighboursChanged,
    PingFailed,
    PongReceived,
    PresenceEvent,
    PublishAcked,
    PublishFailed,
    RecoveryEvent,
    RequestAnswered,
    RequestFailed,
    ServerNotice,
)
from .transport import Link

if TYPE_CHECKING:
    from .game import GameRoom
    from .subscription import Subscription

__all__ = ["ClientPump", "Position"]

log = logging.getLogger("client_sdk")

F = TypeVar("F")
#: The clock of the core's deadlines (not loop.time(): uvloop's is cached per
#: iteration, in milliseconds; round trips here are ~100 µs).
now = time.monotonic


@dataclass(frozen=True, slots=True)
class Position:
    """Position of a reliable message in its room: ``(epoch, seq)``."""

    epoch: int
    seq: int


class ClientPump:
    """Drives a :class:`ClientConnection` over the current :class:`Link`.

    Contract for subclasses: set ``_link`` and call :meth:`_adopt_link` when a
    link is welcomed, feed each frame read to :meth:`_received`, call
    ``_core.connection_lost`` + :meth:`_pump` when it dies, :meth:`_shutdown`
    once for good; override :meth:`_handoff_requested`.
    """

    def __init__(self, *, request_timeout: float, retry_delay: float) -> None:
        self.request_timeout = request_timeout
        # Keepalive is the links' job (WebSocket / QUIC pings), not the core's.
        self._core = ClientConnection(retry_delay=retry_delay)
        self.rtt: float | None = None
        self.errors: list[tuple[int, str]] = []
        self.on_error: Callable[[int, str], None] | None = None
        self.on_recovery: Callable[[RecoveryEvent], None] | None = None
        self.recoveries: list[RecoveryEvent] = []
        #: Frames neither the client nor a handler from :meth:`add_frame_handler` takes.
        self.on_other_frame: Callable[[Frame], None] | None = None
        #: Messages a handed-off client took from its *old* connection after switching
        #: to the new one (the overlap of make before break; copies are dropped).
        self.handoff_overlap_messages = 0
        #: Rooms not yet resumed on the connection a handoff moved to, and the event
        #: set when none is left (the old connection is closed then).
        self._unresumed: set[str] = set()
        self._all_resumed = asyncio.Event()
        self._frame_handlers: dict[type[Any], list[Callable[[Any], None]]] = {}
        self._error_handlers: list[Callable[[int, str], None]] = []
        self._link: Link | None = None
        self._subs: dict[str, Subscription] = {}
        self._games: dict[str, GameRoom] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        # One waiter per request, per reliable publish (by idem), per ping (by stamp).
        self._requests: dict[int, asyncio.Future[Frame]] = {}
        self._publishes: dict[int, asyncio.Future[Position]] = {}
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._on_event: dict[type[Any], Callable[[Any], None]] = {
            Message: self._ev_message,
            RequestAnswered: self._ev_answered,
            RequestFailed: self._ev_request_failed,
            PublishAcked: self._ev_acked,
            PublishFailed: self._ev_publish_failed,
            PongReceived: self._ev_pong,
            PingFailed: self._ev_ping_failed,
            ServerNotice: self._ev_notice,
            HandoffRequested: self._handoff_requested,
            NeighboursChanged: _ignore,  # the core keeps the list (client.neighbours)
            RecoveryEvent: self._ev_recovery,
            PresenceEvent: self._ev_room,
            KeepaliveTimeout: self._ev_keepalive_timeout,
            FrameReceived: self._ev_frame,
            FrameIgnored: self._ev_ignored,
            Dropped: self._ev_room,
        }

    # -- session state (kept by the core) ----------------------------------------

    @property
    def session_id(self) -> str:
        """The session's id (stable across resume; the ``sender`` of its messages)."""
        return self._core.session_id

    @property
    def edge_id(self) -> str:
        """Id of the edge of the current connection."""
        return self._core.edge_id

    @property
    def server_info(self) -> dict[str, object]:
        """The current edge's WELCOME info (ping interval, limits, neighbours, ...)."""
        return self._core.server_info

    @property
    def neighbours(self) -> list[str]:
        """Other edges announced by the current edge (WELCOME, NEIGHBOURS), best first."""
        return self._core.neighbours

    @property
    def unreliable_dropped(self) -> int:
        """Unreliable publishes dropped because the client was not connected."""
        return self._core.unreliable_dropped

    @property
    def transport(self) -> str:
        """Transport of the current connection: ``"ws"`` or ``"quic"``."""
        return self._link.transport if self._link is not None else ""

    @property
    def connected(self) -> bool:
        """True while a connection to an edge is open."""
        return self._connected.is_set() and self._core.closed is None

    @property
    def outbox_size(self) -> int:
        """Reliable publishes not yet confirmed durable."""
        return len(self._core.outbox)

    # -- the pump --------------------------------------------------------------------

    def _pump(self, t: float) -> None:
        """Write the core's output to the current link, dispatch its events and arm
        the timer (``t``: the time passed to the core just before).  Called after
        every call into the core."""
        core = self._core
        out = core.data_to_send()
        if out:
            link = self._link
            if link is not None:
                for data, reliable in out:
                    if reliable:
                        link.send(data)
                    else:
                        link.send_unreliable(data)
        evs = core.events()
        if evs:
            on_event = self._on_event
            for ev in evs:
                on_event[type(ev)](ev)
        deadline = core.next_deadline(t)
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = asyncio.get_running_loop().call_later(deadline - t, self._on_timer)

    def _on_timer(self) -> None:
        # A timer that fires early (its deadline was answered meanwhile) is harmless:
        # the core does nothing and the pump arms the next one.
        self._timer = self._timer_at = None
        t = now()
        self._core.handle_timer(t)
        self._pump(t)

    def _received(self, link: Link, raw: bytes) -> None:
        """One frame read from ``link``: the current one, or one a handoff left
        (only its messages still count there)."""
        t = now()
        if link is self._link:
            # The hot path: a message comes back from the core with nothing else
            # to do (see ClientConnection.receive), so there is nothing to pump.
            m = self._core.receive(raw, t)
            if m is None:
                self._pump(t)
                return
            sub = self._subs.get(m.room)
            if sub is not None:
                sub._deliver(m)
            return
        self._core.receive_frame(raw, t, retiring=True)
        for ev in self._core.events():
            if type(ev) is Message:
                self.handoff_overlap_messages += 1
                self._ev_message(ev)

    def _adopt_link(self, link: Link, welcome: Welcome) -> None:
        """Make ``link`` the current connection: the core fails requests pending on
        a previous one and re-sends the outbox on this one."""
        self._link = link
        t = now()
        self._core.connection_made(welcome, t)
        self._pump(t)

    def _shutdown(self, exc: ClientClosedError) -> None:
        """End the session: every waiter fails with ``exc``, subscriptions end."""
        self._core.close(exc)
        self._connected.set()  # wake waiters so they see the closed state
        self._pump(now())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        for sub in self._subs.values():
            sub._end(exc)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the client keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events from the core --------------------------------------------------------

    def _ev_message(self, m: Message) -> None:
        sub = self._subs.get(m.room)
        if sub is not None:
            sub._deliver(m)

    def _ev_answered(self, ev: RequestAnswered) -> None:
        fut = self._requests.pop(ev.req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(ev.reply)

    def _ev_request_failed(self, ev: RequestFailed) -> None:
        fut = self._requests.pop(ev.req_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(ev.error)

    def _ev_acked(self, ev: PublishAcked) -> None:
        fut = self._publishes.pop(ev.idem, None)
        if fut is not None and not fut.done():
            fut.set_result(Position(*ev.position))

    def _ev_publish_failed(self, ev: PublishFailed) -> None:
        fut = self._publishes.pop(ev.idem, None)
        if fut is not None and not fut.done():
            fut.set_exception(ev.error)

    def _ev_pong(self, ev: PongReceived) -> None:
        fut = self._pings.pop(ev.stamp, None)
        if fut is not None and not fut.done():
            fut.set_result(ev.rtt)

    def _ev_ping_failed(self, ev: PingFailed) -> None:
        fut = self._pings.pop(ev.stamp, None)
        if fut is not None and not fut.done():
            fut.set_exception(ev.error)

    def _ev_notice(self, ev: ServerNotice) -> None:
        self.errors.append((ev.code, ev.message))
        del self.errors[:-100]
        if self.on_error is not None:
            self.on_error(ev.code, ev.message)
        for handler in list(self._error_handlers):
            handler(ev.code, ev.message)

    def add_error_handler(self, handler: Callable[[int, str], None]) -> Callable[[], None]:
        """Also call ``handler(code, text)`` for each ERROR that answers no request
        (besides ``on_error``); returns a function that removes it."""
        self._error_handlers.append(handler)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._error_handlers.remove(handler)

        return remove

    def _handoff_requested(self, ev: HandoffRequested) -> None:
        """HANDOFF from a draining edge: the connection policy's business."""

    def _ev_recovery(self, ev: RecoveryEvent) -> None:
        self.recoveries.append(ev)
        del self.recoveries[:-1000]
        if self._unresumed:
            self._unresumed.discard(ev.room)
            if not self._unresumed:
                self._all_resumed.set()
        sub = self._subs.get(ev.room)
        if sub is not None:
            sub._recovered(ev)
        if self.on_recovery is not None:
            self.on_recovery(ev)

    def _ev_room(self, ev: PresenceEvent | Dropped) -> None:
        sub = self._subs.get(ev.room)
        if sub is not None:
            sub._presence(ev) if isinstance(ev, PresenceEvent) else sub._edge_dropped(ev)

    def _ev_keepalive_timeout(self, ev: KeepaliveTimeout) -> None:
        if self._link is not None:
            self._link.abort()  # the runner sees the link end and reconnects

    def _ev_frame(self, ev: FrameReceived) -> None:
        handlers = self._frame_handlers.get(type(ev.frame))
        if handlers:
            for handler in list(handlers):
                handler(ev.frame)
        elif self.on_other_frame is not None:
            self.on_other_frame(ev.frame)

    def _ev_ignored(self, ev: FrameIgnored) -> None:
        log.warning("undecodable frame from edge: %s", ev.reason)

    # -- the extension seam ----------------------------------------------------------

    async def _wait_connected(self, timeout: float) -> None:
        closed = self._core.closed
        if closed is not None:
            raise closed
        if not self._connected.is_set():
            async with asyncio.timeout(timeout):
                await self._connected.wait()

    async def ping(self) -> float:
        """Measure the round-trip time to the edge, in seconds (also kept in ``rtt``)."""
        t = now()
        stamp = self._core.send_ping(t, self.request_timeout)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[stamp] = fut
        try:
            self._pump(t)
            self.rtt = await fut
        finally:
            self._pings.pop(stamp, None)
        return self.rtt

    async def check_alive(self, timeout: float = 1.0) -> bool:
        """Probe the edge now, with a short deadline: for an app back in the foreground,
        whose socket may look open while nothing arrives (a mobile network changed, a
        NAT forgot the flow), long before the keepalive would notice.

        True if the edge answered a PING within ``timeout`` seconds.  Otherwise the
        link is dropped at once and the client reconnects and resumes as after any
        lost link (a neighbour first), and False is returned without waiting for
        that: ``await client.wait_connected()`` does."""
        link = self._link
        if link is None or not self._connected.is_set():
            return False
        try:
            await asyncio.wait_for(self.ping(), timeout)
            return True
        except (TimeoutError, EdgeRelayError):
            if link is self._link:
                self._connected.clear()  # not connected from now on (wait_connected)
                link.abort()  # the runner sees the link end and reconnects
            return False

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client has a live connection (after a reconnect); raises
        ``TimeoutError`` after ``timeout`` seconds, or the reason the client closed."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()
        closed = self._core.closed
        if closed is not None:
            raise closed

    async def request(self, frame: Frame, *, timeout: float | None = None) -> Frame:
        """Send a request frame and return the edge's reply (JOINED, ACK, ...).

        ``frame`` is one of the request types (JOIN, LEAVE, PRESENCE_LIST,
        REPORT_STATE); its ``req_id`` is replaced by a fresh one.  Waits for a
        connection first (``TimeoutError`` after ``timeout``), then for the reply
        (default ``request_timeout`` each).  Raises the :class:`ServerError`
        subclass of an ERROR reply, :class:`RequestTimeoutError`,
        :class:`ConnectionLostError` (the link dropped first: requests are not
        re-sent) or :class:`ClientClosedError`.
        """
        limit = self.request_timeout if timeout is None else timeout
        await self._wait_connected(limit)
        t = now()
        req_id = self._core.send_request(frame, t, limit)
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._requests[req_id] = fut
        try:
            self._pump(t)
            return await fut
        finally:
            self._requests.pop(req_id, None)
            self._core.cancel_request(req_id)

    async def history(self, room: str, after: tuple[int, int] | Position | None = None, *,
                      limit: int = 100) -> HistoryPage:
        """A page of ``room``'s stored reliable messages after position ``after`` (None:
        from the oldest one kept), at most ``limit`` (1-1000), oldest first: for a new
        session to catch up, before or after joining.  Page on with ``after`` = the last
        message's ``(epoch, seq)`` while ``page.more``; ``page.gap`` says messages just
        after ``after`` were no longer kept.  Needs the token's permission to join."""
        pos = (0, 0) if after is None else (
            (after.epoch, after.seq) if isinstance(after, Position) else after)
        reply = await self.request(History(0, room, pos[0], pos[1], limit))
        assert isinstance(reply, HistoryPage)
        return reply

    def send_frame(self, frame: Frame, *, reliable: bool = True) -> None:
        """Send a one-way frame now (TELEMETRY, COMMAND_ACK, ...): no reply is tracked.

        Raises :class:`ConnectionLostError` when not connected (nothing is queued)
        and :class:`ClientClosedError` once closed.
        """
        self._core.send_frame(frame, reliable)
        self._pump(now())

    def _send(self, data: bytes, reliable: bool = True) -> None:
        """Send encoded bytes as they are (tests and tools; errors as :meth:`send_frame`)."""
        self._core.send_bytes(data, reliable)
        self._pump(now())

    def add_frame_handler(self, frame_type: type[F],
                          handler: Callable[[F], None]) -> Callable[[], None]:
        """Call ``handler`` with each frame of ``frame_type`` from the edge (device
        frames: TELEMETRY_ACK, COMMAND, SHADOW_DELTA, ...); returns a function that
        removes it.  Handlers run synchronously in the reading task, in the order
        added; frames with no handler go to ``on_other_frame``.  Frame types the
        client handles itself (MESSAGE, ACK, ERROR, ...) raise ``ValueError``.
        """
        if self._core.handles(frame_type):
            raise ValueError(f"{frame_type.__name__} frames are handled by the client")
        handlers = self._frame_handlers.setdefault(frame_type, [])
        handlers.append(handler)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                handlers.remove(handler)

        return remove


def _ignore(ev: object) -> None:
    """Events that need nothing from the client."""
