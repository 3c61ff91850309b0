"""A joined room as seen by the application: an async iterator of messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .protocol import Member, Message

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Subscription", "PresenceEvent"]


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A member joined (``joined=True``) or left a room."""

    room: str
    joined: bool
    member: Member


class Subscription:
    """Messages of one room.  ``async for msg in sub`` until :meth:`leave`.

    The queue holds at most ``queue_size`` messages; when the application
    falls behind, the oldest queued message is dropped and ``dropped`` counts
    it (a slow reader never stalls the connection).
    """

    def __init__(self, client: Client, room: str, flags: int,
                 on_message: Callable[[Message], None] | None, queue_size: int) -> None:
        self.client = client
        self.room = room
        self.flags = flags
        self.position: tuple[int, int] = (0, 0)
        self.received = 0
        self.dropped = 0
        self._on_message = on_message
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(queue_size)
        self._presence_q: asyncio.Queue[PresenceEvent | None] = asyncio.Queue(10_000)
        self._error: BaseException | None = None
        self._ended = False

    def _deliver(self, m: Message) -> None:
        self.received += 1
        if m.epoch:
            self.position = (m.epoch, m.seq)
        cb = self._on_message
        if cb is not None:
            cb(m)
            return
        q = self._queue
        if q.full():
            q.get_nowait()
            self.dropped += 1
        q.put_nowait(m)

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
