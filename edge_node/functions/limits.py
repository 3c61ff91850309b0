"""How many function calls may run at once (sans-I/O: counters only, no clock, no loop).

An edge bounds its RPCs twice: at most ``per_edge`` in flight on the edge and at most
``per_client`` from one connection.  A call over either bound is refused at once
(4010 ``FUNCTION_BUSY``), never queued: a queue would only turn a flood into latency
for everybody.  Event handlers have their own edge-wide bound (``per_edge_events``);
an event over it is dropped and counted (events come from the edge itself, and a burst
of telemetry must not pile up tasks without end).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallLimits", "CallSlots", "call_limits"]


@dataclass(frozen=True, slots=True)
class CallLimits:
    """The bounds (see the module docstring) and the byte limit on arguments and
    results (``max_bytes``), and the default time limit of a call (``timeout``, s)."""

    per_edge: int = 256
    per_client: int = 16
    per_edge_events: int = 256
    max_bytes: int = 32 * 1024
    timeout: float = 5.0
    threads: int = 4

    def __post_init__(self) -> None:
        if min(self.per_edge, self.per_client, self.per_edge_events, self.threads) < 1:
            raise ValueError("function concurrency limits and threads must be at least 1")
        if self.max_bytes < 16:
            raise ValueError("the function payload limit must be at least 16 bytes")
        if not (0 < self.timeout <= 300):
            raise ValueError("the function timeout must be in (0, 300] seconds")


def call_limits(s: Any) -> CallLimits:
    """The limits named by an edge's settings (its ``function_*`` fields); raises
    ``ValueError`` with the reason for values out of range."""
    return CallLimits(per_edge=s.function_concurrency,
                      per_client=s.function_client_concurrency,
                      per_edge_events=s.function_event_concurrency,
                      max_bytes=s.function_max_bytes, timeout=s.function_timeout,
                      threads=s.function_threads)


@dataclass(slots=True)
class CallSlots:
    """The calls in flight, per client key and in all; :meth:`acquire` before a call,
    :meth:`release` once after it (whatever its outcome)."""

    limits: CallLimits
    in_flight: int = 0
    events_in_flight: int = 0
    by_client: dict[str, int] = field(default_factory=dict)

    def acquire(self, client: str) -> str | None:
        """Take a slot for a call from ``client``; None when taken, else why not (the
        text the client sees)."""
        if self.in_flight >= self.limits.per_edge:
            return (f"{self.limits.per_edge} function calls are running on this edge; "
                    "retry later")
        n = self.by_client.get(client, 0)
        if n >= self.limits.per_client:
            return (f"at most {self.limits.per_client} function calls in flight per "
                    "connection; wait for an answer first")
        self.in_flight += 1
        self.by_client[client] = n + 1
        return None

    def release(self, client: str) -> None:
        """Give back the slot :meth:`acquire` took for ``client``."""
        self.in_flight -= 1
        n = self.by_client.get(client, 0) - 1
        if n > 0:
            self.by_client[client] = n
        else:
            self.by_client.pop(client, None)

    def acquire_event(self) -> bool:
        """Take a slot for an event handler; False when the edge-wide bound is reached."""
        if self.events_in_flight >= self.limits.per_edge_events:
            return False
        self.events_in_flight += 1
        return True

    def release_event(self) -> None:
        """Give back a slot :meth:`acquire_event` took."""
        self.events_in_flight -= 1
