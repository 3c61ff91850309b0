"""The room frames (types 27-34): game-room state, patches, events, resync and listing,
and a room's history read by request.

Wire shapes (docs/protocol.md § game rooms, golden vectors in tests/golden/frames.json):

=====  ============  =============================================  ===============
type   name          elements after the type                         direction
=====  ============  =============================================  ===============
27     ROOM_STATE    room, version, tick, tick_rate, state (bin)      edge → client
28     ROOM_PATCH    room, base, version, tick, ops (bin)             edge → client
29     ROOM_EVENT    room, kind, payload (bin)                        edge → client
30     ROOM_RESYNC   room, version                                    client → edge
31     ROOM_LIST     req_id, pattern                                  client → edge
32     ROOM_LISTING  req_id, rooms (array of maps)                    edge → client
33     HISTORY       req_id, room, epoch, seq, limit                  client → edge
34     HISTORY_PAGE  req_id, room, messages, more, gap                edge → client
=====  ============  =============================================  ===============

``state``, ``ops`` and ``payload`` are msgpack bytes inside a ``bin`` (see
:mod:`.state_sync`): the edge encodes them once for every client that sees the same.
A client's input to a game room is a PUBLISH whose payload is msgpack ``[kind, value]``
(:func:`pack_input`), so it has the outbox, acknowledgement and resume semantics of any
reliable publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import MalformedFrame
from .fields import arity, binary, str_map, string, uint

__all__ = [
    "RoomStateFrame", "RoomPatch", "RoomEvent", "RoomResync", "RoomList", "RoomListing",
    "History", "HistoryPage", "HistoryItem", "ROOM_FRAMES", "ROOM_ENCODERS", "ROOM_PARSERS",
    "pack_input", "unpack_input",
]

_packer = msgpack.Packer(use_bin_type=True)


@dataclass(frozen=True, slots=True)
class RoomStateFrame:
    """Edge → client: ``[27, room, version, tick, tick_rate, state]``: the client's
    whole view of the room's state at ``version``."""

    room: str
    version: int
    tick: int
    tick_rate: int
    state: bytes


@dataclass(frozen=True, slots=True)
class RoomPatch:
    """Edge → client: ``[28, room, base, version, tick, ops]``: apply to ``base``
    (the version the client holds) to get ``version``."""

    room: str
    base: int
    version: int
    tick: int
    ops: bytes


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """Edge → client: ``[29, room, kind, payload]``: a message from the room's code."""

    room: str
    kind: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RoomResync:
    """Client → edge: ``[30, room, version]``: "my state (at ``version``) is out of
    step; send the whole of it".  Answered by ROOM_STATE."""

    room: str
    version: int


@dataclass(frozen=True, slots=True)
class RoomList:
    """Client → edge: ``[31, req_id, pattern]``: list game rooms whose name matches
    ``pattern`` (``*`` wildcards).  Answered by ROOM_LISTING or ERROR."""

    req_id: int
    pattern: str


@dataclass(frozen=True, slots=True)
class RoomListing:
    """Edge → client: ``[32, req_id, rooms]``: each room a map with ``name``,
    ``players``, ``max_players``, ``metadata``, ``edge``, ``version`` and ``checksum``
    (of the room's whole state at ``version``)."""

    req_id: int
    rooms: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class History:
    """Client → edge: ``[33, req_id, room, epoch, seq, limit]``: the room's reliable
    messages after position ``(epoch, seq)`` (``(0, 0)``: from the oldest kept), at most
    ``limit``.  Needs only the token's permission to join the room, not membership.
    Answered by HISTORY_PAGE or ERROR."""

    req_id: int
    room: str
    epoch: int = 0
    seq: int = 0
    limit: int = 100


#: One message of a history page: ``(epoch, seq, sender, payload, idem)``.
HistoryItem = tuple[int, int, str, bytes, int]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Edge → client: ``[34, req_id, room, messages, more, gap]``: ``messages`` in order,
    each ``[epoch, seq, sender, payload, idem]``; ``more``: there are later ones (ask
    again after the last); ``gap``: messages right after the position asked for are no
    longer kept (trimmed), so the page starts at the oldest one kept."""

    req_id: int
    room: str
    messages: tuple[HistoryItem, ...] = ()
    more: bool = False
    gap: bool = False


ROOM_FRAMES = (RoomStateFrame, RoomPatch, RoomEvent, RoomResync, RoomList, RoomListing,
               History, HistoryPage)


def pack_input(kind: str, value: Any) -> bytes:
    """The PUBLISH payload of a game input."""
    data: bytes = _packer.pack([kind, value])
    return data


def unpack_input(payload: bytes) -> tuple[str, Any]:
    """``(kind, value)`` of a game input; raises ``ValueError`` when it is not one."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:
        raise ValueError("an input must be msgpack [kind, value]") from exc
    if not isinstance(obj, list) or len(obj) != 2 or type(obj[0]) is not str:
        raise ValueError("an input must be msgpack [kind, value]")
    return obj[0], obj[1]


