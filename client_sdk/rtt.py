"""Latency-aware edge choice, kept up to date: a smoothed round trip per known edge.

:class:`EdgeRtts` is the sans-I/O part: probe results in (``record``), a smoothed RTT
per URL out (``snapshot``), and the order in which to try candidates (``order``).
:func:`probe_loop` is the asyncio part a :class:`~client_sdk.Client` runs in the
background: every ``interval`` seconds it probes the edges the client knows (its
current edge, the neighbours the edge announced, the configured URLs; at most
``max_edges``), one at a time, each probe one round trip
(:func:`~client_sdk.probe.probe_once`), so the cost is bounded: ``max_edges``
probes per interval per client.

Smoothing is TCP's (RFC 6298): ``srtt = 7/8 srtt + 1/8 sample`` after a first sample
taken as it is.  An edge whose last probe went unanswered is *unreachable* until a
probe answers again.

Order of failover candidates (:meth:`EdgeRtts.order`, applied by
:class:`~client_sdk.failover.EdgeList`): measured edges by smoothed RTT, then edges
not measured yet in the order the server (its neighbour list) and the configuration
gave, then unreachable ones.  The edge being reconnected to stays first when the
client is not told to go elsewhere (its session state is there, and a dropped link is
often just that).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence

from .transport import TlsOptions

__all__ = ["EdgeRtts", "probe_loop"]

#: Weight of a new sample in the smoothed RTT (RFC 6298's alpha).
ALPHA = 0.125


class EdgeRtts:
    """Smoothed RTT per edge URL (see the module docstring)."""

    def __init__(self, max_edges: int = 64) -> None:
        self.max_edges = max_edges
        self._srtt: dict[str, float] = {}
        self._down: set[str] = set()

    def record(self, url: str, sample: float | None) -> None:
        """A probe of ``url`` took ``sample`` seconds (None: unanswered)."""
        if sample is None:
            self._down.add(url)
            return
        self._down.discard(url)
        old = self._srtt.get(url)
        self._srtt[url] = sample if old is None else (1 - ALPHA) * old + ALPHA * sample
        while len(self._srtt) > self.max_edges:  # forget the oldest known edge
            del self._srtt[next(iter(self._srtt))]

    def get(self, url: str) -> float | None:
        """The smoothed RTT of ``url`` in seconds; None when unknown or unreachable."""
        return None if url in self._down else self._srtt.get(url)

    def snapshot(self) -> dict[str, float | None]:
        """URL -> smoothed RTT in seconds (None: its last probe went unanswered)."""
        out: dict[str, float | None] = dict(self._srtt)
        out.update(dict.fromkeys(self._down))
        return out

    def order(self, candidates: Sequence[str],
              alias: Mapping[str, str] | None = None) -> list[str]:
        """``candidates`` best first: measured by smoothed RTT, then not measured yet
        (in the given order), then unreachable.  ``alias``: the same edge under another
        URL (its other transport), whose measurement counts when the URL has none."""
        def key(i: int) -> tuple[int, float, int]:
            url = candidates[i]
            if url not in self._srtt and url not in self._down and alias and url in alias:
                url = alias[url]
            if url in self._down:
                return 2, 0.0, i
            rtt = self._srtt.get(url)
            return (1, 0.0, i) if rtt is None else (0, rtt, i)

        return [candidates[i] for i in sorted(range(len(candidates)), key=key)]


async def probe_loop(rtts: EdgeRtts, targets: Callable[[], Sequence[str]], interval: float,
                     tls: TlsOptions | None, timeout: float = 1.0,
                     max_edges: int = 8, alive: Callable[[], bool] = lambda: True) -> None:
    """Probe ``targets()`` (deduplicated, the first ``max_edges``) every ``interval``
    seconds, one at a time, recording each into ``rtts``; runs until cancelled or
    ``alive()`` is false (the client ended).  The
    first round comes after a random half to whole interval, so clients that connected
    together (after a failover) do not probe together."""
    from .probe import probe_once

    await asyncio.sleep(interval * random.uniform(0.5, 1.0))
    while alive():
        for url in list(dict.fromkeys(targets()))[:max_edges]:
            with contextlib.suppress(Exception):  # a probe must never end the loop
                rtts.record(url, await probe_once(url, timeout, tls))
        await asyncio.sleep(interval)
