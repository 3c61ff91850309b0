"""The cluster-wide list of running game rooms: one JSON entry per room, kept fresh by
the room's owner edge (about once a second), read by ROOM_LIST on any edge and by the
origin's ``GET /v1/rooms``.  An entry not refreshed for :data:`LISTING_TTL` seconds
(its owner died, or the room ended without saying so) is ignored."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

__all__ = ["LISTING_TTL", "pack_listing", "unpack_listings"]

#: Seconds after which an entry not refreshed by its owner is ignored.
LISTING_TTL = 10.0


def pack_listing(entry: dict[str, Any], now: float) -> bytes:
    """The stored form of one room's listing (``now``: wall-clock seconds)."""
    return json.dumps({**entry, "at": round(now, 3)}, separators=(",", ":")).encode()


def unpack_listings(raw: dict[Any, Any], pattern: str, now: float,
                    ttl: float = LISTING_TTL) -> list[dict[str, Any]]:
    """The fresh entries of ``raw`` (room -> stored bytes) whose room matches
    ``pattern`` (``*`` wildcards), by name; entries that do not decode are skipped."""
    out = []
    for key, data in raw.items():
        room = key.decode() if isinstance(key, bytes) else str(key)
        if not fnmatch.fnmatchcase(room, pattern):
            continue
        try:
            entry = json.loads(data)
            fresh = now - float(entry["at"]) <= ttl
        except (ValueError, TypeError, KeyError):
            continue
        if fresh and isinstance(entry, dict):
            entry["name"] = room
            out.append(entry)
    out.sort(key=lambda e: e["name"])
    return out
