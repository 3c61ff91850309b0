"""Distances between edges and callers, and the order in which edges are offered.

Used by the edge (its neighbour list, nearest first) and by the origin's discovery
endpoint (edges nearest the caller first).  Pure functions: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["distance_km", "position_of", "rank_edges", "BAND_KM"]

_E = TypeVar("_E", bound=Mapping[str, object])

#: Edges whose distances differ by less than one band count as equally near; within a
#: band the least loaded comes first (a 30 km detour is worth a much emptier edge).
BAND_KM = 100.0


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(min(1.0, math.sqrt(a)))


def position_of(info: Mapping[str, object]) -> tuple[float, float] | None:
    """``(lat, lon)`` from a registry entry, or None if it registered no valid position."""
    try:
        lat, lon = float(str(info["lat"])), float(str(info["lon"]))
    except (KeyError, ValueError):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


def _load(info: Mapping[str, object]) -> float:
    try:
        return float(str(info.get("connections", 0) or 0))
    except ValueError:
        return 0.0


def rank_edges(infos: list[_E], origin: tuple[float, float] | None) -> list[_E]:
    """Registry entries best first: by distance band from ``origin`` (edges without a
    position after those with one), then by load (connections), then by id.  Without
    ``origin`` by load only."""
    def key(info: _E) -> tuple[float, float, str]:
        band = 0.0
        if origin is not None:
            pos = position_of(info)
            band = math.inf if pos is None else distance_km(*origin, *pos) // BAND_KM
        return band, _load(info), str(info.get("id", ""))

    return sorted(infos, key=key)
