"""Bounded memory of recently seen idempotency keys (sans-I/O).

Membership is exact within the window: keys are remembered in arrival order
and the oldest is forgotten past ``size``, so a re-sent publish that arrives
out of order (retried after a transient refusal) is still told apart from a
duplicate.  Used by the SDK (drop copies) and the edge (drop re-sent
publishes).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["RecentKeys"]

V = TypeVar("V")


class RecentKeys(Generic[V]):
    """The last ``size`` keys seen, each with a value (e.g. its position).

    A plain dict holds the values and a fixed ring of slots the arrival order
    (cheaper per message than an ``OrderedDict``; this is on every receive).
    Adding a key that is already present updates its value and keeps its place.
    """

    __slots__ = ("_items", "_next", "_ring", "size")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._items: dict[int, V] = {}
        self._ring: list[int | None] = [None] * size
        self._next = 0

    def get(self, key: int) -> V | None:
        """The value stored with ``key``, or ``None`` if not (or no longer) seen."""
        return self._items.get(key)

    def __contains__(self, key: int) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: int, value: V) -> None:
        """Remember ``key``; forget the oldest key beyond the window."""
        items = self._items
        if key in items:
            items[key] = value
            return
        i = self._next
        old = self._ring[i]
        if old is not None:
            del items[old]
        self._ring[i] = key
        items[key] = value
        self._next = i + 1 if i + 1 < self.size else 0
