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
   **Seasonal baselines** (only with timestamps, ``update(x, t)``): per hour of day (24
   bins) and hour of week (168 bins) the mean offset of ``x`` from the level, learned
   online (each bin an average of its first samples, then an EWMA with a memory of
   ``season_memory`` cycles; offsets clipped at 5 spreads).  From ``season_cycles``
   days on (hour of week: a week later) a seasonal baseline whose own mean absolute
   error is below ``season_gain`` times the level's replaces the level (of two that
   qualify, the one with the smaller error ratio); its error is ``x - (level +
   offset)`` and the step surprise becomes the change of that error, so a value normal
   for its hour is not surprising and one at the usual amplitude at the wrong hour is.
   Series without a daily or weekly pattern, or sparser than one sample an hour, keep
   the level.
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

State per series: about 20 floats/ints and a ring of ``short`` doubles (an
``array('d')``), about 1.5 KB as a deep ``sys.getsizeof`` walk (its settings included);
with timestamps, 384 more doubles (the bins), about 4.9 KB; whatever the series length.
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
    #: Seasonal baselines from the timestamps (hour of day, hour of week); off: none.
    seasonal: bool = True
    #: Memory of a seasonal bin, in cycles (days for hour of day, weeks for hour of week).
    season_memory: float = 4.0
    #: A seasonal baseline replaces the level when its mean absolute error is below this
    #: fraction of the one it would replace, and once it has seen this many cycles.
    season_gain: float = 0.7
    season_cycles: float = 3.0
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
        if self.season_memory < 1 or not 0 < self.season_gain <= 1 or self.season_cycles < 1:
            raise ValueError("need season_memory >= 1, 0 < season_gain <= 1, season_cycles >= 1")
        if not 0 <= self.off <= self.on <= 1 or self.digits <= 0:
            raise ValueError("need 0 <= off <= on <= 1 and digits > 0")


class LikelihoodDetector:
    """One series.  :meth:`update` returns the sample's score in [0, 1] and sets
    :attr:`last_score`, :attr:`raised` (this sample raised an alert), :attr:`cleared`
    (this sample cleared one) and :attr:`active`."""

    __slots__ = ("_amean", "_avar", "_dt", "_hi", "_last", "_lerr", "_lo", "_prof",
                 "_quantum", "_quiet", "_rerr", "_ri", "_ring", "_rlast", "_serr", "_sum",
                 "_t0", "_tlast", "_xerr", "active", "cleared", "last_score", "level", "n",
                 "raised", "s", "season")

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
        #: Seasonal state (allocated at the first timestamped sample after the warm-up):
        #: per hour-of-day bin (24) and hour-of-week bin (168), the mean offset of ``x``
        #: from the level and the bin's sample count.
        self._prof: array[float] | None = None
        self._xerr = [0.0, 0.0]  # mean |residual|: hour of day, hour of week
        self._t0 = self._tlast = math.nan
        self._dt = 0.0
        self._rlast = 0.0  # the last residual (signed) of the baseline in use
        self._rerr = 0.0  # mean |change of residual|
        #: The baseline in use: 0 level, 1 hour of day, 2 hour of week.
        self.season = 0
        self.active = False
        self.raised = False
        self.cleared = False
        self.last_score = 0.0

    def _seasonal(self, x: float, t: float, e: float, sp: float, floor: float,
                  learning: bool) -> tuple[float, float]:
        """The signed error and spread of the baseline in use for ``x`` at ``t``
        (seconds): the level's (``e``, ``sp``) or a seasonal one's, the one with the
        smaller error ratio when both seasonal ones qualify; then learn the bins."""
        s = self.s
        d = t - self._tlast  # nan at first
        self._tlast = t
        dt = self._dt
        if d > 0:
            dt = self._dt = d if dt == 0.0 else dt + 0.05 * ((d if d < 10 * dt else 10 * dt) - dt)
        self.season = 0
        if learning or not 0 < dt <= 3600:  # the level learns; or sparser than an hour
            return e, sp
        prof = self._prof
        if prof is None:  # the bins start with a settled level
            prof = self._prof = array("d", bytes(8 * 2 * (24 + 168)))
            self._t0 = t
        hw = int(t // 3600) % 168
        i_d = 2 * (hw % 24)
        i_w = 48 + 2 * hw
        dev = x - self.level
        age = t - self._t0
        xerr = self._xerr
        full = 3000.0 / dt  # a bin's samples in 50 minutes: it has seen one visit
        wmin = dt / (3600 * s.season_memory)
        spl = sp
        lim_sp = s.season_gain * sp
        ready = s.season_cycles * 86400.0
        # hour of day
        rd = dev - prof[i_d]
        ed = rd if rd >= 0 else -rd
        sd = xerr[0] if xerr[0] > floor else floor
        cd = prof[i_d + 1]
        use_d = age >= ready and cd >= full and sd < lim_sp
        # hour of week
        rw = dev - prof[i_w]
        ew = rw if rw >= 0 else -rw
        sw = xerr[1] if xerr[1] > floor else floor
        cw = prof[i_w + 1]
        use_w = age >= ready + 604800.0 and cw >= full and sw < lim_sp
        if use_d and (not use_w or ed * sw <= ew * sd):
            self.season = 1
            e, sp = rd, sd
        elif use_w:
            self.season = 2
            e, sp = rw, sw
        # learn: the spreads once every bin has seen a cycle, then the bins' offsets
        spr = s.spread
        if age >= 86400.0:
            xerr[0] = spl if xerr[0] == 0.0 else \
                xerr[0] + spr * ((ed if ed < 10 * sd else 10 * sd) - xerr[0])
            if age >= 604800.0:
                xerr[1] = spl if xerr[1] == 0.0 else \
                    xerr[1] + spr * ((ew if ew < 10 * sw else 10 * sw) - xerr[1])
        cd += 1.0
        prof[i_d + 1] = cd
        w = wmin if cd * wmin >= 1.0 else 1.0 / cd
        lim = 5 * sd
        prof[i_d] += w * (rd if -lim < rd < lim or cd == 1.0 else (lim if rd > 0 else -lim))
        cw += 1.0
        prof[i_w + 1] = cw
        w = wmin if cw * wmin >= 1.0 else 1.0 / cw
        lim = 5 * sw
        prof[i_w] += w * (rw if -lim < rw < lim or cw == 1.0 else (lim if rw > 0 else -lim))
        return e, sp

    def update(self, x: float, t: float | None = None) -> float:
        """Score ``x`` (at ``t``: seconds since the epoch, wall clock; optional), then
        learn it."""
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
        el = abs(x - self.level)
        spl = self._lerr if self._lerr > floor else floor
        r, sp = self._seasonal(x, t, x - self.level, spl, floor, learning) \
            if t is not None and s.seasonal else (x - self.level, spl)
        e = abs(r)
        rs = abs(r - self._rlast)
        self._rlast = r
        sp3 = self._rerr if self._rerr > floor else floor
        sp2 = self._serr if self._serr > floor else floor
        z = e / sp
        # on a seasonal baseline, the change of its residual (a jump the season makes
        # at that time is not a surprise)
        z2 = rs / sp3 if self.season else step / sp2
        if z2 > z:
            z = z2
        a = z / (z + s.knee)
        w = 1.0 / n if learning and 1.0 / n > s.spread else s.spread
        self._lerr += w * ((el if el < 10.0 * spl else 10.0 * spl) - self._lerr)
        self._serr += w * ((step if step < 10.0 * sp2 else 10.0 * sp2) - self._serr)
        self._rerr += w * ((rs if rs < 10.0 * sp3 else 10.0 * sp3) - self._rerr)
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
