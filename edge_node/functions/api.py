"""What an application writes: a :class:`Functions` set of RPCs and event handlers.

::

    from edge_node.functions import Functions, RpcError

    functions = Functions()

    @functions.rpc("leaderboard.top")
    async def top(ctx, args):
        n = int(args.get("n", 10))
        return await ctx.history("scores", limit=n)

    @functions.on_window("sensor-*")
    async def too_hot(ctx, event):
        if event.body["metrics"]["temp"]["mean"] > 80:
            await ctx.command(event.key, "fan", {"speed": "max"})

Contract of a function:

- An ``async def`` runs on the edge's event loop: it must not block (no ``time.sleep``,
  no blocking I/O, no long CPU loop); it may await the context's coroutines.  A plain
  ``def`` runs in the edge's bounded thread pool (for CPU-heavy or blocking work); it
  gets the same context but must not call its coroutines (it returns a value, that is
  all).
- It holds no state of its own between calls: what it needs lives in rooms, device
  shadows or the store, so any edge can run any call.
- An RPC gets ``(ctx, args)`` (``args``: the decoded msgpack value the client sent) and
  returns a msgpack-able value.  Raising :class:`RpcError` sends the client a typed
  application error; any other exception is a 4011 to the client and a traceback in the
  edge's log.  Each call is bounded by ``timeout`` (4009 to the client when it passes).
- An event handler gets ``(ctx, event)`` (:class:`~edge_node.functions.context.Event`);
  what it returns is ignored; a failure or timeout is logged and counted, never retried.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Functions", "RpcError", "RpcSpec", "EventSpec", "TRIGGERS"]

#: Event triggers: what ``key`` matches for each (docs/functions.md).
TRIGGERS = {
    "telemetry": "device id",  # a batch of samples accepted from a device
    "window": "device id",     # a device's telemetry window closed (its rollup)
    "alert": "device id",      # the anomaly detector raised or cleared an alert
    "presence": "room",        # a member joined or left a room on this edge
    "message": "room",         # a reliable message in a room this edge owns is durable
}

_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")


class RpcError(Exception):
    """An application error an RPC raises on purpose: the client gets ``kind`` (a short
    name such as ``"no_such_player"``) and ``details`` (any msgpack-able value, a map
    with a ``message`` when only ``message`` is given)."""

    def __init__(self, kind: str, message: str = "", details: Any = None) -> None:
        if not kind:
            raise ValueError("an RpcError needs a kind")
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.details = details if details is not None else (
            {"message": message} if message else None)


@dataclass(frozen=True, slots=True)
class RpcSpec:
    """One registered RPC."""

    name: str
    fn: Callable[..., Any]
    #: Seconds the call may take (None: the edge's ``--function-timeout``).
    timeout: float | None
    #: True when ``fn`` is a plain function (run in the thread pool).
    threaded: bool


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One registered event handler: ``trigger`` events whose key matches ``pattern``."""

    name: str
    trigger: str
    pattern: str
    fn: Callable[..., Any]
    timeout: float | None
    threaded: bool


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (0 < timeout <= 300):
        raise ValueError("a function's timeout must be in (0, 300] seconds")


@dataclass
class Functions:
    """A set of RPCs and event handlers; the edge loads one or more by ``module:attr``.

    Registration errors (bad or duplicate name, unknown trigger) raise ``ValueError``
    at import time, so a bad module fails the edge's start, never a call.
    """

    rpcs: dict[str, RpcSpec] = field(default_factory=dict)
    events: list[EventSpec] = field(default_factory=list)

    def rpc(self, name: str | None = None, *, timeout: float | None = None
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the decorated function as RPC ``name`` (default: its ``__name__``).
        Names: 1-128 of ``A-Z a-z 0-9 _ . : / -``."""
        _check_timeout(timeout)

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            n = name or fn.__name__
            if not _NAME.match(n):
                raise ValueError(f"bad RPC name {n!r}: use 1-128 of A-Z a-z 0-9 _ . : / -")
            if n in self.rpcs:
                raise ValueError(f"RPC {n!r} is registered twice")
            self.rpcs[n] = RpcSpec(n, fn, timeout, not inspect.iscoroutinefunction(fn))
            return fn
        return deco

    def on(self, trigger: str, pattern: str = "*", *, timeout: float | None = None
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the decorated function for ``trigger`` events (:data:`TRIGGERS`)
        whose key (device id or room) matches the ``fnmatch`` ``pattern``."""
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}; one of {', '.join(TRIGGERS)}")
        if not pattern:
            raise ValueError("an event pattern must not be empty")
        _check_timeout(timeout)

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.events.append(EventSpec(f"{trigger}:{fn.__name__}", trigger, pattern, fn,
                                         timeout, not inspect.iscoroutinefunction(fn)))
            return fn
        return deco

    def on_telemetry(self, pattern: str = "*", *, timeout: float | None = None
                     ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Each batch of samples a device (id matching ``pattern``) sent and the edge
        accepted: ``event.body`` = ``{"batch": id, "samples": [[metric, value, ts_ms]]}``."""
        return self.on("telemetry", pattern, timeout=timeout)

    def on_window(self, pattern: str = "*", *, timeout: float | None = None
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Each closed telemetry window of a device: ``event.body`` = the rollup sent to
        the origin (``{"metrics": {name: {count, mean, min, max, ...}}, ...}``)."""
        return self.on("window", pattern, timeout=timeout)

    def on_alert(self, pattern: str = "*", *, timeout: float | None = None
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Each alert raised or cleared for a device: ``event.body`` = the alert."""
        return self.on("alert", pattern, timeout=timeout)

    def on_presence(self, pattern: str = "*", *, timeout: float | None = None
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Each join or leave of a member on this edge, rooms matching ``pattern``:
        ``event.body`` = ``{"session": id, "subject": sub, "kind": kind, "joined": bool}``."""
        return self.on("presence", pattern, timeout=timeout)

    def on_message(self, pattern: str, *, timeout: float | None = None
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Each reliable message of a room matching ``pattern``, once, on the room's owner
        edge when the message is durable: ``event.body`` = ``{"sender": sid,
        "payload": bytes, "pos": [epoch, seq]}``."""
        return self.on("message", pattern, timeout=timeout)

    def merge(self, other: Functions) -> None:
        """Add ``other``'s functions (a name registered in both is a ``ValueError``)."""
        for n, spec in other.rpcs.items():
            if n in self.rpcs:
                raise ValueError(f"RPC {n!r} is registered twice")
            self.rpcs[n] = spec
        self.events.extend(other.events)
