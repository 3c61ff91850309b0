"""The records edges write for each other (and the origin reads), with their packing in
one place.  Golden vectors: ``tests/golden/records.json`` (checked by
``tests/unit/test_records.py``); the bytes must not change without a version bump,
since edges of two releases share one Redis during a rolling deploy.

- **Room stream entry** (``er:{room:R}:log``, entry id ``epoch-seq``, field ``d``):
  :func:`pack_record` / :func:`unpack_record`, msgpack ``[sender, payload, origin_edge,
  req_id, idem]``.
- **Inbox entries** (``er:{edge:E}:inbox``), one field each: ``p`` a publish forwarded
  to the room's owner (:class:`Forwarded`), ``a`` the owner's answer that it was a
  duplicate (:class:`ForwardAck`), ``h`` a lease handed over on a drain
  (:class:`Handover`), ``w`` a wake-up with no content.
- **Live events** (pub/sub ``er:{room:R}:live``): :class:`LiveEvent`, msgpack
  ``[kind, edge_id, room, *body]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from edge_node.rooms.events import Pos, Record

__all__ = [
    "Record", "pack_record", "unpack_record", "Forwarded", "ForwardAck", "Handover",
    "LiveEvent", "RecordError", "LIVE_PRESENCE_JOIN", "LIVE_PRESENCE_LEAVE",
    "LIVE_UNRELIABLE", "LIVE_OWNER", "LIVE_APPENDED", "LIVE_GAME", "LIVE_GAME_VERDICT",
    "LIVE_GAME_RESYNC",
]

_pack = msgpack.Packer(use_bin_type=True).pack

#: Live event kinds: a member joined / left (body ``[[session_id, subject, kind]]``), an
#: unreliable message (``[sender, payload]``), the lease was handed over (``[new owner]``),
#: and, on a Redis Cluster, the owner appended to the room stream (``[]``).  Game rooms
#: (edge_node/fanout/games.py): a frame for players (``[to or "", exclude or "", frame]``),
#: the owner's answer to a join (``[player, req_id, code, text]``) and a player's request
#: for its whole view (``[player]``).
LIVE_PRESENCE_JOIN = 1
LIVE_PRESENCE_LEAVE = 2
LIVE_UNRELIABLE = 3
LIVE_OWNER = 4
LIVE_APPENDED = 5
LIVE_GAME = 6
LIVE_GAME_VERDICT = 7
LIVE_GAME_RESYNC = 8


class RecordError(ValueError):
    """Bytes that do not decode to the record asked for."""


def _unpack(data: bytes, n: int, what: str) -> list[Any]:
    try:
        v = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise RecordError(f"{what}: not msgpack") from exc
    if not isinstance(v, list) or len(v) < n:
        raise RecordError(f"{what}: expected an array of {n}")
    return v


def pack_record(sender: str, payload: bytes, origin: str, req_id: int, idem: int) -> bytes:
    """The stored form of a room stream record (its position is the entry id)."""
    data: bytes = _pack([sender, payload, origin, req_id, idem])
    return data


def unpack_record(epoch: int, seq: int, data: bytes) -> Record:
    """Inverse of :func:`pack_record` for the entry at ``(epoch, seq)`` (records written
    before ``idem`` existed have four fields: ``idem`` 0)."""
    d = _unpack(data, 4, "room record")
    return Record(epoch, seq, d[0], d[1], d[2], d[3], d[4] if len(d) > 4 else 0)


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A reliable publish sent by the edge its client is on (``origin``) to the room's
    owner, which assigns its position (inbox field ``p``)."""

    room: str
    sender: str
    payload: bytes
    origin: str
    req_id: int
    idem: int

    def pack(self) -> bytes:
        data: bytes = _pack([self.room, self.sender, self.payload, self.origin, self.req_id,
                             self.idem])
        return data

    @classmethod
    def unpack(cls, data: bytes) -> Forwarded:
        d = _unpack(data, 6, "forwarded publish")
        return cls(str(d[0]), str(d[1]), bytes(d[2]), str(d[3]), int(d[4]), int(d[5]))


@dataclass(frozen=True, slots=True)
class ForwardAck:
    """The owner's answer to a forwarded publish it had already stored at ``pos``
    (inbox field ``a``)."""

    sender: str
    req_id: int
    pos: Pos

    def pack(self) -> bytes:
        data: bytes = _pack([self.sender, self.req_id, self.pos[0], self.pos[1]])
        return data

    @classmethod
    def unpack(cls, data: bytes) -> ForwardAck:
        d = _unpack(data, 4, "forward ack")
        return cls(str(d[0]), int(d[1]), (int(d[2]), int(d[3])))


@dataclass(frozen=True, slots=True)
class Handover:
    """A draining owner handed the room's lease to the inbox's edge (field ``h``):
    ``token`` is the lease value now held for it."""

    room: str
    token: str

    def pack(self) -> bytes:
        data: bytes = _pack([self.room, self.token])
        return data

    @classmethod
    def unpack(cls, data: bytes) -> Handover:
        d = _unpack(data, 2, "handover notice")
        if not isinstance(d[1], str):
            raise RecordError("handover notice: the token is not a string")
        return cls(str(d[0]), d[1])


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """An ephemeral cross-edge event on a room's live channel."""

    kind: int
    edge: str
    room: str
    body: tuple[Any, ...] = ()

    def pack(self) -> bytes:
        data: bytes = _pack([self.kind, self.edge, self.room, *self.body])
        return data

    @classmethod
    def unpack(cls, data: bytes) -> LiveEvent:
        d = _unpack(data, 3, "live event")
        return cls(int(d[0]), str(d[1]), str(d[2]), tuple(d[3:]))
