"""An origin function as a hooks target: one call per attempt, bounded in time."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from origin.functions.registry import DeadLetter, FunctionContext, Registered
from origin.hooks.record import OriginEvent
from origin.hooks.target import Outcome

__all__ = ["FunctionTarget"]


class FunctionTarget:
    """Runs one registered handler (see :mod:`origin.functions.registry`)."""

    family = "function"

    def __init__(self, reg: Registered, r: aioredis.Redis, consumer: str,
                 timeout: float = 30.0) -> None:
        self.reg = reg
        self.name = f"fn:{reg.name}"
        self.label = reg.name
        self.r = r
        self.consumer = consumer
        self.timeout = timeout
        self.log = logging.getLogger(f"origin.functions.{reg.name}")

    async def attempt(self, event: OriginEvent, attempt: int, now: float) -> Outcome:
        """Call the handler; an exception or a timeout is a failed attempt (logged);
        :class:`DeadLetter` a permanent one."""
        ctx = FunctionContext(self.r, self.reg.name, attempt, self.consumer, self.log)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self.reg.fn(ctx, event)
        except DeadLetter as exc:
            return Outcome(False, f"DeadLetter: {exc}", permanent=True)
        except TimeoutError:
            self.log.warning("handler %s timed out on %s (attempt %d)", self.reg.name,
                             event.id, attempt)
            return Outcome(False, f"timed out after {self.timeout:g} s",
                           latency=time.perf_counter() - t0)
        except Exception as exc:  # user code: any error is a failed attempt
            self.log.warning("handler %s failed on %s (attempt %d): %r", self.reg.name,
                             event.id, attempt, exc)
            return Outcome(False, f"{type(exc).__name__}: {exc}",
                           latency=time.perf_counter() - t0)
        return Outcome(True, latency=time.perf_counter() - t0)
