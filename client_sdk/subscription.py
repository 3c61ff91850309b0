"""A joined room as seen by the application: an async iterator of messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .dedupe import RecentKeys
from .protocol import Member, Message

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Subscription", "PresenceEvent", "RecoveryEvent"]

#: Idempotency keys remembered per sender and room (copies re-published after a
#: failover arrive within a few hundred messages of the original).
IDEM_WINDOW = 1024


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A member joined (``joined=True``) or left a room."""

    room: str
    joined: bool
    member: Member


@dataclass(frozen=True, slots=True)
class RecoveryEvent:
    """Outcome of resuming one room after a reconnect.

    ``recovered=True``: every reliable message published while the client was
    away has been (or is being) delivered, in order, ``replayed`` of them from
    history.  ``recovered=False``: some may be missing; ``reason`` says why
    (``history_trimmed``, ``session_expired``, ``too_many``, ...) and ``info``
    what is known (e.g. ``first_available`` position).  ``position`` is where
    the client resumed from.
    """

    room: str
    recovered: bool
    position: tuple[int, int]
    replayed: int
    reason: str
    info: dict[str, object]


class Subscription:
    """Messages of one room.  ``async for msg in sub`` until :meth:`leave`.

    The queue holds at most ``queue_size`` messages; when the application
    falls behind, the oldest queued message is dropped and ``dropped`` counts
    it (a slow reader never stalls the connection).

    Reliable messages are delivered once: a copy at or before ``position``
    (replay overlap) or with a sender's idempotency key already seen (a
    publish re-sent after a failover) is dropped and counted in
    ``duplicates``.
    """

    def __init__(self, client: Client, room: str, flags: int,
                 on_message: Callable[[Message], None] | None, queue_size: int) -> None:
        self.client = client
        self.room = room
        self.flags = flags
        self.position: tuple[int, int] = (0, 0)
        self.received = 0
        self.dropped = 0
        self.duplicates = 0
        self._idems: dict[str, RecentKeys[bool]] = {}
        self._recovery_q: asyncio.Queue[RecoveryEvent] = asyncio.Queue(1000)
        self._on_message = on_message
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(queue_size)
        self._presence_q: asyncio.Queue[PresenceEvent | None] = asyncio.Queue(10_000)
        self._error: BaseException | None = None
        self._ended = False

    def _deliver(self, m: Message) -> None:
        """Hand one MESSAGE to the application (hot path: once per message)."""
        epoch = m.epoch
        if epoch:
            pos = (epoch, m.seq)
            if pos <= self.position:
                self.duplicates += 1
                return
            self.position = pos
            idem = m.idem
            if idem:
                seen = self._idems.get(m.sender)
                if seen is None:
                    seen = self._idems[m.sender] = RecentKeys(IDEM_WINDOW)
                elif idem in seen:
                    self.duplicates += 1
                    return
                seen.add(idem, True)
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

    def _presence(self, ev: PresenceEvent) -> None:
        if self._presence_q.full():
            self._presence_q.get_nowait()
        self._presence_q.put_nowait(ev)

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
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

    async def leave(self) -> None:
        """Leave the room (same as ``client.leave(room)``)."""
        await self.client.leave(self.room)
