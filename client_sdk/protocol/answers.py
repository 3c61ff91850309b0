"""Settling what a client session waits for (sans-I/O): each answer from the edge to its waiter.

Part of the client core (:class:`~.connection.ClientConnection`), whose
dispatch table calls these handlers for the answer frames; the event each
returns is the core's to queue.  Request ids are one space, shared by
requests and the copies of reliable publishes; PONG stamps one too, shared by
user pings and the keepalive's PING.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import error_for_code
from .events import (
    PongReceived,
    PublishAcked,
    PublishFailed,
    RequestAnswered,
    RequestFailed,
    ServerNotice,
)
from .function_frames import RpcResult
from .messages import Ack, Error, Joined, Pong, PresenceMembers
from .publisher import Publisher
from .requests import Requests
from .room_frames import HistoryPage, RoomListing
from .rooms import RoomState
from .timers import Keepalive
from .token_frames import Refreshed

__all__ = ["Answers"]


class Answers:
    """Routes the edge's answers to what the session has outstanding.

    Each handler takes ``(frame, now)``, settles the waiter the frame answers
    (it leaves its table) and returns its event, or None when nothing waits
    for it any more (a late answer to a request given up on, the keepalive's
    own PONG, a refused publish kept for a retry).  ``rooms`` is the core's
    table of tracked rooms (read, and a JOINED sets where its room starts).
    """

    __slots__ = ("_keepalive", "_publisher", "_requests", "_rooms")

    def __init__(self, requests: Requests, publisher: Publisher, keepalive: Keepalive,
                 rooms: Mapping[str, RoomState]) -> None:
        self._requests = requests
        self._publisher = publisher
        self._keepalive = keepalive
        self._rooms = rooms

    def ack(self, f: Ack, now: float) -> PublishAcked | RequestAnswered | None:
        """ACK: confirms a publish copy (:meth:`~.publisher.Publisher.acked`), else
        answers a request (:meth:`reply`)."""
        acked = self._publisher.acked(f)
        return acked if acked is not None else self.reply(f, now)

    def reply(self, f: Ack | Joined | PresenceMembers | RoomListing | HistoryPage | RpcResult
              | Refreshed, now: float) -> RequestAnswered | None:
        """The reply to request ``f.req_id``; a JOINED also sets its room's position
        (:meth:`~.rooms.RoomState.joined`) when the room is tracked."""
        if not self._requests.answer(f.req_id):
            return None  # late answer to a request given up on
        if type(f) is Joined:
            room = self._rooms.get(f.room)
            if room is not None:
                room.joined((f.epoch, f.seq))
        return RequestAnswered(f.req_id, f)

    def error(self, f: Error, now: float) -> PublishFailed | RequestFailed | ServerNotice | None:
        """ERROR: refuses a publish copy (:meth:`~.publisher.Publisher.refused`), else
        fails a pending request, else (no ``req_id``, or one nothing waits for) is
        a :class:`ServerNotice`."""
        if f.req_id and self._publisher.outbox.owns(f.req_id):
            return self._publisher.refused(f, now)
        if f.req_id and self._requests.answer(f.req_id):
            return RequestFailed(f.req_id, error_for_code(f.code, f.message))
        return ServerNotice(f.code, f.message)

    def pong(self, f: Pong, now: float) -> PongReceived | None:
        """PONG: settles the keepalive's PING (no event), else a user ping (its
        round trip); None for a stamp nothing waits for."""
        if self._keepalive.pong(f.stamp):
            return None
        return self._requests.pong(f.stamp, now)
