"""Bounded memory of recently seen idempotency keys (sans-I/O).

Membership is exact within the window: keys are remembered in arrival order
and the oldest is forgotten past ``size``, so a re-sent publish that arrives
out of order (retried after a transient refusal) is still told apart from a
duplicate.  Used by the SDK (drop copies) and the edge (drop re-sent
publishes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["RecentKeys"]

V = TypeVar("V")


class RecentKeys(Generic[V]):
    """The last ``size`` keys seen, each with a value (e.g. its position)."""

    __slots__ = ("_items", "size")

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._items: OrderedDict[int, V] = OrderedDict()

    def get(self, key: int) -> V | None:
        """The value stored with ``key``, or ``None`` if not (or no longer) seen."""
        return self._items.get(key)

    def __contains__(self, key: int) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: int, value: V) -> None:
        """Remember ``key``; forget the oldest key beyond the window."""
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
