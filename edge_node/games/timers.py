"""Handler timers on the room's clock (ticks), so they fire at the same tick anywhere."""

from __future__ import annotations

import heapq
import math
from typing import Any

__all__ = ["TickTimers"]


class TickTimers:
    """Callbacks due at a tick.  :meth:`due` pops the ones whose tick has come, in the
    order they were set (ties broken by id, which only grows)."""

    __slots__ = ("_cancelled", "_heap", "_next_id")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Any, tuple[Any, ...]]] = []
        self._next_id = 0
        self._cancelled: set[int] = set()

    def add(self, now_tick: int, delay: float, tick_rate: int, fn: Any,
            args: tuple[Any, ...]) -> int:
        """Schedule ``fn(*args)`` at the first tick at least ``delay`` seconds after
        tick ``now_tick`` (at the next tick when ``delay`` <= 0)."""
        self._next_id += 1
        ticks = max(1, math.ceil(delay * tick_rate - 1e-9))
        heapq.heappush(self._heap, (now_tick + ticks, self._next_id, fn, args))
        return self._next_id

    def cancel(self, timer_id: int) -> None:
        if any(t[1] == timer_id for t in self._heap):
            self._cancelled.add(timer_id)

    def due(self, tick: int) -> list[tuple[Any, tuple[Any, ...]]]:
        """The callbacks due at or before ``tick``, removed from the set."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= tick:
            _t, tid, fn, args = heapq.heappop(heap)
            if tid in self._cancelled:
                self._cancelled.discard(tid)
                continue
            out.append((fn, args))
        return out

    def __len__(self) -> int:
        return len(self._heap) - len(self._cancelled)
