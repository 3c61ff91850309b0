"""Reading a room's history (its Redis Stream) for resume and for dedupe.

Stream entry ids are positions: ``EPOCH-SEQ``.  Entry field ``d`` is msgpack
``[sender, payload, origin_edge, req_id, idem]``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from edge_node.redis_io import keys as K
from edge_node.rooms.events import Record
from edge_node.store.records import unpack_record

__all__ = ["Entry", "split_id", "parse_entry", "range_after", "gap_after", "recent"]


#: One reliable message of a room's history (the room machine's record type).
Entry = Record


def split_id(entry_id: bytes | str) -> tuple[int, int]:
    """``b"7-42"`` -> ``(7, 42)``."""
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or b"0")


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """Decode one stream entry."""
    epoch, seq = split_id(entry_id)
    return unpack_record(epoch, seq, fields[b"d"])


async def range_after(r: aioredis.Redis, room: str, epoch: int, seq: int,
                      limit: int) -> list[Entry]:
    """Entries strictly after ``(epoch, seq)``, oldest first, at most ``limit``."""
    raw: Any = await r.xrange(K.room_log(room), min=f"({epoch}-{seq}", count=limit)
    return [parse_entry(eid, f) for eid, f in raw]


async def gap_after(r: aioredis.Redis, room: str, epoch: int,
                    seq: int) -> tuple[bool, tuple[int, int] | None]:
    """Whether history can no longer fill the gap after ``(epoch, seq)``.

    Returns ``(gap, first_available)``.  There is no gap when nothing was ever
    trimmed, when the client's own position is still in the stream, or when the
    first entry is the very next one.  Otherwise trimming may have removed
    messages the client never saw (conservative: across an epoch change the
    old epoch's end is unknown).
    """
    try:
        info: Any = await r.xinfo_stream(K.room_log(room))
    except ResponseError:  # no such key: nothing written, nothing trimmed
        return False, None
    first = info.get("first-entry")
    first_pos = split_id(first[0]) if first else None
    added = int(info.get("entries-added") or 0)
    if added <= int(info.get("length") or 0):
        return False, first_pos
    if first_pos is None:
        last = split_id(info.get("last-generated-id") or b"0-0")
        return last > (epoch, seq), None
    if first_pos <= (epoch, seq) or first_pos == (epoch, seq + 1):
        return False, first_pos
    return True, first_pos


async def recent(r: aioredis.Redis, room: str, count: int) -> list[Entry]:
    """The newest ``count`` entries, oldest first (to rebuild dedupe state)."""
    raw: Any = await r.xrevrange(K.room_log(room), count=count)
    return [parse_entry(eid, f) for eid, f in reversed(raw)]
