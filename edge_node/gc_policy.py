"""Garbage-collector settings that keep an edge's pauses short.

CPython's full (generation 2) collection walks every tracked object while the event
loop waits.  Measured with ``python -m bench.scenarios.failover_trace`` (200 clients on
one of 3 edges, drained): each edge ran a full collection of 38-41 ms during the drain
(resumes on the neighbours and the draining edge's teardown allocate enough to trigger
one), and every client of that edge heard nothing meanwhile.

- :func:`freeze_startup`: once the edge is up, everything created so far (about 54,000
  objects: imported modules, settings, the server itself) goes to the permanent
  generation, so later full collections no longer walk it.  Objects created afterwards
  (sessions, rooms) are collected as usual.
- :func:`stop_for_drain`: a draining edge exits within ``drain_window + drain_timeout``
  seconds; it runs no collection at all until then (its garbage is bounded by that time).
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup", "stop_for_drain"]


def freeze_startup() -> None:
    """Collect once, then move every surviving object to the permanent generation.
    Call once, after start-up; calling it later would also pin live sessions."""
    gc.collect()
    gc.freeze()


def stop_for_drain() -> None:
    """No automatic collections from now on (the process is about to exit)."""
    gc.disable()
