"""A circuit breaker (sans-I/O: the caller passes ``now``, monotonic seconds).

States: ``closed`` (calls go through; ``failure_threshold`` consecutive failures
open it), ``open`` (no calls until ``reset_timeout`` has passed, then one probe
in ``half_open``), ``half_open`` (``success_threshold`` successes close it, one
failure opens it again with the timeout doubled up to ``max_reset_timeout``).
"""

from __future__ import annotations

import enum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    """Breaker state; the value is what metrics and logs show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Decides whether to try Redis now.  Call :meth:`allow` before a call, then exactly
    one of :meth:`record_success` / :meth:`record_failure` with its outcome."""

    def __init__(self, failure_threshold: int = 3, reset_timeout: float = 1.0,
                 max_reset_timeout: float = 10.0, success_threshold: int = 1) -> None:
        if failure_threshold < 1 or success_threshold < 1 or reset_timeout <= 0:
            raise ValueError("thresholds must be >= 1 and reset_timeout > 0")
        self.failure_threshold = failure_threshold
        self.base_timeout = reset_timeout
        self.max_reset_timeout = max(max_reset_timeout, reset_timeout)
        self.success_threshold = success_threshold
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.successes = 0
        self.timeout = reset_timeout
        self.opened_at = 0.0
        #: Times the breaker went from closed/half-open to open (a metric).
        self.opens = 0

    def allow(self, now: float) -> bool:
        """True if a call may be tried now (moves ``open`` to ``half_open`` when due)."""
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.timeout:
                return False
            self.state = BreakerState.HALF_OPEN
            self.successes = 0
        return True

    def retry_at(self) -> float:
        """Monotonic time at which an open breaker lets the next probe through."""
        return self.opened_at + self.timeout if self.state is BreakerState.OPEN else 0.0

    def record_success(self, now: float) -> None:
        """A call succeeded."""
        self.failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self.successes += 1
            if self.successes >= self.success_threshold:
                self.state = BreakerState.CLOSED
                self.timeout = self.base_timeout

    def record_failure(self, now: float) -> None:
        """A call failed (error or too slow)."""
        if self.state is BreakerState.HALF_OPEN:
            self.timeout = min(self.timeout * 2, self.max_reset_timeout)
            self._open(now)
            return
        self.failures += 1
        if self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.failures = 0
        self.opens += 1
