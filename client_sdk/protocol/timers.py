"""What the client core waits for by time (sans-I/O): its deadlines and the keepalive.

Neither reads a clock: times are the caller's, passed in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from ..errors import RequestTimeoutError
from .events import KeepaliveTimeout, PingFailed, PublishFailed, RequestFailed
from .messages import Ping
from .outbox import Outbox, OutboxItem
from .requests import Requests

__all__ = ["Deadlines", "Keepalive"]

# What a heap entry times.
_REQ, _PING, _PUB_TIMEOUT, _PUB_RETRY = range(4)


class Deadlines:
    """Every deadline of a client session, in one heap, earliest first: request
    and ping timeouts (of ``requests``), publish timeouts and re-sends of
    refused publishes (of ``outbox``).

    The tables are the truth: an entry is not removed when what it times is
    answered, dropped or given another deadline; it counts only while its
    table still holds that deadline, and dead entries are skipped when they
    come up (answering stays O(1); a moved deadline is added again).
    """

    __slots__ = ("_heap", "_outbox", "_requests")

    def __init__(self, requests: Requests, outbox: Outbox) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._requests = requests
        self._outbox = outbox

    def request(self, req_id: int, deadline: float) -> None:
        """Request ``req_id`` fails with :class:`RequestTimeoutError` at ``deadline``."""
        heapq.heappush(self._heap, (deadline, _REQ, req_id))

    def ping(self, stamp: int, deadline: float) -> None:
        """Ping ``stamp`` fails at ``deadline``."""
        heapq.heappush(self._heap, (deadline, _PING, stamp))

    def publish_timeout(self, item: OutboxItem) -> None:
        """``item`` leaves the outbox, failed, at its ``deadline``."""
        assert item.deadline is not None
        heapq.heappush(self._heap, (item.deadline, _PUB_TIMEOUT, item.idem))

    def publish_retry(self, item: OutboxItem) -> None:
        """``item`` is due to be sent again at its ``retry_at``."""
        assert item.retry_at is not None
        heapq.heappush(self._heap, (item.retry_at, _PUB_RETRY, item.idem))

    def earliest(self) -> float | None:
        """The earliest deadline that still holds, or None (drops dead entries)."""
        heap = self._heap
        while heap and not self._live(*heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> Iterator[RequestFailed | PingFailed | PublishFailed
                                             | OutboxItem]:
        """Settle every deadline up to ``now``, in time order: the event of each
        request, ping or publish that timed out (it leaves its table), or the
        outbox item due to be sent again (its ``retry_at`` cleared; sending it
        is the caller's).  Each is checked as it comes up, so acting on one may
        settle a later one."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, kind, key = heapq.heappop(heap)
            if not self._live(when, kind, key):
                continue
            if kind == _REQ:
                yield self._requests.expire_request(key)
            elif kind == _PING:
                yield self._requests.expire_ping(key)
            elif kind == _PUB_TIMEOUT:
                item = self._outbox.discard(key)
                assert item is not None
                yield PublishFailed(key, RequestTimeoutError(
                    f"publish not confirmed within {item.timeout:g} s"))
            else:
                retry = self._outbox.get(key)
                assert retry is not None
                retry.retry_at = None
                yield retry

    def clear(self) -> None:
        """Forget every deadline (the session is closed)."""
        self._heap.clear()

    def _live(self, when: float, kind: int, key: int) -> bool:
        """Does this entry still hold (not answered, removed or moved)?"""
        if kind == _REQ:
            return self._requests.live_request(key, when)
        if kind == _PING:
            return self._requests.live_ping(key, when)
        item = self._outbox.get(key)
        if item is None:
            return False
        if kind == _PUB_TIMEOUT:
            return item.deadline == when
        return item.retry_at == when


class Keepalive:
    """The optional protocol keepalive, for links that have none of their own.

    A PING goes after ``interval`` s without any frame from the edge; if nothing
    arrives within ``timeout`` s (default: ``interval``) after it, the link is
    dead (:class:`~.events.KeepaliveTimeout`).  ``interval`` None: off.  The
    time of the last frame received (``last_rx``) is the caller's: it is
    written on every frame.
    """

    __slots__ = ("_ping", "interval", "timeout")

    def __init__(self, interval: float | None, timeout: float | None) -> None:
        self.interval = interval
        self.timeout = timeout if timeout is not None else interval
        self._ping: tuple[int, float] | None = None  # (stamp, sent) of our PING

    def reset(self) -> None:
        """A link came or went: no PING of ours is out."""
        self._ping = None

    def deadline(self, last_rx: float) -> float | None:
        """When :meth:`ping_due` or :meth:`expired` must be asked next (None: off)."""
        if self.interval is None:
            return None
        if self._ping is None:
            return last_rx + self.interval
        return self._ping[1] + (self.timeout or self.interval)

    def ping_due(self, now: float, last_rx: float) -> bool:
        """True when a PING must go now; send it and call :meth:`sent`."""
        return (self._ping is None and self.interval is not None
                and now >= last_rx + self.interval)

    def sent(self, stamp: int, now: float) -> None:
        """Our PING ``stamp`` went at ``now``."""
        self._ping = (stamp, now)

    def pong(self, stamp: int) -> bool:
        """True (and the PING is settled) when ``stamp`` answers our PING: the PONG
        is the keepalive's, not a user ping's."""
        if self._ping is not None and self._ping[0] == stamp:
            self._ping = None
            return True
        return False

    def tick(self, now: float, last_rx: float,
             next_stamp: Callable[[], int]) -> Ping | KeepaliveTimeout | None:
        """What the keepalive does at ``now`` on a live link: the PING to send (its
        stamp from ``next_stamp``, recorded as :meth:`sent`) when one is due, else
        what :meth:`expired` says."""
        if self.ping_due(now, last_rx):
            stamp = next_stamp()
            self.sent(stamp, now)
            return Ping(stamp)
        return self.expired(now, last_rx)

    def expired(self, now: float, last_rx: float) -> KeepaliveTimeout | None:
        """Once our PING's timeout has passed it is settled: the event when nothing
        arrived since it was sent (the link is dead), else None (alive)."""
        ping = self._ping
        if ping is None or self.interval is None:
            return None
        if now < ping[1] + (self.timeout or self.interval):
            return None
        self._ping = None
        return KeepaliveTimeout(now - last_rx) if last_rx < ping[1] else None
