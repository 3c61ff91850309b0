"""Streaming anomaly detectors per device and metric (sans-I/O).

Two scores per sample:

- **EWMA z-score**: exponentially weighted mean and variance (weight ``alpha``);
  ``z = |x - mean| / std``.  The baseline is updated with the sample clipped to
  ``mean ± z_on * std``, so one spike barely moves it while a level shift is
  absorbed within a few ``1/alpha`` samples (and the alert then clears).
- **MAD z-score** (robust): over the last ``mad_window`` samples,
  ``0.6745 * |x - median| / MAD``; a burst of outliers cannot inflate it the
  way it inflates a variance.

:class:`Detector` combines them by ``mode`` (``ewma``, ``mad``, ``both`` = both
must exceed the threshold, ``any`` = either), with a warm-up (no alert for the
first ``warmup`` samples) and hysteresis: an alert is *raised* when the score
reaches ``z_on`` and *cleared* only after ``clear_after`` consecutive samples
below ``z_off``, so a noisy sensor near the threshold does not flap.

Mode ``likelihood`` (the edge's default, ``EdgeSettings.iot_detector``) delegates to
:class:`edge_node.iot.likelihood.LikelihoodDetector` (settings in ``likelihood``): a
graded score in [0, 1] for every sample (:attr:`Detector.last_score`, with
:attr:`Detector.graded` true), alerts raised at 0.5 once per episode; ``z_on``,
``z_off``, ``alpha``, ``warmup`` and the MAD settings do not apply to it.  Its
verdicts carry that score (``graded = True``) and the level baseline.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from edge_node.iot.likelihood import LikelihoodDetector, LikelihoodSettings

__all__ = ["DetectorSettings", "Detector", "Verdict", "MODES"]

MODES = ("ewma", "mad", "both", "any", "likelihood")


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Tunables (defaults chosen on the generated set, see ``edge_node.iot.evaluate``)."""

    mode: str = "any"
    alpha: float = 0.02
    z_on: float = 6.0
    z_off: float = 3.0
    clear_after: int = 20
    warmup: int = 50
    mad_window: int = 101
    #: MAD is recomputed every this many samples (the median is always exact).
    mad_every: int = 8
    #: Settings of mode ``likelihood``.
    likelihood: LikelihoodSettings = field(default_factory=LikelihoodSettings)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"detector mode must be one of {', '.join(MODES)}")
        if not 0 < self.alpha < 1 or self.z_off > self.z_on or self.warmup < 2:
            raise ValueError("need 0 < alpha < 1, z_off <= z_on, warmup >= 2")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A state change: ``raised`` (an anomaly starts) or ``cleared``."""

    state: str
    value: float
    score: float
    baseline: float
    detector: str
    #: ``score`` is a graded score in [0, 1] (mode ``likelihood``), not a z-score.
    graded: bool = False


class Detector:
    """One series' detector.  :meth:`update` returns a :class:`Verdict` on a change."""

    __slots__ = (
        "_early",
        "_lk",
        "_lk_raised",
        "_mad",
        "_quiet",
        "_since_mad",
        "_sorted",
        "_win",
        "active",
        "mean",
        "n",
        "s",
        "var",
    )

    def __init__(self, settings: DetectorSettings) -> None:
        self.s = settings
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self._win: deque[float] = deque()
        self._sorted: list[float] = []
        self._mad = 0.0
        self._since_mad = 0
        self.active = False
        self._quiet = 0
        self._lk = LikelihoodDetector(settings.likelihood) if settings.mode == "likelihood" \
            else None
        #: Mode ``likelihood``: the z-scores decide until the likelihood has learned.
        self._early = self._lk is not None
        self._lk_raised = False

    @property
    def graded(self) -> bool:
        """True when :attr:`last_score` is a graded score for every sample."""
        return self._lk is not None

    @property
    def last_score(self) -> float:
        """The last sample's score in [0, 1] (mode ``likelihood``; 0.0 otherwise)."""
        return self._lk.last_score if self._lk is not None else 0.0

    def _median(self) -> float:
        a = self._sorted
        n = len(a)
        return a[n // 2] if n % 2 else 0.5 * (a[n // 2 - 1] + a[n // 2])

    def scores(self, x: float) -> tuple[float, float]:
        """(EWMA z, MAD z) of ``x`` against the current baseline (before update)."""
        std = math.sqrt(self.var)
        z = abs(x - self.mean) / std if std > 1e-12 else (0.0 if x == self.mean else math.inf)
        if self._sorted:
            mad = self._mad
            med = self._median()
            m = 0.6745 * abs(x - med) / mad if mad > 1e-12 else (0.0 if x == med else math.inf)
        else:
            m = 0.0
        return z, m

    def update(self, x: float, t: float | None = None) -> Verdict | None:
        """Score ``x`` (sampled at ``t``, seconds since the epoch, wall clock: optional,
        used by ``likelihood``'s seasonal baselines), then fold it into the baseline."""
        lk = self._lk
        if lk is not None:
            score = lk.update(x, t)
            if self._early:
                # The likelihood learns for its first samples: until then (and until an
                # alert raised meanwhile clears) the robust z-scores guard a new sensor.
                verdict = self._classic(x)
                if not self.active and lk.n > lk.s.warmup:
                    self._early = False  # hand over; drop the z-scores' state
                    self._win.clear()
                    self._sorted.clear()
                return verdict
            if lk.raised:
                self._lk_raised = True
                self.active = True
                return Verdict("raised", x, score, lk.level, "likelihood", True)
            if lk.cleared and self._lk_raised:
                self._lk_raised = False
                self.active = False
                return Verdict("cleared", x, score, lk.level, "likelihood", True)
            return None
        return self._classic(x)

    def _classic(self, x: float) -> Verdict | None:
        s = self.s
        verdict: Verdict | None = None
        if self.n >= s.warmup:
            z, m = self.scores(x)
            if s.mode == "ewma":
                score = z
            elif s.mode == "mad":
                score = m
            elif s.mode == "both":
                score = min(z, m)
            else:
                score = max(z, m)
            if not self.active and score >= s.z_on:
                self.active, self._quiet = True, 0
                verdict = Verdict("raised", x, score, self.mean, s.mode)
            elif self.active:
                if score < s.z_off:
                    self._quiet += 1
                    if self._quiet >= s.clear_after:
                        self.active = False
                        verdict = Verdict("cleared", x, score, self.mean, s.mode)
                else:
                    self._quiet = 0
        self._fold(x)
        return verdict

    def _fold(self, x: float) -> None:
        s = self.s
        self.n += 1
        if self.n == 1:
            self.mean = x
        else:
            std = math.sqrt(self.var)
            if self.n > s.warmup and std > 0:
                x_c = min(max(x, self.mean - s.z_on * std), self.mean + s.z_on * std)
            else:
                x_c = x
            d = x_c - self.mean
            a = s.alpha if self.n > s.warmup else max(s.alpha, 1.0 / self.n)
            self.mean += a * d
            self.var = (1 - a) * (self.var + a * d * d)
        win, srt = self._win, self._sorted
        win.append(x)
        bisect.insort(srt, x)
        if len(win) > s.mad_window:
            old = win.popleft()
            del srt[bisect.bisect_left(srt, old)]
        self._since_mad += 1
        if self._since_mad >= s.mad_every or self.n <= s.warmup:
            self._since_mad = 0
            med = self._median()
            devs = sorted(abs(v - med) for v in srt)
            k = len(devs)
            self._mad = devs[k // 2] if k % 2 else 0.5 * (devs[k // 2 - 1] + devs[k // 2])
