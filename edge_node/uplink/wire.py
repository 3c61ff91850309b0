"""The uplink's wire contract (sans-I/O): key names, shard choice, entry and batch packing.

An *entry* is one thing an edge tells the origin.  It is packed once, at
:meth:`Uplink.submit` time, as the msgpack array ``[seq, kind, key, ts_ms, body]``:

- ``seq``: the edge's idempotency counter (unique per edge, never reused, also
  across restarts); ``(edge_id, seq)`` is the entry's idempotency id;
- ``kind``: what it is (:data:`KINDS`); ``key``: the room or device id;
- ``ts_ms``: edge wall clock at submit, Unix milliseconds (end-to-end lag);
- ``body``: a msgpack-serialisable dict, or bytes.

A *batch* is one stream entry of ``er:{up:N}:stream`` with the fields
``e`` (edge id), ``n`` (number of entries) and ``b`` (a msgpack array of packed
entries, built by concatenation so entries are never packed twice).
All entries of one batch have the same shard ``N = crc32(key) % shards``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "KINDS",
    "Entry",
    "WireError",
    "shard_of",
    "stream_key",
    "downlink_key",
    "pack_entry",
    "unpack_entry",
    "pack_batch",
    "unpack_batch",
]

#: Entry kinds the origin understands (others are dead-lettered there).
KINDS = frozenset({
    "room_event",     # an event marked for the origin; key = room
    "room_snapshot",  # the latest state of a room; key = room
    "session",        # a client session came or went; key = subject (device id, player)
    "presence",       # a member joined/left a room; key = room
    "telemetry",      # device samples {name: number}; key = device
    "rollup",         # a closed telemetry window with per-batch pieces; key = device
    "shadow",         # device reported state {field: value}; key = device
    "command_ack",    # a device acknowledged a command {"id": ..., "status": ...}; key = device
    "alert",          # an alert raised at the edge; key = device or room
    "edge_status",    # the edge's own status; key = edge id
})

_PREFIX = "er:"


class WireError(ValueError):
    """A batch or entry that cannot be decoded (the origin dead-letters it)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One decoded uplink entry."""

    seq: int
    kind: str
    key: str
    ts_ms: int
    body: Any


def shard_of(key: str, shards: int) -> int:
    """Uplink shard of a room/device id: ``crc32(key) % shards`` (stable across processes)."""
    return zlib.crc32(key.encode()) % shards


def stream_key(shard: int) -> str:
    """Uplink stream of ``shard``.  The hash tag ``{up:N}`` puts the stream and every origin
    view key of that shard in one Redis Cluster slot, so one Lua call applies a batch."""
    return f"{_PREFIX}{{up:{shard}}}:stream"


def downlink_key(edge_id: str) -> str:
    """Per-edge downlink stream (origin -> edge), in the edge's hash-tag slot."""
    return f"{_PREFIX}{{edge:{edge_id}}}:down"


def pack_entry(seq: int, kind: str, key: str, ts_ms: int, body: Any) -> bytes:
    """Pack one entry; raises :class:`WireError` if ``body`` is not msgpack-serialisable."""
    try:
        out: bytes = msgpack.packb([seq, kind, key, ts_ms, body], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"uplink body is not serialisable: {exc}") from exc
    return out


def _to_entry(raw: Any) -> Entry:
    if (not isinstance(raw, list) or len(raw) != 5 or type(raw[0]) is not int
            or not isinstance(raw[1], str) or not isinstance(raw[2], str)
            or type(raw[3]) is not int):
        raise WireError("entry must be [seq:int, kind:str, key:str, ts_ms:int, body]")
    return Entry(raw[0], raw[1], raw[2], raw[3], raw[4])


def unpack_entry(data: bytes) -> Entry:
    """Decode one packed entry."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"bad entry: {exc}") from exc
    return _to_entry(raw)


def pack_batch(edge_id: str, packed: list[bytes]) -> dict[str, bytes]:
    """Stream fields of one batch of already-packed entries (same shard, in order)."""
    header = msgpack.Packer().pack_array_header(len(packed))
    return {"e": edge_id.encode(), "n": str(len(packed)).encode(),
            "b": header + b"".join(packed)}


def unpack_batch(fields: dict[bytes, bytes]) -> tuple[str, list[Entry]]:
    """Decode a batch's stream fields into ``(edge_id, entries)``; :class:`WireError` if bad."""
    edge, blob = fields.get(b"e"), fields.get(b"b")
    if not edge or blob is None:
        raise WireError("batch needs fields e and b")
    try:
        raw = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:
        raise WireError(f"bad batch: {exc}") from exc
    if not isinstance(raw, list):
        raise WireError("batch b must be an array of entries")
    return edge.decode(errors="replace"), [_to_entry(e) for e in raw]
