"""Frames held back for a slow client under the ``latest`` and ``drop`` delivery policies
(sans-I/O: the frame sink decides when to hold and when to release).

A room whose member chose ``latest`` or ``drop`` (:mod:`client_sdk.protocol.delivery`)
stops writing that room's messages into the client's send queue once the queue is
above the soft limit; they wait here instead, where they can still be replaced or
dropped, until the queue has drained (:meth:`Held.release`):

- ``latest``: one frame per key (the newest replaces the one held; the key that
  changed last goes out last).  Counted as ``conflated``.
- ``drop``: every frame, in order; when the budget is full the oldest goes (counted
  in :class:`HeldRoom`, with the first and last reliable position, so the release
  starts with a DROPPED frame that tells the client what to read back).

``budget`` bounds the bytes held for one client across its rooms; a frame that does
not fit even after the room's own oldest frames are gone is dropped itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from client_sdk.protocol import Delivery, Dropped, encode

__all__ = ["Held", "HeldRoom", "HeldTally", "Tally"]

Pos = tuple[int, int]


class HeldTally(Protocol):
    """Where an edge counts what its clients' held frames came to (its stats)."""

    delivery_conflated: int
    delivery_dropped: int


class Tally:
    """A :class:`HeldTally` of its own (a sink without an edge's stats)."""

    __slots__ = ("delivery_conflated", "delivery_dropped")

    def __init__(self) -> None:
        self.delivery_conflated = 0
        self.delivery_dropped = 0


class HeldRoom:
    """What one room holds for one client, and what it had to drop."""

    __slots__ = ("bytes", "dropped", "first", "frames", "last", "latest", "policy",
                 "reliable_dropped")

    def __init__(self, policy: Delivery) -> None:
        self.policy = policy
        self.frames: deque[tuple[bytes, bool, Pos]] = deque()  # drop: in order
        self.latest: dict[str, bytes] = {}  # latest: key -> newest frame
        self.bytes = 0
        self.dropped = 0
        self.reliable_dropped = 0
        self.first: Pos = (0, 0)
        self.last: Pos = (0, 0)

    def count_drop(self, reliable: bool, pos: Pos) -> None:
        """One message of the room will never reach the client."""
        self.dropped += 1
        if reliable:
            self.reliable_dropped += 1
            if self.first == (0, 0):
                self.first = pos
            self.last = pos

    def notice(self, room: str) -> bytes:
        """The encoded DROPPED frame for what was dropped so far."""
        return encode(Dropped(room, self.dropped, self.reliable_dropped, self.first, self.last))


class Held:
    """Frames held for one client, by room (see the module docstring).

    Counters: ``conflated`` (``latest`` frames replaced by a newer one of their key),
    ``dropped`` (frames dropped for the budget, both policies), also added to
    ``tally`` (the edge's).
    """

    __slots__ = ("budget", "bytes", "conflated", "dropped", "rooms", "tally")

    def __init__(self, budget: int, tally: HeldTally | None = None) -> None:
        self.budget = max(1, budget)
        self.tally: HeldTally = tally if tally is not None else Tally()
        self.rooms: dict[str, HeldRoom] = {}
        self.bytes = 0
        self.conflated = 0
        self.dropped = 0

    def holds(self, room: str) -> bool:
        """True while ``room``'s frames wait here (keep their order: hold the next too)."""
        return room in self.rooms

    def hold(self, room: str, policy: Delivery, data: bytes, reliable: bool, key: str,
             pos: Pos) -> None:
        """Keep ``data`` (a message of ``room``) until :meth:`release`.  ``key``: its
        conflation key (``latest``); ``pos``: its position (reliable, ``drop``)."""
        hr = self.rooms.get(room)
        if hr is None:
            hr = self.rooms[room] = HeldRoom(policy)
        n = len(data)
        if hr.policy is Delivery.LATEST:
            old = hr.latest.pop(key, None)
            if old is not None:
                self.conflated += 1
                self.tally.delivery_conflated += 1
                self._take(hr, len(old))
            while self.bytes + n > self.budget and hr.latest:
                oldest = next(iter(hr.latest))
                self._take(hr, len(hr.latest.pop(oldest)))
                self._drop(hr, False, (0, 0))
            if self.bytes + n > self.budget:
                self._drop(hr, reliable, pos)
                return
            hr.latest[key] = data
        else:
            while self.bytes + n > self.budget and hr.frames:
                old_data, old_reliable, old_pos = hr.frames.popleft()
                self._take(hr, len(old_data))
                self._drop(hr, old_reliable, old_pos)
            if self.bytes + n > self.budget:
                self._drop(hr, reliable, pos)
                return
            hr.frames.append((data, reliable, pos))
        hr.bytes += n
        self.bytes += n

    def forget(self, room: str) -> None:
        """Drop what is held of ``room`` (the client left it): nothing is told."""
        hr = self.rooms.pop(room, None)
        if hr is not None:
            self.bytes -= hr.bytes

    def release(self, send: Callable[[bytes, bool], bool],
                send_body: Callable[[bytes], object]) -> bool:
        """Hand held frames on, room by room: a room's DROPPED notice first
        (``send_body``, an encoded protocol frame), then its frames in order (``send``:
        the data as held and whether it is reliable; it returns False when it cannot
        take one now).  True when nothing is held any more; False when ``send``
        refused a frame: that one and the rest stay held, in order, for the next call."""
        for name in list(self.rooms):
            hr = self.rooms[name]
            if hr.dropped:
                send_body(hr.notice(name))
                hr.dropped = hr.reliable_dropped = 0
                hr.first = hr.last = (0, 0)
            while hr.frames:
                data, reliable, _ = hr.frames[0]
                if not send(data, reliable):
                    return False
                hr.frames.popleft()
                self._take(hr, len(data))
            while hr.latest:
                key = next(iter(hr.latest))
                data = hr.latest[key]
                if not send(data, False):
                    return False
                del hr.latest[key]
                self._take(hr, len(data))
            del self.rooms[name]
        return True

    def _take(self, hr: HeldRoom, n: int) -> None:
        hr.bytes -= n
        self.bytes -= n

    def _drop(self, hr: HeldRoom, reliable: bool, pos: Pos) -> None:
        self.dropped += 1
        self.tally.delivery_dropped += 1
        hr.count_drop(reliable, pos)
