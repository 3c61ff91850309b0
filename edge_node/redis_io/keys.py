"""Redis key names.  Every room or edge key carries a hash tag (``{...}``) so all
keys of one room (or one edge) land in the same Redis Cluster slot and Lua
scripts touch a single slot.
"""

from __future__ import annotations

__all__ = [
    "room_log",
    "room_owner",
    "room_epoch",
    "room_members",
    "room_live",
    "room_lost",
    "room_snapshot",
    "room_of_log",
    "edge_inbox",
    "edge_info",
    "edge_control",
    "EDGES",
    "PREFIX",
]

PREFIX = "er:"
#: Sorted set of known edge ids, score = last heartbeat (Unix seconds).
EDGES = PREFIX + "edges"


def room_log(room: str) -> str:
    """Stream of the room's reliable messages; entry id = ``epoch-seq``."""
    return f"{PREFIX}{{room:{room}}}:log"


def room_of_log(key: str) -> str:
    """Inverse of :func:`room_log`: the room name in a room stream's key.  Raises
    ``ValueError`` for any other key."""
    head, tail = f"{PREFIX}{{room:", "}:log"
    if not (key.startswith(head) and key.endswith(tail)) or len(key) < len(head) + len(tail):
        raise ValueError(f"not a room stream key: {key!r}")
    return key[len(head):-len(tail)]


def room_owner(room: str) -> str:
    """Lease key: value ``edge_id:epoch``, with a PX expiry."""
    return f"{PREFIX}{{room:{room}}}:owner"


def room_epoch(room: str) -> str:
    """Counter of the room's epochs (INCR on every new lease)."""
    return f"{PREFIX}{{room:{room}}}:epoch"


def room_members(room: str) -> str:
    """Hash session_id -> packed member (presence across edges)."""
    return f"{PREFIX}{{room:{room}}}:members"


def room_live(room: str) -> str:
    """Pub/sub channel for ephemeral traffic: presence events, unreliable messages."""
    return f"{PREFIX}{{room:{room}}}:live"


def room_lost(room: str) -> str:
    """Hash of history ranges lost in a Redis failover: ``after`` -> ``upto`` (positions
    ``E-S``); a resume across one is answered ``recovered: false``."""
    return f"{PREFIX}{{room:{room}}}:lost"


def room_snapshot(room: str) -> str:
    """Hash of the room's newest game-room snapshot: ``pos`` (``E-S``, the stream position
    it covers) and ``data``; written by the lease holder only, with a PX expiry."""
    return f"{PREFIX}{{room:{room}}}:snap"


def edge_inbox(edge_id: str) -> str:
    """Stream of publishes forwarded to this edge as room owner."""
    return f"{PREFIX}{{edge:{edge_id}}}:inbox"


def edge_info(edge_id: str) -> str:
    """Hash describing a live edge (url, region, load); expires without heartbeat."""
    return f"{PREFIX}{{edge:{edge_id}}}:info"


def edge_control(edge_id: str) -> str:
    """Operator requests to this edge (value ``drain``), set by the origin's admin API,
    consumed (GETDEL) by the edge within a heartbeat; expires after a minute."""
    return f"{PREFIX}{{edge:{edge_id}}}:control"


def game_listings() -> str:
    """Hash room -> JSON listing of a running game room (written by its owner edge about
    once a second; read by ROOM_LIST and the origin's ``GET /v1/rooms``)."""
    return f"{PREFIX}games"
