"""A joined room as seen by the application: an async iterator of messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .presence import PresenceView
from .protocol import JOIN_NO_ECHO, Dropped, Member, Message
from .protocol.events import PresenceEvent, RecoveryEvent
from .protocol.rooms import RoomState

if TYPE_CHECKING:
    from .room_api import RoomApi

__all__ = ["Subscription", "PresenceEvent", "RecoveryEvent"]


class Subscription:
    """Messages of one room.  ``async for msg in sub`` until :meth:`leave`.

    The queue holds at most ``queue_size`` messages; when the application
    falls behind, the oldest queued message is dropped and ``dropped`` counts
    it (a slow reader never stalls the connection).

    Reliable messages are delivered once: a copy at or before ``position``
    (replay overlap) or with a sender's idempotency key already seen (a
    publish re-sent after a failover) is dropped and counted in
    ``duplicates``.

    With the ``drop`` delivery policy (``join(..., delivery="drop")``) the edge
    drops the oldest of this room's messages while the client reads too slowly and
    says so in a DROPPED frame: ``edge_dropped`` counts them, :meth:`next_drop`
    returns each notice, and :meth:`recover` reads the reliable ones back.
    """

    def __init__(self, client: RoomApi, state: RoomState,
                 on_message: Callable[[Message], None] | None, queue_size: int) -> None:
        self.client = client
        self.room = state.room
        self.received = 0
        self.dropped = 0
        #: Messages the edge did not deliver (``drop`` delivery policy), total.
        self.edge_dropped = 0
        self._drop_q: asyncio.Queue[Dropped] = asyncio.Queue(1000)
        self._state = state  # position and dedupe: the protocol core's
        self._recovery_q: asyncio.Queue[RecoveryEvent] = asyncio.Queue(1000)
        self._on_message = on_message
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(queue_size)
        self._presence_q: asyncio.Queue[PresenceEvent | None] = asyncio.Queue(10_000)
        self._error: BaseException | None = None
        self._ended = False
        #: The member list (rooms joined with ``presence=True``; client_sdk.presence).
        self._view: PresenceView | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def flags(self) -> int:
        """JOIN flags the room was joined with (presence, no echo)."""
        return self._state.flags

    @property
    def position(self) -> tuple[int, int]:
        """The last ``(epoch, seq)`` received (where a resume continues from)."""
        return self._state.position

    @property
    def duplicates(self) -> int:
        """Copies dropped before the application saw them."""
        return self._state.duplicates

    @property
    def own_skipped(self) -> int:
        """Own publishes replayed after a resume and skipped (joined with ``echo=False``)."""
        return self._state.own_skipped

    def _deliver(self, m: Message) -> None:
        """Hand one new MESSAGE to the application (hot path: once per message;
        the core has already dropped copies)."""
        self.received += 1
        cb = self._on_message
        if cb is not None:
            cb(m)
            return
        q = self._queue
        if q.full():
            q.get_nowait()
            self.dropped += 1
        q.put_nowait(m)

    def _recovered(self, ev: RecoveryEvent) -> None:
        if self._recovery_q.full():
            self._recovery_q.get_nowait()
        self._recovery_q.put_nowait(ev)

    async def next_recovery(self, timeout: float | None = None) -> RecoveryEvent:
        """The next :class:`RecoveryEvent` of this room (``TimeoutError`` after ``timeout``)."""
        return await asyncio.wait_for(self._recovery_q.get(), timeout)

    @property
    def members(self) -> list[Member]:
        """The room's members (``presence=True``: from the list fetched at join and the
        presence events since; reconnecting ones included), by session id."""
        return self._view.members if self._view is not None else []

    @property
    def reconnecting(self) -> list[Member]:
        """Members the edge reported gone whose grace is still running."""
        return self._view.reconnecting if self._view is not None else []

    def _queue_presence(self, ev: PresenceEvent) -> None:
        if self._presence_q.full():
            self._presence_q.get_nowait()
        self._presence_q.put_nowait(ev)

    def _presence(self, ev: PresenceEvent) -> None:
        view = self._view
        if view is None:
            self._queue_presence(ev)
            return
        now = asyncio.get_running_loop().time()
        events = (view.joined(ev.member, now) if ev.joined
                  else view.left(ev.member, now, ev.lost))
        for e in events:
            self._queue_presence(e)
        self._arm()

    def _members_loaded(self, members: list[Member]) -> None:
        """The room's member list as the edge sent it (at join, after a resume)."""
        if self._view is None or self._ended:
            return
        for e in self._view.load(members, asyncio.get_running_loop().time()):
            self._queue_presence(e)
        self._arm()

    def _arm(self) -> None:
        """Schedule the next end of a presence grace."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        due = self._view.next_deadline() if self._view is not None else None
        if due is not None and not self._ended:
            self._expiry = asyncio.get_running_loop().call_at(due, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self._view is not None and not self._ended:
            for e in self._view.expire(asyncio.get_running_loop().time()):
                self._queue_presence(e)
            self._arm()

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for q in (self._queue, self._presence_q):
            if q.full():
                q.get_nowait()
            q.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        m = await self._queue.get()
        if m is None:
            self._queue.put_nowait(None)  # keep the iterator ended for other readers
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return m

    async def get(self, timeout: float | None = None) -> Message:
        """Next message, waiting at most ``timeout`` seconds (``TimeoutError``)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def presence_events(self) -> AsyncIterator[PresenceEvent]:
        """Presence join/leave events (join with ``presence=True``)."""
        while True:
            ev = await self._presence_q.get()
            if ev is None:
                self._presence_q.put_nowait(None)
                return
            yield ev

    async def next_presence(self, timeout: float | None = None) -> PresenceEvent:
        """Next presence event (``TimeoutError`` after ``timeout``)."""
        ev = await asyncio.wait_for(self._presence_q.get(), timeout)
        if ev is None:
            self._presence_q.put_nowait(None)
            raise StopAsyncIteration
        return ev

    def _edge_dropped(self, f: Dropped) -> None:
        self.edge_dropped += f.dropped
        if self._drop_q.full():
            self._drop_q.get_nowait()  # the oldest notice goes: the count stays exact
        self._drop_q.put_nowait(f)

    async def next_drop(self, timeout: float | None = None) -> Dropped:
        """The next DROPPED notice for this room (``TimeoutError`` after ``timeout``)."""
        return await asyncio.wait_for(self._drop_q.get(), timeout)

    async def recover(self, notice: Dropped, *, page: int = 500) -> list[Message]:
        """The reliable messages ``notice`` says were dropped, read back from the room's
        history, oldest first (without this client's own when joined with
        ``echo=False``).  Fewer when the history no longer holds them all (it keeps
        the newest ``--stream-maxlen``).  They are not delivered to the iterator."""
        if not notice.reliable:
            return []
        after, last = (notice.first[0], notice.first[1] - 1), notice.last
        own = self.client.session_id if self.flags & JOIN_NO_ECHO else None
        out: list[Message] = []
        while True:
            reply = await self.client.history(self.room, after, limit=page)
            for epoch, seq, sender, payload, idem in reply.messages:
                if (epoch, seq) > last:
                    return out
                if sender != own:
                    out.append(Message(self.room, epoch, seq, sender, payload, idem))
                after = (epoch, seq)
            if not reply.more or not reply.messages:
                return out

    async def leave(self) -> None:
        """Leave the room (same as ``client.leave(room)``)."""
        await self.client.leave(self.room)
