"""The publisher outbox: reliable publishes kept until the edge says they are durable (sans-I/O).

Every reliable publish gets an idempotency key (``idem``), increasing for the
life of the client.  It stays in the outbox until its ACK arrives (the edge
acknowledges only once the message is in the room's history).  After a
reconnect every pending publish is sent again, in order, with the same key;
the room owner drops the copies it already has and acknowledges them with
the original position.  Together with resume this is what makes delivery
exactly-once for the application.

One :class:`OutboxItem` per publish is the only record of it: the driver keys
its own waiter (an asyncio future) by ``idem``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Outbox", "OutboxItem"]


@dataclass(slots=True)
class OutboxItem:
    """One unacknowledged reliable publish.

    ``req_id`` is the request id of its copy on the current connection (0: not
    sent on it yet), ``deadline`` when the application gives up on it (None:
    never), ``retry_at`` when a transiently refused copy is sent again.
    """

    idem: int
    room: str
    payload: bytes
    req_id: int = 0
    sends: int = 0
    deadline: float | None = None
    timeout: float = 0.0
    retry_at: float | None = None


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

    def add(self, room: str, payload: bytes) -> OutboxItem:
        """Queue a publish and give it the next idempotency key."""
        item = OutboxItem(next(self._idem), room, payload)
        self._items[item.idem] = item
        return item

    def get(self, idem: int) -> OutboxItem | None:
        """The pending publish with key ``idem``, if any."""
        return self._items.get(idem)

    def bind(self, item: OutboxItem, req_id: int) -> None:
        """Record that ``item`` was sent as request ``req_id``."""
        if item.req_id:
            self._by_req.pop(item.req_id, None)
        item.req_id = req_id
        item.sends += 1
        item.retry_at = None
        self._by_req[req_id] = item.idem

    def owns(self, req_id: int) -> bool:
        """True when ``req_id`` is an outstanding publish of this outbox."""
        return req_id in self._by_req

    def take(self, req_id: int) -> OutboxItem | None:
        """Remove and return the publish sent as ``req_id`` (its ACK or final
        refusal arrived); None if unknown."""
        idem = self._by_req.pop(req_id, None)
        if idem is None:
            return None
        return self._items.pop(idem, None)

    def retry_later(self, req_id: int, at: float) -> OutboxItem | None:
        """Forget the request id but keep the publish, to be sent again at ``at``."""
        idem = self._by_req.pop(req_id, None)
        item = self._items.get(idem) if idem is not None else None
        if item is not None:
            item.req_id = 0
            item.retry_at = at
        return item

    def unbind_all(self) -> None:
        """The connection changed: every pending publish must be sent again."""
        self._by_req.clear()
        for item in self._items.values():
            item.req_id = 0
            item.retry_at = None

    def pending(self) -> list[OutboxItem]:
        """Unacknowledged publishes, oldest first."""
        return list(self._items.values())

    def discard(self, idem: int) -> OutboxItem | None:
        """Drop a publish (the application gave up on it); returns it if it was pending."""
        item = self._items.pop(idem, None)
        if item is not None and item.req_id:
            self._by_req.pop(item.req_id, None)
        return item

    def clear(self) -> list[OutboxItem]:
        """Remove every pending publish (the client is closed); returns them."""
        items = list(self._items.values())
        self._items.clear()
        self._by_req.clear()
        return items
