"""What a player saw of a game room around an event (a drain, a kill), from the arrival
times and room ticks of the state frames it received: used by the demo and by
``bench games --chaos``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["SILENCE", "around"]

#: A silence longer than this (seconds; three patch intervals at 20 Hz) that begins
#: within :data:`_NEAR` of the event is the room not ticking.
SILENCE = 0.15
_NEAR = 2.0


def around(frames: Sequence[tuple[float, int]], t_e: float,
           until: float) -> tuple[float, float, int] | None:
    """``(longest silence, ticking again, ticks run again)`` in seconds, seconds, ticks,
    from ``(arrival, tick)`` frames between just before ``t_e`` and ``until``.

    *Ticking again* is the end of the first silence over :data:`SILENCE` that began
    within 2 s of the event, measured from the event (the first frame after the event
    when there is none); *ticks run again* is how far the room's tick went back across
    that silence (a room restored from its last mark re-runs the ticks after it).
    None when no two frames fall in the window."""
    window = [f for f in frames if t_e - 0.2 <= f[0] <= until]
    pairs = list(itertools.pairwise(window))
    if not pairs:
        return None
    longest = max(b[0] - a[0] for a, b in pairs)
    hole = next(((a, b) for a, b in pairs
                 if b[0] - a[0] > SILENCE and a[0] <= t_e + _NEAR), None)
    if hole is None:
        first = next((f[0] for f in window if f[0] > t_e), t_e)
        return longest, first - t_e, 0
    (_ta, ka), (tb, kb) = hole
    return longest, tb - t_e, max(0, ka - kb + 1)
