"""What share of the machine each part of a local run used, and whether the machine or
the load generator, rather than the relay, set the figures.

The demo runs everything on one host: the edges, Redis, the origin, and the simulated
players, devices and bots (in the demo's own process, the *load generator*).  On a
2-core machine they compete for the same cores, so a latency figure can be the wait
for a CPU rather than the relay's work.  :class:`CpuShares` samples each part's CPU
time (``psutil``) at the start and end of the measured window; :func:`bottleneck`
says which limit, if any, was reached.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

__all__ = ["CpuShares", "bottleneck", "BUSY", "LOAD_SATURATED"]

#: Above this share of all cores the host was busy enough that waiting for a CPU shows
#: in the latencies.
BUSY = 0.85
#: Above this many cores the load generator (one Python process: one core at most) was
#: saturated: it sent late and read late.
LOAD_SATURATED = 0.85


def _cpu(pid: int, children: bool = True) -> float | None:
    """CPU seconds (user + system) of ``pid`` (and its children); None once it is gone."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)] if children else [p]
    except psutil.Error:
        return None
    total = 0.0
    for q in procs:
        try:
            t = q.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def bottleneck(cores: dict[str, float], busy: float, load_part: str = "load") -> str | None:
    """``"machine"`` when every core was nearly busy (``busy`` is the host's share of
    all its cores, 0-1), ``"load generator"`` when the load part used nearly a whole
    core, else None."""
    if busy >= BUSY:
        return "machine"
    if cores.get(load_part, 0.0) >= LOAD_SATURATED:
        return "load generator"
    return None


class CpuShares:
    """``start()``, ``sample()`` before killing a process (its CPU until then still
    counts), then ``stop()`` -> the figures (see :meth:`stop`).  ``parts``: name ->
    process ids (their children are counted with them, but for ``load``, this process,
    whose children are the other parts)."""

    def __init__(self, parts: dict[str, list[int]]) -> None:
        self.parts = {k: list(v) for k, v in parts.items()}
        self.parts.setdefault("load", [os.getpid()])
        self._t0 = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._host0: Any = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._first = {}
        self.sample()
        self._first = dict(self._last)
        self._host0 = psutil.cpu_times()

    def sample(self) -> None:
        """Note every live process's CPU time now."""
        for pids in self.parts.values():
            for pid in pids:
                c = _cpu(pid, children=pid != os.getpid())
                if c is not None:
                    self._last[pid] = c

    def stop(self) -> dict[str, Any]:
        """``{cpus, wall_s, cores: {part: cores used}, busy_percent, bottleneck}``.  A
        process that died during the window counts up to its last :meth:`sample`."""
        self.sample()
        wall = max(1e-9, time.monotonic() - self._t0)
        host1 = psutil.cpu_times()
        idle = (host1.idle - self._host0.idle) + (getattr(host1, "iowait", 0.0)
                                                   - getattr(self._host0, "iowait", 0.0))
        total = sum(host1) - sum(self._host0)
        busy = max(0.0, min(1.0, 1.0 - idle / total)) if total > 0 else 0.0
        cores = {k: round(sum(self._last.get(p, 0.0) - self._first.get(p, 0.0)
                              for p in v) / wall, 2) for k, v in self.parts.items()}
        return {"cpus": psutil.cpu_count() or 1, "wall_s": round(wall, 1), "cores": cores,
                "busy_percent": round(100.0 * busy, 1), "bottleneck": bottleneck(cores, busy)}
