"""HDR latency histograms (a thin wrapper over ``hdrh``).

Values are recorded in microseconds, from 1 µs to 60 s, with 3 significant digits.
Workers send their histogram to the parent as ``encode()`` text, which merges them.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3

#: The percentiles every report shows, as (label, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)


class Latency:
    """A latency histogram in microseconds."""

    def __init__(self) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_ns(self, ns: int) -> None:
        """Record one latency given in nanoseconds (clamped into the trackable range)."""
        us = ns // 1000
        if us < LOWEST_US:
            us = LOWEST_US
        elif us > HIGHEST_US:
            us = HIGHEST_US
        self._h.record_value(us)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def encode(self) -> str:
        """Return the histogram in the HDR compressed text form."""
        raw = self._h.encode()
        return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)

    def merge_encoded(self, encoded: str) -> None:
        """Add a histogram produced by :meth:`encode` into this one."""
        if encoded:
            self._h.decode_and_add(encoded)

    def merge(self, other: Latency) -> None:
        self._h.add(other._h)

    def summary(self) -> dict[str, float]:
        """Return count, mean, p50/p90/p99/p99.9 and max in microseconds."""
        h = self._h
        count = self.count
        out: dict[str, float] = {"count": float(count)}
        if count == 0:
            for label, _ in PERCENTILES:
                out[label] = 0.0
            out["max"] = 0.0
            out["mean"] = 0.0
            return out
        for label, pct in PERCENTILES:
            out[label] = float(h.get_value_at_percentile(pct))
        out["max"] = float(h.get_max_value())
        out["mean"] = round(float(h.get_mean_value()), 1)
        return out

    @classmethod
    def from_encoded(cls, encoded: str) -> Latency:
        lat = cls()
        lat.merge_encoded(encoded)
        return lat
