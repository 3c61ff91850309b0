"""Tumbling windows per device and metric, with rollup pieces (sans-I/O).

Samples fall into windows by their **device** timestamp: window ``w`` covers
``[w, w + length)`` ms.  A window is closed once the edge clock passes
``w + length + grace``; samples arriving before that are folded in (late but
within grace).  A sample for a window that is already closed is not lost: it
goes into a *late* rollup of its window, emitted at the next :meth:`Windows.close_due`.

Exact counts across retries and edges: besides the window's summary (count,
min, max, mean, last and a percentile estimate), a rollup carries one *piece*
per device batch that contributed to it: ``batch_id -> {metric: [count, sum, min,
max]}``.  The origin applies each ``(window, batch)`` piece once, so a batch
re-sent to another edge after a failover is never counted twice, and a batch
whose first rollup was lost with its edge is counted from the re-send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Quantiles", "Agg", "Rollup", "Windows"]


class Quantiles:
    """A log-bucketed histogram: quantiles within ``accuracy`` relative error
    (DDSketch idea), constant memory per order of magnitude, mergeable."""

    __slots__ = ("_gamma_log", "buckets", "count", "zero")

    def __init__(self, accuracy: float = 0.01) -> None:
        gamma = (1 + accuracy) / (1 - accuracy)
        self._gamma_log = math.log(gamma)
        self.buckets: dict[int, int] = {}
        self.zero = 0
        self.count = 0

    def add(self, v: float) -> None:
        """Count one value."""
        self.count += 1
        a = abs(v)
        if a < 1e-9:
            self.zero += 1
            return
        k = math.ceil(math.log(a) / self._gamma_log)
        k = k if v > 0 else -k - 100_000  # negatives in their own key range
        self.buckets[k] = self.buckets.get(k, 0) + 1

    def _value(self, k: int) -> float:
        neg = k <= -100_000
        kk = -(k + 100_000) if neg else k
        g = math.exp(self._gamma_log)
        v = 2 * g ** kk / (g + 1)  # the bucket's midpoint (relative)
        return -v if neg else v

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) estimate; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = q * (self.count - 1)
        # Negative values: the larger the magnitude, the smaller the value.
        neg = sorted((k for k in self.buckets if k <= -100_000),
                     key=lambda k: -(k + 100_000), reverse=True)
        pos = sorted(k for k in self.buckets if k > -100_000)
        acc = 0
        for k in neg:
            acc += self.buckets[k]
            if acc > rank:
                return self._value(k)
        acc += self.zero
        if acc > rank:
            return 0.0
        for k in pos:
            acc += self.buckets[k]
            if acc > rank:
                return self._value(k)
        return self._value(pos[-1]) if pos else 0.0


@dataclass(slots=True)
class Agg:
    """Count, sum, min, max, last (by device time) and a quantile sketch."""

    count: int = 0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    last: float = 0.0
    last_ts: int = -1
    q: Quantiles | None = None

    def add(self, v: float, ts: int) -> None:
        """Fold in one sample."""
        self.count += 1
        self.total += v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        if ts >= self.last_ts:
            self.last, self.last_ts = v, ts
        if self.q is not None:
            self.q.add(v)

    def summary(self) -> dict[str, float]:
        """``count, min, max, mean, last`` and, with a sketch, ``p50, p95, p99``."""
        out = {"count": self.count, "min": self.lo, "max": self.hi,
               "mean": self.total / self.count if self.count else 0.0, "last": self.last}
        if self.q is not None:
            # Estimates are within the sketch's relative accuracy; clamp to what was seen.
            lo, hi, q = self.lo, self.hi, self.q.quantile
            out.update(p50=min(hi, max(lo, q(0.5))), p95=min(hi, max(lo, q(0.95))),
                       p99=min(hi, max(lo, q(0.99))))
        return out


@dataclass(slots=True)
class Rollup:
    """One closed window of one device: what goes up to the origin.

    ``metrics``: per-metric summary (empty for a *late* rollup); ``pieces``:
    ``batch_id -> {metric: [count, sum, min, max]}``; ``samples``: total count.
    ``raw``: the samples themselves when raw forwarding is on.
    """

    device: str
    start_ms: int
    length_ms: int
    metrics: dict[str, dict[str, float]]
    pieces: dict[int, dict[str, list[float]]]
    samples: int
    late: bool = False
    raw: list[tuple[str, float, int]] | None = None

    def body(self) -> dict[str, Any]:
        """The uplink entry body (kind ``rollup``; see ``docs/iot.md``)."""
        b: dict[str, Any] = {"w": self.start_ms, "len": self.length_ms, "n": self.samples,
                             "m": self.metrics,
                             "p": [[bid, m] for bid, m in self.pieces.items()]}
        if self.late:
            b["late"] = True
        if self.raw is not None:
            b["raw"] = [list(s) for s in self.raw]
        return b


@dataclass(slots=True)
class _Window:
    aggs: dict[str, Agg] = field(default_factory=dict)
    pieces: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    samples: int = 0
    raw: list[tuple[str, float, int]] | None = None


def _piece_add(piece: dict[str, list[float]], name: str, v: float) -> None:
    p = piece.get(name)
    if p is None:
        piece[name] = [1, v, v, v]
    else:
        p[0] += 1
        p[1] += v
        if v < p[2]:
            p[2] = v
        if v > p[3]:
            p[3] = v


class Windows:
    """The open windows of one device.

    Call :meth:`add` for each accepted sample, then :meth:`close_due` with the
    edge clock; it returns the rollups to send, oldest first.  ``touched``
    (returned by :meth:`add_batch`) tells which windows a batch went into, so
    the caller can acknowledge the batch once all of them are durable.
    """

    def __init__(self, device: str, length_ms: int, grace_ms: int, *,
                 quantiles: bool = True, raw: bool = False) -> None:
        self.device = device
        self.length = length_ms
        self.grace = grace_ms
        self.quantiles = quantiles
        self.raw = raw
        self.open: dict[int, _Window] = {}
        self.late: dict[int, _Window] = {}
        #: Windows before this start are closed.
        self.closed_before = -(2**62)
        self.late_samples = 0

    def add_batch(self, batch_id: int, samples: list[tuple[str, float, int]]) -> set[int]:
        """Fold one batch in; returns the window starts it touched (open or late)."""
        touched: set[int] = set()
        length = self.length
        for name, v, ts in samples:
            w = ts - ts % length
            if w < self.closed_before:
                win = self.late.get(w)
                if win is None:
                    win = self.late[w] = _Window(raw=[] if self.raw else None)
                self.late_samples += 1
                touched.add(-w - 1)  # late windows are named by -start-1
            else:
                win = self.open.get(w)
                if win is None:
                    win = self.open[w] = _Window(raw=[] if self.raw else None)
                agg = win.aggs.get(name)
                if agg is None:
                    agg = win.aggs[name] = Agg(q=Quantiles() if self.quantiles else None)
                agg.add(v, ts)
                touched.add(w)
            piece = win.pieces.get(batch_id)
            if piece is None:
                piece = win.pieces[batch_id] = {}
            _piece_add(piece, name, v)
            win.samples += 1
            if win.raw is not None:
                win.raw.append((name, v, ts))
        return touched

    def close_due(self, now_ms: int, *, force: bool = False) -> list[tuple[int, Rollup]]:
        """Rollups of windows whose end + grace has passed (all with ``force``), and of
        late samples; each with the window name used in :meth:`add_batch`'s result."""
        out: list[tuple[int, Rollup]] = []
        for w, win in sorted(self.late.items()):
            out.append((-w - 1, Rollup(self.device, w, self.length, {}, win.pieces,
                                       win.samples, late=True, raw=win.raw)))
        self.late.clear()
        limit = now_ms - self.length - self.grace
        for w in sorted(self.open):
            if not force and w > limit:
                break
            win = self.open.pop(w)
            self.closed_before = max(self.closed_before, w + self.length)
            out.append((w, Rollup(self.device, w, self.length,
                                  {n: a.summary() for n, a in win.aggs.items()},
                                  win.pieces, win.samples, raw=win.raw)))
        return out

    def next_deadline(self) -> int | None:
        """Edge time (ms) at which the oldest open window closes, or None."""
        if self.late:
            return -(2**62)
        if not self.open:
            return None
        return min(self.open) + self.length + self.grace
