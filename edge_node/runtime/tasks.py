"""Fire-and-forget tasks that are not garbage-collected mid-flight.

The event loop keeps only weak references to tasks; a task nobody holds can
vanish before it finishes.  :func:`spawn` keeps a strong reference until done
and logs a failure instead of losing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["spawn"]

log = logging.getLogger("edge_node.runtime.tasks")
_running: set[asyncio.Task[Any]] = set()


def _done(t: asyncio.Task[Any]) -> None:
    _running.discard(t)
    if not t.cancelled() and t.exception() is not None:
        log.error("background task %s failed", t.get_name(), exc_info=t.exception())


def spawn(coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
    """Run ``coro`` in the background on the running loop."""
    t = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(t)
    t.add_done_callback(_done)
    return t
