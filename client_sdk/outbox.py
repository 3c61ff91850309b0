"""The publisher outbox: reliable publishes kept until the edge says they are durable.

Every reliable publish gets an idempotency key (``idem``), increasing for the
life of the client.  It stays in the outbox until its ACK arrives (the edge
acknowledges only once the message is in the room's history).  After a
reconnect every pending publish is sent again, in order, with the same key;
the room owner drops the copies it already has and acknowledges them with
the original position.  Together with resume this is what makes delivery
exactly-once for the application.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Outbox", "OutboxItem"]


@dataclass(slots=True)
class OutboxItem:
    """One unacknowledged reliable publish."""

    idem: int
    room: str
    payload: bytes
    future: asyncio.Future[tuple[int, int]]
    req_id: int = 0
    sends: int = 0


class Outbox:
    """Pending reliable publishes, in idempotency-key order."""

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[int, OutboxItem] = OrderedDict()
        self._by_req: dict[int, int] = {}
        self._idem = itertools.count(1)

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        """True when no more publishes may be queued."""
        return len(self._items) >= self.max_items

    def add(self, room: str, payload: bytes,
            future: asyncio.Future[tuple[int, int]]) -> OutboxItem:
        """Queue a publish and give it the next idempotency key."""
        item = OutboxItem(next(self._idem), room, payload, future)
        self._items[item.idem] = item
        return item

    def bind(self, item: OutboxItem, req_id: int) -> None:
        """Record that ``item`` was sent as request ``req_id``."""
        if item.req_id:
            self._by_req.pop(item.req_id, None)
        item.req_id = req_id
        item.sends += 1
        self._by_req[req_id] = item.idem

    def owns(self, req_id: int) -> bool:
        """True when ``req_id`` is an outstanding publish of this outbox."""
        return req_id in self._by_req

    def ack(self, req_id: int, epoch: int, seq: int) -> bool:
        """Resolve the publish sent as ``req_id``; False if unknown."""
        idem = self._by_req.pop(req_id, None)
        if idem is None:
            return False
        item = self._items.pop(idem, None)
        if item is not None and not item.future.done():
            item.future.set_result((epoch, seq))
        return True

    def fail(self, req_id: int, exc: BaseException) -> bool:
        """Remove the publish sent as ``req_id`` and fail its future."""
        idem = self._by_req.pop(req_id, None)
        if idem is None:
            return False
        item = self._items.pop(idem, None)
        if item is not None and not item.future.done():
            item.future.set_exception(exc)
        return True

    def retry_later(self, req_id: int) -> OutboxItem | None:
        """Forget the request id but keep the publish for a later re-send."""
        idem = self._by_req.pop(req_id, None)
        item = self._items.get(idem) if idem is not None else None
        if item is not None:
            item.req_id = 0
        return item

    def unbind_all(self) -> None:
        """The connection dropped: every pending publish must be sent again."""
        self._by_req.clear()
        for item in self._items.values():
            item.req_id = 0

    def pending(self) -> list[OutboxItem]:
        """Unacknowledged publishes, oldest first."""
        return list(self._items.values())

    def discard(self, idem: int) -> None:
        """Drop a publish the application gave up on."""
        item = self._items.pop(idem, None)
        if item is not None and item.req_id:
            self._by_req.pop(item.req_id, None)

    def fail_all(self, exc: BaseException) -> None:
        """The client is closed: fail every pending publish."""
        for item in self._items.values():
            if not item.future.done():
                item.future.set_exception(exc)
        self._items.clear()
        self._by_req.clear()
