"""Garbage-collector settings for long-running edge and origin processes.

Measured (``bench telemetry --procs 2``, 20,000 samples/s through one edge, one run of
about 30 s on a busy 2-core host): with CPython's default thresholds (700, 10, 10) and
the start-up heap frozen, the edge still ran 18 full (generation 2) collections,
median 199 ms, max 301 ms, 5.4 s of collector time in all; the event loop stood still
meanwhile, so the uplink's round trips (and every client's messages) waited.  With
the young generation at 20,000: 3 full collections, 1.5 s in all.  Most objects these
processes allocate per message are short-lived and in no reference cycle, so a young
collection every 700 allocations buys nothing but frequent passes, and every
long-lived object made at start-up (modules, settings) would be walked again by each
full collection if it were not frozen.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "freeze_heap", "tune_gc"]

#: Allocations (minus deallocations) between two young-generation collections
#: (CPython's default is 700).  The older generations keep their default ratios, so
#: full collections come about 30 times less often.
GEN0_THRESHOLD = 20_000


def freeze_heap() -> None:
    """Collect once, then move every object that exists now out of the collector's
    sight (``gc.freeze``): what lives until the process ends is never walked again,
    so later collections take a few ms, not tens."""
    gc.collect()
    gc.freeze()


def tune_gc(gen0: int = GEN0_THRESHOLD) -> None:
    """:func:`freeze_heap` (start-up objects are never garbage), and raise the young
    generation's threshold to ``gen0``.  Call once per process, after imports and
    before serving; cyclic garbage is still collected, only less often."""
    freeze_heap()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(gen0, g1, g2)
