"""Reliable publishes on the wire (sans-I/O): the outbox's copies, acks, refusals and timeouts.

Part of the client core (:class:`~.connection.ClientConnection`), which owns
the link and the event queue: a :class:`Publisher` returns the frames to write
and the events to queue, and never writes or queues anything itself.
"""

from __future__ import annotations

from ..errors import EdgeRelayError, error_for_code
from .codec import encode
from .codes import ErrorCode, Retry, retry_for
from .events import PublishAcked, PublishFailed
from .messages import Ack, Error, Publish
from .outbox import Outbox, OutboxItem
from .requests import Requests
from .timers import Deadlines

__all__ = ["Publisher", "check_publish_size", "publish_retryable"]


def publish_retryable(code: int) -> bool:
    """True when a publish refused with ``code`` should stay in the outbox.

    Transient refusals (4000-4099: rate limited, owner did not confirm in time,
    overloaded) are retried; anything that reconnecting or waiting cannot fix
    (forbidden, not joined, too large) fails the publish.
    """
    return retry_for(code) is Retry.RECONNECT


def check_publish_size(room: str, payload: bytes, limit: object) -> None:
    """Raise the :class:`ServerError` (4413) the edge would answer a PUBLISH of
    ``payload`` to ``room`` with, when it exceeds ``limit`` (the edge's
    ``max_frame_bytes``; anything but an int: no limit known)."""
    # A PUBLISH frame is payload + room + at most 32 bytes of framing: only a
    # publish near the limit is worth encoding to measure (not every one).
    if isinstance(limit, int) and len(payload) + len(room) * 4 + 32 > limit:
        size = len(encode(Publish(2**32, room, payload, True, 2**32)))
        if size > limit:
            raise error_for_code(ErrorCode.FRAME_TOO_LARGE,
                                 f"publish of {size} bytes exceeds the edge's "
                                 f"limit of {limit} bytes")


class Publisher:
    """The bookkeeping of one session's reliable publishes between the outbox and the edge.

    Each publish is one :class:`~.outbox.OutboxItem` of ``outbox``; every copy
    sent (:meth:`copy`) gets a fresh request id from ``requests`` (ids are
    shared with requests, never reused), and its ACK (:meth:`acked`) or ERROR
    (:meth:`refused`) is matched by that id.  Publish timeouts and re-sends of
    refused copies are timed by ``deadlines``, which hands the items due back
    to the core (:meth:`~.timers.Deadlines.expire`).  Which link is current is
    the core's business: it calls :meth:`copy` only while one is up, and
    :meth:`~.outbox.Outbox.unbind_all` when the link changes.
    """

    __slots__ = ("_deadlines", "_requests", "outbox", "retry_delay")

    def __init__(self, outbox: Outbox, requests: Requests, deadlines: Deadlines,
                 retry_delay: float) -> None:
        self.outbox = outbox
        self.retry_delay = retry_delay
        self._requests = requests
        self._deadlines = deadlines

    def queue(self, room: str, payload: bytes, now: float, timeout: float | None,
              limit: object) -> OutboxItem:
        """Put a publish in the outbox (not sent yet: see :meth:`copy`) and return it.

        With a ``timeout`` it fails (:class:`~.events.PublishFailed`, out of the
        outbox) ``timeout`` s after ``now``.  Raises :class:`EdgeRelayError` when
        the outbox is full, else the 4413 of :func:`check_publish_size`
        (``limit``); nothing is queued then.
        """
        if self.outbox.full():
            raise EdgeRelayError("outbox full: too many unconfirmed publishes")
        check_publish_size(room, payload, limit)
        item = self.outbox.add(room, payload)
        if timeout is not None:
            item.deadline, item.timeout = now + timeout, timeout
            self._deadlines.publish_timeout(item)
        return item

    def copy(self, item: OutboxItem) -> tuple[bytes, bool]:
        """The PUBLISH for a copy of ``item`` on the current link, as ``(data,
        reliable)``; binds it to a fresh request id (the one its answer carries)."""
        req_id = self._requests.next_id()
        data = encode(Publish(req_id, item.room, item.payload, True, item.idem))
        self.outbox.bind(item, req_id)
        return data, True

    def acked(self, f: Ack) -> PublishAcked | None:
        """The ACK ``f`` confirmed a publish: it leaves the outbox, and this is its
        event; None when ``f`` answers no publish (a request's ACK)."""
        item = self.outbox.take(f.req_id)
        return None if item is None else PublishAcked(item.idem, (f.epoch, f.seq))

    def refused(self, f: Error, now: float) -> PublishFailed | None:
        """The edge refused the copy ``f.req_id`` (:meth:`~.outbox.Outbox.owns` it) at ``now``.

        A transient refusal (:func:`publish_retryable`) keeps the publish, to be
        sent again ``retry_delay`` s later (None is returned); any other fails
        it: it leaves the outbox and its event is returned.
        """
        if publish_retryable(f.code):
            item = self.outbox.retry_later(f.req_id, now + self.retry_delay)
            if item is not None:
                self._deadlines.publish_retry(item)
            return None
        failed = self.outbox.take(f.req_id)
        if failed is None:
            return None
        return PublishFailed(failed.idem, error_for_code(f.code, f.message))

    def fail_all(self, exc: EdgeRelayError) -> list[PublishFailed]:
        """Empty the outbox (the session is closed): each publish's event, oldest first."""
        return [PublishFailed(item.idem, exc) for item in self.outbox.clear()]
