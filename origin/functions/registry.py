"""Origin functions: application code the origin's workers run for each uplink event.

Register handlers on an :class:`OriginFunctions` object with a decorator::

    from origin.functions import OriginFunctions

    functions = OriginFunctions()

    @functions.on("alert")
    async def on_alert(ctx, event):
        await ctx.redis.incr(f"myapp:alerts:{event.key}")

and start the origin with ``--functions mymod:functions`` (or ``ORIGIN_FUNCTIONS``, or
the entry-point group ``edge_relay.origin_functions``; :mod:`origin.functions.loader`).

Contract of a handler: ``async def handler(ctx: FunctionContext, event: OriginEvent)``.
It runs *at least once* per event, and *once in effect* when it finished: a handler
that returned is recorded as done for that event (``event.id``) before the event is
acknowledged, and a redelivered event (a worker crashed, another claimed it) does not
run it again.  Only a crash *while* it runs, or between its return and that record
(one Redis round trip), runs it again: make its effects idempotent on ``event.id``
(e.g. ``SET myapp:seen:{event.id} 1 NX``).  A handler that raises is retried with
backoff up to the configured attempts, then dead-lettered (``er:{up:N}:hooks:dead``);
raise :class:`DeadLetter` to dead-letter at once.  A handler running longer than the
function timeout is cancelled (a failure).  Events of one kind may run concurrently
and in any order (several workers).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from edge_node.contract import KINDS
from origin.hooks.record import OriginEvent

__all__ = ["OriginFunctions", "FunctionContext", "Handler", "DeadLetter", "Registered"]


class DeadLetter(Exception):
    """Raise from a handler to dead-letter the event at once (no retry)."""


@dataclass(frozen=True, slots=True)
class FunctionContext:
    """What a handler gets besides the event.

    ``redis``: the worker's hooks client (shared; do not close it; make one call at a
    time: its pool holds one connection per running attempt).  ``attempt``: 1 on the
    first try.  ``dedupe_key``: ``"<handler name>:<event id>"``, stable across retries and
    redeliveries.  ``log``: a logger named for the handler."""

    redis: aioredis.Redis
    handler: str
    attempt: int
    consumer: str
    log: logging.Logger

    def dedupe_key(self, event: OriginEvent) -> str:
        """A key unique to this handler and event (for the handler's own SET NX)."""
        return f"{self.handler}:{event.id}"


Handler = Callable[[FunctionContext, OriginEvent], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Registered:
    """One handler for one kind (``*``: every kind) under a unique ``name``."""

    kind: str
    name: str
    fn: Handler


class OriginFunctions:
    """A set of handlers, by event kind (see the module docstring)."""

    def __init__(self) -> None:
        self._handlers: list[Registered] = []

    def on(self, *kinds: str, name: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: run the coroutine function for events of ``kinds`` (``"*"``: all).

        ``name`` (default ``module.qualname``) identifies the handler in done records,
        dead letters and metrics: renaming it makes redelivered events run it again.
        Raises ``ValueError``/``TypeError`` at import time for an unknown kind, a plain
        (not ``async``) function or a name used twice."""
        if not kinds:
            raise ValueError("on(): name at least one event kind (or '*')")
        for k in kinds:
            if k != "*" and k not in KINDS:
                raise ValueError(f"on({k!r}): unknown event kind (one of "
                                 f"{', '.join(sorted(KINDS))}, or '*')")

        def register(fn: Handler) -> Handler:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{getattr(fn, '__qualname__', fn)!r}: a handler must be "
                                "an async function")
            n = name or f"{fn.__module__}.{fn.__qualname__}"
            for k in kinds:
                if any(r.name == n and r.kind == k for r in self._handlers):
                    raise ValueError(f"handler {n!r} registered twice for {k!r}")
                self._handlers.append(Registered(k, n, fn))
            return fn

        return register

    @property
    def handlers(self) -> list[Registered]:
        """Every registration, in order."""
        return list(self._handlers)

    def kinds(self) -> set[str]:
        """The kinds with at least one handler (``*`` stands for all)."""
        return {r.kind for r in self._handlers}

    def __len__(self) -> int:
        return len(self._handlers)
