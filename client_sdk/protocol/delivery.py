"""Per-subscriber delivery policies (what a slow reader gets) and the DROPPED frame.

A client chooses, per room at JOIN, what the edge does with the room's messages while
the client reads slower than they arrive (its send queue on the edge is above the soft
limit, 64 KiB):

``all``         Today's rule: reliable messages are queued up to the hard limit, then the
                client is closed 4001; unreliable ones are refused while over the soft
                limit.
``latest``      Unreliable messages are conflated per key (the PUBLISH ``key``, else the
                publisher's session id): the reader gets the newest value of every key,
                never a stale one.  Reliable messages as ``all``.
``drop``        Every message of the room is held in a bounded window; when it is full the
                oldest is dropped.  Before the next message of the room the client gets a
                DROPPED frame: how many, how many of them reliable, and the first and last
                reliable position dropped (read them back with HISTORY).  Never closed.
``disconnect``  Closed 4001 at the soft limit (reconnect and resume from the last
                position rather than lag).

The policy travels in three bits of the JOIN flags (:data:`DELIVERY_MASK`), so the
HELLO resume map (``[flags, epoch, seq]``) keeps it across failover.  0 there means
"the room's default" (the edge's ``--room-delivery PATTERN=POLICY``, else ``all``).

DROPPED (type 39), edge → client::

    [39, room, dropped, reliable, first_epoch, first_seq, last_epoch, last_seq]

``dropped`` messages of ``room`` were not delivered, ``reliable`` of them reliable; the
positions are those of the first and last reliable one (all 0 when none was).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .errors import MalformedFrame
from .fields import arity, uint

__all__ = ["Delivery", "DELIVERY_MASK", "DELIVERY_SHIFT", "delivery_flags", "delivery_of",
           "Dropped", "DELIVERY_ENCODERS", "DELIVERY_PARSERS", "MAX_KEY_BYTES", "publish_key"]

#: The JOIN flag bits that hold the delivery policy (0 = the room's default).
DELIVERY_SHIFT = 2
DELIVERY_MASK = 0b111 << DELIVERY_SHIFT
#: The longest PUBLISH conflation key, in UTF-8 bytes.
MAX_KEY_BYTES = 128


class Delivery(enum.StrEnum):
    """A subscriber's delivery policy (see the module docstring)."""

    ALL = "all"
    LATEST = "latest"
    DROP = "drop"
    DISCONNECT = "disconnect"


_CODE = {Delivery.ALL: 1, Delivery.LATEST: 2, Delivery.DROP: 3, Delivery.DISCONNECT: 4}
_BY_CODE = {v: k for k, v in _CODE.items()}


def delivery_flags(policy: Delivery | str | None) -> int:
    """The JOIN flag bits for ``policy`` (None: 0, the room's default).  Raises
    ``ValueError`` naming the choices for an unknown name."""
    if policy is None:
        return 0
    try:
        d = Delivery(policy)
    except ValueError:
        raise ValueError(f"unknown delivery policy {policy!r}; choose one of "
                         + ", ".join(x.value for x in Delivery)) from None
    return _CODE[d] << DELIVERY_SHIFT


def delivery_of(flags: int) -> Delivery | None:
    """The policy in JOIN ``flags``; None when they leave it to the room.  Raises
    :class:`MalformedFrame` for a value no policy has."""
    code = (flags & DELIVERY_MASK) >> DELIVERY_SHIFT
    if not code:
        return None
    d = _BY_CODE.get(code)
    if d is None:
        raise MalformedFrame(f"unknown delivery policy {code} in the JOIN flags")
    return d


@dataclass(frozen=True, slots=True)
class Dropped:
    """Edge → client: ``[39, room, dropped, reliable, first_epoch, first_seq,
    last_epoch, last_seq]`` (see the module docstring)."""

    room: str
    dropped: int
    reliable: int = 0
    first: tuple[int, int] = (0, 0)
    last: tuple[int, int] = (0, 0)


def _e_dropped(f: Dropped) -> list[Any]:
    return [39, f.room, f.dropped, f.reliable, *f.first, *f.last]


def _p_dropped(d: Any, o: list[Any]) -> Dropped:
    arity(o, 8, "DROPPED")
    return Dropped(d._room(o[1]), uint(o[2], "dropped"), uint(o[3], "reliable"),
                   (uint(o[4], "first_epoch"), uint(o[5], "first_seq")),
                   (uint(o[6], "last_epoch"), uint(o[7], "last_seq")))


def publish_key(v: object) -> str:
    """A PUBLISH conflation key: a string of at most :data:`MAX_KEY_BYTES` bytes.  Any
    other type in its place is an element a newer peer appended: ignored ("")."""
    if type(v) is not str:
        return ""
    s = v
    if len(s) * 4 > MAX_KEY_BYTES and len(s.encode()) > MAX_KEY_BYTES:
        raise MalformedFrame(f"key longer than {MAX_KEY_BYTES} bytes")
    return s


DELIVERY_ENCODERS: dict[type[Any], Any] = {Dropped: _e_dropped}
DELIVERY_PARSERS: dict[int, Any] = {39: _p_dropped}
