"""The edge's periodic work, run as one background task from ``start()`` to ``stop()``.

Every 0.25 s the task calls ``tick(now)`` (the hub's timers), then, each when its
interval has passed since the task started or since its last turn, in this order:
``status()`` every 5 s (the edge's status record for the origin),
``refresh_neighbours()`` every ``neighbours_every`` s and ``checkpoint()`` every
``checkpoint_every`` s.  A neighbour refresh or checkpoint round that raises is logged
and tried again at its next turn; ``now`` is :func:`time.monotonic`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["Housekeeper"]

log = logging.getLogger("edge_node.server")  # the records are the edge server's

#: Seconds between two ticks, and between two status records.
TICK = 0.25
STATUS_EVERY = 5.0


class Housekeeper:
    """Owns the periodic task (see the module docstring).  ``start()`` needs a running
    event loop; ``stop()`` cancels the task, and does nothing before ``start()``."""

    def __init__(self, tick: Callable[[float], None], status: Callable[[], None],
                 refresh_neighbours: Callable[[], Awaitable[None]],
                 checkpoint: Callable[[], Awaitable[None]],
                 neighbours_every: float, checkpoint_every: float) -> None:
        self.tick = tick
        self.status = status
        self.refresh_neighbours = refresh_neighbours
        self.checkpoint = checkpoint
        self.neighbours_every = neighbours_every
        self.checkpoint_every = checkpoint_every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="housekeeping")

    def stop(self) -> None:
        """Cancel the task (a turn in progress is interrupted)."""
        if self._task:
            self._task.cancel()

    async def _run(self) -> None:
        last_cp = last_nb = last_st = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.tick(now)
            if now - last_st >= STATUS_EVERY:
                last_st = now
                self.status()
            if now - last_nb >= self.neighbours_every:
                last_nb = now
                try:
                    await self.refresh_neighbours()
                except Exception:
                    log.exception("neighbour refresh failed")
            if now - last_cp >= self.checkpoint_every:
                last_cp = now
                try:
                    await self.checkpoint()
                except Exception:
                    log.exception("checkpointing failed")
