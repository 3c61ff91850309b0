"""The origin's consumers' outer loop: run a step until stopped, riding out Redis errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisClusterException, RedisError

__all__ = ["until_stopped"]

log = logging.getLogger("origin")


async def until_stopped(stop: asyncio.Event, step: Callable[[], Awaitable[None]], what: str,
                        on_error: Callable[[], None]) -> None:
    """Await ``step()`` again and again until ``stop`` is set.  A Redis or socket error
    (``RedisClusterException``: no cluster node answered yet) is logged as ``what``,
    counted through ``on_error`` and retried after 0.5 s (sooner if ``stop`` is set)."""
    while not stop.is_set():
        try:
            await step()
        except (RedisError, RedisClusterException, OSError) as exc:
            on_error()
            log.warning("%s error, retrying: %r", what, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
