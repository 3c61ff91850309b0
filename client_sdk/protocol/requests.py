"""Requests and pings waiting for the edge's answer (sans-I/O bookkeeping).

Part of the client core (:class:`~.connection.ClientConnection`).  The table is
the truth about what is pending; the core's :class:`~.timers.Deadlines` asks it
which deadlines still hold (:meth:`Requests.live_request`,
:meth:`Requests.live_ping`).  Every outcome is an event
(:class:`~.events.RequestFailed`, :class:`~.events.PongReceived`, ...) that the
core queues; answers are matched to requests by :class:`~.answers.Answers`
(the reply frame is the event's payload).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..errors import EdgeRelayError, RequestTimeoutError
from .events import PingFailed, PongReceived, RequestFailed

__all__ = ["Requests"]

#: Stamps of protocol pings (kept within 48 bits like the edge's own).
_STAMP_MASK = 0xFFFFFFFFFFFF


@dataclass(slots=True)
class _Request:
    what: str
    room: str
    timeout: float
    deadline: float | None


class Requests:
    """Pending requests (by request id) and pings (by stamp) of one session.

    Request ids come from one counter for the life of the session, shared with
    the copies of reliable publishes (:meth:`next_id`), so an id is never
    reused; ping stamps (user pings and keepalive pings) from another.  An
    entry leaves on its answer (:meth:`answer`, :meth:`pong`), when the caller
    gives up (:meth:`cancel`), at its deadline (:meth:`expire_request`,
    :meth:`expire_ping`) or with every other one (:meth:`fail_all`).
    """

    __slots__ = ("_ids", "_pings", "_requests", "_stamps")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._stamps = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._pings: dict[int, tuple[float, float | None]] = {}  # stamp -> (sent, deadline)

    def next_id(self) -> int:
        """A request id never used before in this session."""
        return next(self._ids)

    def next_stamp(self) -> int:
        """A ping stamp (48 bits)."""
        return next(self._stamps) & _STAMP_MASK

    def add(self, what: str, room: str, now: float,
            timeout: float | None) -> tuple[int, float | None]:
        """Record a request (``what``: its frame type's name, for the timeout
        message); returns its fresh id and deadline (None: no timeout)."""
        req_id = self.next_id()
        deadline = None if timeout is None else now + timeout
        self._requests[req_id] = _Request(what, room, timeout or 0.0, deadline)
        return req_id, deadline

    def answer(self, req_id: int) -> bool:
        """The reply (or ERROR) to ``req_id`` arrived: True if it was still pending
        (False: a late answer to a request given up on, or not a request)."""
        return self._requests.pop(req_id, None) is not None

    def cancel(self, req_id: int) -> None:
        """Forget a request whose caller stopped waiting."""
        self._requests.pop(req_id, None)

    def add_ping(self, now: float, timeout: float | None) -> tuple[int, float | None]:
        """Record a ping sent at ``now``; returns its stamp and deadline."""
        stamp = self.next_stamp()
        deadline = None if timeout is None else now + timeout
        self._pings[stamp] = (now, deadline)
        return stamp, deadline

    def pong(self, stamp: int, now: float) -> PongReceived | None:
        """The PONG for ``stamp`` arrived at ``now``: its event (with the round
        trip), or None if no such ping is pending."""
        ping = self._pings.pop(stamp, None)
        return None if ping is None else PongReceived(stamp, now - ping[0])

    def live_request(self, req_id: int, when: float) -> bool:
        """True while ``req_id`` is pending with its deadline at ``when``."""
        req = self._requests.get(req_id)
        return req is not None and req.deadline == when

    def live_ping(self, stamp: int, when: float) -> bool:
        """True while ping ``stamp`` is pending with its deadline at ``when``."""
        ping = self._pings.get(stamp)
        return ping is not None and ping[1] == when

    def expire_request(self, req_id: int) -> RequestFailed:
        """Drop a request whose deadline passed (it must be :meth:`live_request`)."""
        req = self._requests.pop(req_id)
        return RequestFailed(req_id, RequestTimeoutError(
            f"no answer to {req.what} in {req.timeout:g} s"))

    def expire_ping(self, stamp: int) -> PingFailed:
        """Drop a ping whose deadline passed (it must be :meth:`live_ping`)."""
        del self._pings[stamp]
        return PingFailed(stamp, RequestTimeoutError("no PONG in time"))

    def fail_all(self, exc: EdgeRelayError) -> list[RequestFailed | PingFailed]:
        """Drop every pending request and ping: their events, requests first,
        each group in the order sent."""
        reqs, self._requests = self._requests, {}
        pings, self._pings = self._pings, {}
        evs: list[RequestFailed | PingFailed] = [RequestFailed(r, exc) for r in reqs]
        evs += [PingFailed(s, exc) for s in pings]
        return evs
