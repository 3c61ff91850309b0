"""Reconnect delays with full jitter (sans-I/O: the caller sleeps).

Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): the
delay before attempt ``n`` is uniform in ``[0, min(cap, base * 2**n)]``, so a
crowd of clients that lost the same edge spreads out instead of arriving in
waves.
"""

from __future__ import annotations

import random

__all__ = ["full_jitter", "Backoff"]


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay in seconds before retry number ``attempt`` (0-based)."""
    r = rng or random
    return r.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


class Backoff:
    """Counts attempts; :meth:`next_delay` grows, :meth:`reset` after a success."""

    def __init__(self, base: float = 0.5, cap: float = 20.0,
                 rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        """Delay before the next attempt; counts the attempt."""
        d = full_jitter(self.attempt, self.base, self.cap, self._rng)
        self.attempt += 1
        return d

    def reset(self) -> None:
        """Forget past failures."""
        self.attempt = 0