ROOM_ENCODERS: dict[type[Any], Any] = {
    RoomStateFrame: lambda f: [27, f.room, f.version, f.tick, f.tick_rate, f.state],
    RoomPatch: lambda f: [28, f.room, f.base, f.version, f.tick, f.ops],
    RoomEvent: lambda f: [29, f.room, f.kind, f.payload],
    RoomResync: lambda f: [30, f.room, f.version],
    RoomList: lambda f: [31, f.req_id, f.pattern],
    RoomListing: lambda f: [32, f.req_id, f.rooms],
    History: lambda f: [33, f.req_id, f.room, f.epoch, f.seq, f.limit],
    HistoryPage: lambda f: [34, f.req_id, f.room, [list(m) for m in f.messages], f.more,
                            f.gap],
}


def _room(d: Any, v: object) -> str:
    room: str = d._room(v)
    return room


def _p_state(d: Any, o: list[Any]) -> RoomStateFrame:
    arity(o, 6, "ROOM_STATE")
    return RoomStateFrame(_room(d, o[1]), uint(o[2], "version"), uint(o[3], "tick"),
                          uint(o[4], "tick_rate"), binary(o[5], "state"))


def _p_patch(d: Any, o: list[Any]) -> RoomPatch:
    arity(o, 6, "ROOM_PATCH")
    return RoomPatch(_room(d, o[1]), uint(o[2], "base"), uint(o[3], "version"),
                     uint(o[4], "tick"), binary(o[5], "ops"))


def _p_event(d: Any, o: list[Any]) -> RoomEvent:
    arity(o, 4, "ROOM_EVENT")
    return RoomEvent(_room(d, o[1]), string(o[2], "kind"), binary(o[3], "payload"))


def _p_resync(d: Any, o: list[Any]) -> RoomResync:
    arity(o, 3, "ROOM_RESYNC")
    return RoomResync(_room(d, o[1]), uint(o[2], "version"))


def _p_list(d: Any, o: list[Any]) -> RoomList:
    arity(o, 3, "ROOM_LIST")
    pattern = string(o[2], "pattern")
    if not pattern or len(pattern) > 256:
        raise MalformedFrame("pattern must be 1-256 characters")
    return RoomList(uint(o[1], "req_id"), pattern)


def _p_listing(d: Any, o: list[Any]) -> RoomListing:
    arity(o, 3, "ROOM_LISTING")
    if not isinstance(o[2], list):
        raise MalformedFrame("rooms must be an array")
    return RoomListing(uint(o[1], "req_id"), [str_map(r, "room") for r in o[2]])


def _p_history(d: Any, o: list[Any]) -> History:
    arity(o, 6, "HISTORY")
    return History(uint(o[1], "req_id"), _room(d, o[2]), uint(o[3], "epoch"),
                   uint(o[4], "seq"), uint(o[5], "limit"))


def _item(v: object) -> HistoryItem:
    if not isinstance(v, list) or len(v) < 5:
        raise MalformedFrame("a history message must be [epoch, seq, sender, payload, idem]")
    return (uint(v[0], "epoch"), uint(v[1], "seq"), string(v[2], "sender"),
            binary(v[3], "payload"), uint(v[4], "idem"))


def _p_history_page(d: Any, o: list[Any]) -> HistoryPage:
    arity(o, 6, "HISTORY_PAGE")
    if not isinstance(o[3], list):
        raise MalformedFrame("messages must be an array")
    if type(o[4]) is not bool or type(o[5]) is not bool:
        raise MalformedFrame("more and gap must be booleans")
    return HistoryPage(uint(o[1], "req_id"), _room(d, o[2]), tuple(_item(m) for m in o[3]),
                       o[4], o[5])


ROOM_PARSERS: dict[int, Any] = {
    27: _p_state, 28: _p_patch, 29: _p_event, 30: _p_resync, 31: _p_list, 32: _p_listing,
    33: _p_history, 34: _p_history_page,
}
