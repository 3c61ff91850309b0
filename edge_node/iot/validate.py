"""Per-sample validation of device telemetry (sans-I/O).

A TELEMETRY batch is checked sample by sample: a refused sample gets an error
entry ``(index, reason, message)`` and a counter, the other samples go on.
Reasons: ``bad_sample`` (not ``[metric, value, ts_ms]``, or a metric name too
long), ``unknown_metric`` (not allowed by the device token), ``bad_type``
(value not a finite number, timestamp not an integer), ``out_of_range``
(outside the token's declared range), ``too_old`` / ``too_new`` (device
timestamp too far from the edge clock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Validator", "Sample", "SampleError", "REASONS"]

REASONS = ("bad_sample", "unknown_metric", "bad_type", "out_of_range", "too_old", "too_new")

#: An accepted sample: ``(metric, value, ts_ms)``.
Sample = tuple[str, float, int]
#: A refused sample: ``(index, reason, message)``.
SampleError = tuple[int, str, str]


@dataclass(frozen=True, slots=True)
class Validator:
    """Checks samples against one device's allowed metrics.

    ``metrics`` maps a metric name to its declared ``(min, max)``; ``None``
    allows any metric with any finite value.  ``max_past_ms``/``max_future_ms``
    bound the device timestamp relative to the edge clock passed to
    :meth:`check`.
    """

    metrics: dict[str, tuple[float, float]] | None
    max_past_ms: int = 3_600_000
    max_future_ms: int = 60_000
    max_name: int = 64

    def check(self, samples: tuple[Any, ...], now_ms: int
              ) -> tuple[list[Sample], list[SampleError]]:
        """Split ``samples`` into accepted ``(metric, value, ts)`` and errors."""
        ok: list[Sample] = []
        errors: list[SampleError] = []
        metrics = self.metrics
        lo_ts, hi_ts = now_ms - self.max_past_ms, now_ms + self.max_future_ms
        for i, s in enumerate(samples):
            if type(s) is not tuple or len(s) != 3 or type(s[0]) is not str:
                errors.append((i, "bad_sample", "sample must be [metric, value, ts_ms]"))
                continue
            name, v, ts = s
            if not name or len(name) > self.max_name:
                errors.append((i, "bad_sample", f"metric name must be 1 to {self.max_name} "
                                                "characters"))
                continue
            rng = None
            if metrics is not None:
                rng = metrics.get(name)
                if rng is None:
                    errors.append((i, "unknown_metric",
                                   f"metric {name!r} is not allowed for this device"))
                    continue
            tv = type(v)
            if (tv is not float and tv is not int) or (tv is float and not math.isfinite(v)):
                errors.append((i, "bad_type", f"{name}: value must be a finite number"))
                continue
            if type(ts) is not int:
                errors.append((i, "bad_type", f"{name}: ts_ms must be an integer"))
                continue
            if rng is not None and not rng[0] <= v <= rng[1]:
                errors.append((i, "out_of_range",
                               f"{name}={v:g} outside [{rng[0]:g}, {rng[1]:g}]"))
                continue
            if ts < lo_ts:
                errors.append((i, "too_old", f"{name}: timestamp more than "
                                             f"{self.max_past_ms // 1000} s in the past"))
                continue
            if ts > hi_ts:
                errors.append((i, "too_new", f"{name}: timestamp more than "
                                             f"{self.max_future_ms // 1000} s in the future"))
                continue
            ok.append((name, float(v), ts))
        return ok, errors
