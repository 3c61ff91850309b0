"""Anomaly-likelihood detector: a graded score in [0, 1] for every sample (sans-I/O).

Per device and metric, O(1) work and a fixed-size state per sample:

1. **Two surprises.**  *Level*: ``|x - slow EWMA|`` (weight ``slow``) over its own
   mean absolute value (an EWMA with weight ``spread``); *step*: ``|x - previous
   sample|`` over its own mean.  Both spreads are floored by the data's quantum (the
   smallest non-zero step seen) and a millionth of the level, so flat, quantised or
   square-wave series never divide by ~0; errors are clipped at 10 spreads before they
   are learnt, so one outlier does not blind the detector.  Each ratio ``z`` maps to
   ``z / (z + knee)`` in [0, 1); the raw surprise ``a`` is the larger of the two (the
   step catches a change of period or of noise that keeps the level).
2. **Likelihood** (after Numenta's anomaly likelihood): the mean of the last ``short``
   raw surprises is compared with their long-run distribution (EWMA mean and variance,
   weight ``long``, floored at 0.03 and 0.0003 as Numenta's).  Its Gaussian tail ``Q``
   becomes the score ``min(1, -log10(Q) / digits)``: 0.5 is a tail of
   ``10**(-digits/2)``.  A regime the series has shown before (a daily cycle's edges,
   heavy-tailed bursts) keeps a high long-run mean and stops scoring.
3. **New extremes**: a sample more than ``extreme`` times the range seen so far (and
   more than the quantum) beyond the lowest or highest value seen, with an error ratio
   of at least ``extreme_z``, scores 1 (after Numenta's
   "spatial anomaly").
4. **Episodes**: an alert is raised when the score reaches ``on`` and cleared after
   ``clear_after`` consecutive samples below ``off``; while it is active the score is
   capped at ``off / 2``, so an episode is one detection (NAB rewards the first
   detection in a window and charges every false one).  Score 0 and no alert during
   the first ``warmup`` samples.

State per series: 14 floats/ints and a ring of ``short`` doubles (an ``array('d')``):
about 2.1 KB as a deep ``sys.getsizeof`` walk (its settings included), whatever the
series length.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

__all__ = ["LikelihoodSettings", "LikelihoodDetector"]

_SQRT1_2 = math.sqrt(0.5)


@dataclass(frozen=True, slots=True)
class LikelihoodSettings:
    """Tunables: one default for every series (chosen on NAB's development split)."""

    #: EWMA weight of the level baseline.
    slow: float = 0.02
    #: EWMA weight of both spreads (mean absolute level and step errors).
    spread: float = 0.01
    #: Error ratio at which a raw surprise is 0.5.
    knee: float = 3.0
    #: Samples in the short mean of raw surprises.
    short: int = 10
    #: EWMA weight of the long-run distribution of raw surprises.
    long: float = 0.0005
    #: Tail ``10**-digits`` scores 1.
    digits: float = 4.0
    #: Beyond the range seen by this fraction of it: score 1 (negative: off).
    extreme: float = 0.05
    #: ... and only when its error ratio (level or step) reaches this.
    extreme_z: float = 6.0
    #: Score that raises an alert, score below which it may clear.
    on: float = 0.5
    off: float = 0.2
    clear_after: int = 50
    warmup: int = 200

    def __post_init__(self) -> None:
        if not (0 < self.slow < 1 and 0 < self.spread < 1 and 0 < self.long < 1):
            raise ValueError("EWMA weights must be in (0, 1)")
        if self.short < 1 or self.warmup < 2 or self.clear_after < 1 or self.knee <= 0:
            raise ValueError("need short >= 1, warmup >= 2, clear_after >= 1, knee > 0")
        if not 0 <= self.off <= self.on <= 1 or self.digits <= 0:
            raise ValueError("need 0 <= off <= on <= 1 and digits > 0")


class LikelihoodDetector:
    """One series.  :meth:`update` returns the sample's score in [0, 1] and sets
    :attr:`last_score`, :attr:`raised` (this sample raised an alert), :attr:`cleared`
    (this sample cleared one) and :attr:`active`."""

    __slots__ = ("_amean", "_avar", "_hi", "_last", "_lerr", "_lo", "_quantum", "_quiet",
                 "_ri", "_ring", "_serr", "_sum", "active", "cleared", "last_score",
                 "level", "n", "raised", "s")

    def __init__(self, settings: LikelihoodSettings | None = None) -> None:
        self.s = settings or LikelihoodSettings()
        self.n = 0
        self.level = 0.0
        self._last = 0.0
        self._lerr = 0.0
        self._serr = 0.0
        self._quantum = math.inf
        self._lo = math.inf
        self._hi = -math.inf
        self._amean = 0.0
        self._avar = 0.0
        self._ring = array("d", bytes(8 * self.s.short))
        self._ri = 0
        self._sum = 0.0
        self._quiet = 0
        self.active = False
        self.raised = False
        self.cleared = False
        self.last_score = 0.0

    def update(self, x: float) -> float:
        """Score ``x``, then learn it."""
        s = self.s
        n = self.n
        self.n = n + 1
        self.raised = self.cleared = False
        if n == 0:
            self._last = self.level = self._lo = self._hi = x
            self.last_score = 0.0
            return 0.0
        learning = n <= s.warmup
        # 1. surprises
        step = abs(x - self._last)
        if 0.0 < step < self._quantum:
            self._quantum = step
        floor = abs(self.level) * 1e-6 + 1e-12
        if self._quantum != math.inf and self._quantum > floor:
            floor = self._quantum
        e = abs(x - self.level)
        sp = self._lerr if self._lerr > floor else floor
        sp2 = self._serr if self._serr > floor else floor
        z = e / sp
        z2 = step / sp2
        if z2 > z:
            z = z2
        a = z / (z + s.knee)
        w = 1.0 / n if learning and 1.0 / n > s.spread else s.spread
        self._lerr += w * ((e if e < 10.0 * sp else 10.0 * sp) - self._lerr)
        self._serr += w * ((step if step < 10.0 * sp2 else 10.0 * sp2) - self._serr)
        w = 1.0 / n if learning and 1.0 / n > s.slow else s.slow
        self.level += w * (x - self.level)
        self._last = x
        # 2. short mean of raw surprises against their long-run distribution
        ring = self._ring
        i = self._ri
        self._sum += a - ring[i]
        ring[i] = a
        self._ri = i + 1 if i + 1 < s.short else 0
        mean, var = self._amean, self._avar
        score = 0.0
        if not learning:
            d = self._sum / s.short - (mean if mean > 0.03 else 0.03)
            if d > 0:
                tail = 0.5 * math.erfc(d / math.sqrt(var if var > 0.0003 else 0.0003)
                                       * _SQRT1_2)
                score = -math.log10(tail) / s.digits if tail > 0 else 1.0
                if score > 1.0:
                    score = 1.0
            # 3. new extremes
            if s.extreme >= 0 and z >= s.extreme_z:
                r = (self._hi - self._lo) * s.extreme
                if r < floor:  # at least one quantum beyond (quantised data)
                    r = floor
                if x > self._hi + r or x < self._lo - r:
                    score = 1.0
        if x > self._hi:
            self._hi = x
        elif x < self._lo:
            self._lo = x
        w = 1.0 / n if learning and 1.0 / n > s.long else s.long
        dd = a - mean
        self._amean = mean + w * dd
        self._avar = (1.0 - w) * (var + w * dd * dd)
        # 4. episodes
        if self.active:
            if score < s.off:
                self._quiet += 1
                if self._quiet >= s.clear_after:
                    self.active = False
                    self.cleared = True
            else:
                self._quiet = 0
            if score > 0.5 * s.off:
                score = 0.5 * s.off
        elif score >= s.on:
            self.active = self.raised = True
            self._quiet = 0
        self.last_score = score
        return score
