"""When to try a hook job again, and when to give up (sans-I/O: ``now`` and the random
source are passed in).

A *job* is one event for one target (an origin function or a webhook URL).  After a
failed attempt, :meth:`RetryPolicy.decide` says :class:`Retry` (at a time) or
:class:`GiveUp` (why).  Delays follow exponential backoff with *full jitter*: the
``n``-th retry waits a uniform random time in ``[0, min(cap, base * 2**(n-1))]``, so
many jobs failing together do not come back together.  Two bounds: at most
``max_attempts`` attempts, and no retry due later than ``max_elapsed`` seconds after
the first attempt.  A failure the target calls permanent (an HTTP 4xx other than
408/425/429, a handler raising :class:`~origin.functions.DeadLetter`) is dead-lettered
at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RetryPolicy", "Retry", "GiveUp", "Decision"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again at ``at`` (same clock as the ``now`` given)."""

    at: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Dead-letter the job: ``reason`` is ``attempts``, ``elapsed`` or ``permanent``."""

    reason: str


Decision = Retry | GiveUp


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter (see the module docstring)."""

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 60.0
    max_elapsed: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not (0 < self.base <= self.cap):
            raise ValueError("backoff base must be > 0 and <= its cap")
        if self.max_elapsed <= 0:
            raise ValueError("max_elapsed must be > 0")

    def ceiling(self, attempt: int) -> float:
        """Longest wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 60))

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: ``rng()`` (uniform in ``[0, 1)``) times :meth:`ceiling`."""
        return rng() * self.ceiling(attempt)

    def decide(self, attempts: int, first_at: float, now: float, *, permanent: bool = False,
               rng: Callable[[], float] = random.random) -> Decision:
        """After ``attempts`` failed attempts (the first made at ``first_at``), at ``now``:
        retry (when) or dead-letter (why)."""
        if permanent:
            return GiveUp("permanent")
        if attempts >= self.max_attempts:
            return GiveUp("attempts")
        at = now + self.delay(attempts, rng)
        if at - first_at > self.max_elapsed:
            return GiveUp("elapsed")
        return Retry(at)

    def defer(self, not_before: float, first_at: float) -> Decision:
        """A job that could not be tried (its URL's breaker is open) waits until
        ``not_before``, unless that is past the job's time bound: then dead-letter."""
        if not_before - first_at > self.max_elapsed:
            return GiveUp("elapsed")
        return Retry(not_before)
