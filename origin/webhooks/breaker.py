"""A circuit breaker per webhook URL (sans-I/O: ``now`` is passed in).

States are :class:`BreakerState`; every change goes through :data:`TRANSITIONS`, a
table of ``(state, event) -> state`` (``python -m origin.webhooks.breaker`` prints it):

- CLOSED: requests go; ``threshold`` consecutive failures trip it (TRIP) -> OPEN.
- OPEN: no request goes for ``cooldown`` seconds; then COOLDOWN_OVER -> HALF_OPEN.
- HALF_OPEN: exactly one request (the probe) goes; its success closes the breaker,
  its failure opens it again for another ``cooldown``.

Results of requests that were already in flight when it opened are ignored while it
is OPEN (an event the table does not list leaves the state as it is).  The caller asks
:meth:`CircuitBreaker.allow` before each request and reports the outcome with
:meth:`CircuitBreaker.record`; while it is not allowed, :meth:`CircuitBreaker.retry_at`
says when to ask again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["BreakerState", "BreakerEvent", "TRANSITIONS", "CircuitBreaker"]


class BreakerState(enum.Enum):
    """Where a breaker is; the value is the ``origin_webhook_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class BreakerEvent(enum.Enum):
    """What happened."""

    SUCCESS = "success"
    FAILURE = "failure"  # a failure below the threshold
    TRIP = "trip"  # the failure that reaches the threshold (or a failed probe)
    COOLDOWN_OVER = "cooldown_over"


S, E = BreakerState, BreakerEvent
#: The whole state machine.  Pairs not listed leave the state unchanged.
TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    (S.CLOSED, E.SUCCESS): S.CLOSED,
    (S.CLOSED, E.FAILURE): S.CLOSED,
    (S.CLOSED, E.TRIP): S.OPEN,
    (S.OPEN, E.COOLDOWN_OVER): S.HALF_OPEN,
    (S.HALF_OPEN, E.SUCCESS): S.CLOSED,
    (S.HALF_OPEN, E.FAILURE): S.OPEN,
    (S.HALF_OPEN, E.TRIP): S.OPEN,
}


@dataclass(slots=True)
class CircuitBreaker:
    """One URL's breaker (see the module docstring)."""

    threshold: int = 5
    cooldown: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    opens: int = 0
    #: ``(from, event, to)`` of every change, newest last (bounded).
    history: list[tuple[BreakerState, BreakerEvent, BreakerState]] = field(
        default_factory=list)

    def _fire(self, event: BreakerEvent, now: float) -> None:
        new = TRANSITIONS.get((self.state, event), self.state)
        if new is not self.state:
            self.history.append((self.state, event, new))
            del self.history[:-50]
            if new is BreakerState.OPEN:
                self.opened_at = now
                self.opens += 1
            self.state = new

    def allow(self, now: float) -> bool:
        """May a request go now?  In HALF_OPEN only one (the probe) until it reports."""
        if self.state is BreakerState.OPEN and now >= self.opened_at + self.cooldown:
            self._fire(BreakerEvent.COOLDOWN_OVER, now)
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_at(self, now: float) -> float:
        """When a request refused by :meth:`allow` should ask again."""
        if self.state is BreakerState.OPEN:
            return max(now, self.opened_at + self.cooldown)
        # HALF_OPEN with the probe in flight: ask again shortly.
        return now + min(1.0, self.cooldown)

    def record(self, ok: bool, now: float, *, probe: bool = False) -> None:
        """Report a request's outcome (``probe``: it was the one HALF_OPEN let through)."""
        if probe:
            self.probing = False
        if self.state is BreakerState.OPEN:
            return  # a request from before it opened: ignored
        if self.state is BreakerState.HALF_OPEN and not probe:
            return
        if ok:
            self.failures = 0
            self._fire(BreakerEvent.SUCCESS, now)
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.failures = 0
            self._fire(BreakerEvent.TRIP, now)
        else:
            self._fire(BreakerEvent.FAILURE, now)


def _print_table() -> None:
    for (state, event), new in TRANSITIONS.items():
        print(f"{state.name:<10} --{event.value:<14}--> {new.name}")


if __name__ == "__main__":
    _print_table()
