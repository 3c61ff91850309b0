"""Demand forecast (sans-I/O): Holt-Winters smoothing and a recommended replica count.

The origin samples the edge registry once per ``step`` seconds and feeds, per region,
the number of connected clients and the rate of delivered messages into a
:class:`Forecaster`.  The forecaster keeps one :class:`HoltWinters` model per series
(additive seasonality of ``season`` seconds, damped trend) and answers, after each
sample, with a :class:`Recommendation`: the forecast peak over the next ``horizon``
seconds and the replica count that peak needs at the per-replica capacity plus
``headroom``.  The recommendation never falls below what the load observed *now*
needs, so it is at least what a reactive autoscaler would ask for; its point is to
ask *earlier*, so new edges are ready when the surge arrives.

No clocks, no I/O: the caller passes the samples in order (one per step) and owns
the timer (:mod:`origin.forecast_service` runs it in the origin API process;
:mod:`origin.forecast_eval` runs it on a generated load curve).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["ForecastSettings", "HoltWinters", "Forecaster", "Recommendation",
           "replicas_for", "ForecastSettingsError"]


class ForecastSettingsError(ValueError):
    """A forecast setting is out of range (the message names it)."""


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """Forecast and scaling settings (env ``ORIGIN_FORECAST_<NAME>``, see docs/deployment.md)."""

    #: Seconds between samples (one model update per step).
    step: float = 15.0
    #: Season length in seconds (a day: the daily pattern repeats).
    season: float = 86_400.0
    #: How far ahead the recommendation looks, seconds: at least the time a new edge
    #: needs to become ready (scheduling + image pull + start) plus the HPA's delay.
    horizon: float = 300.0
    #: Smoothing factors: level, trend, season; ``phi`` damps the trend (1 = none).
    #: Defaults chosen on ``python -m origin.forecast_eval`` (see docs/deployment.md): a slow
    #: level and a fast season learn a surge that recurs daily by its second repeat.
    alpha: float = 0.1
    beta: float = 0.1
    gamma: float = 0.7
    phi: float = 0.98
    #: What one edge replica carries at its target load (from the benchmarks).
    capacity_connections: float = 5_000.0
    capacity_messages: float = 50_000.0
    #: Extra capacity on top of the forecast peak (0.2 = 20 %).
    headroom: float = 0.2
    min_replicas: int = 2
    max_replicas: int = 100

    def __post_init__(self) -> None:
        positive = ("step", "season", "capacity_connections", "capacity_messages")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ForecastSettingsError(f"forecast {name} must be > 0")
        for name in ("alpha", "beta", "gamma", "phi"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ForecastSettingsError(f"forecast {name} must be within 0..1, not {v}")
        if self.horizon < 0 or self.headroom < 0:
            raise ForecastSettingsError("forecast horizon and headroom must be >= 0")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ForecastSettingsError("need 1 <= min_replicas <= max_replicas")

    @property
    def season_steps(self) -> int:
        """Samples per season (at least 2)."""
        return max(2, round(self.season / self.step))

    @property
    def horizon_steps(self) -> int:
        """Samples the recommendation looks ahead (at least 1)."""
        return max(1, math.ceil(self.horizon / self.step))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ForecastSettings:
        """Settings from ``ORIGIN_FORECAST_STEP``, ``..._SEASON``, ``..._HORIZON``,
        ``..._CAPACITY_CONNECTIONS`` and so on (one per field, upper case); unset
        variables keep the defaults.  Raises :class:`ForecastSettingsError`."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"ORIGIN_FORECAST_{f.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            try:
                kw[f.name] = int(raw) if f.type == "int" else float(raw)
            except ValueError:
                raise ForecastSettingsError(
                    f"ORIGIN_FORECAST_{f.name.upper()} must be a number, not {raw!r}") from None
        return replace(cls(), **kw)


class HoltWinters:
    """Additive Holt-Winters (triple exponential smoothing) with a damped trend.

    Feed one value per step with :meth:`update`; :meth:`forecast` ``(h)`` is the
    value expected ``h`` steps after the last update.  During the first season
    the model is Holt's linear method (level + trend); once a full season has been
    seen the seasonal indices start from that season's deviations from its mean
    and are smoothed with ``gamma`` from then on.
    """

    def __init__(self, season_steps: int, alpha: float, beta: float, gamma: float,
                 phi: float = 1.0) -> None:
        if season_steps < 2:
            raise ValueError("season_steps must be >= 2")
        self.m = season_steps
        self.alpha, self.beta, self.gamma, self.phi = alpha, beta, gamma, phi
        self.level = 0.0
        self.trend = 0.0
        self.season: list[float] = []  # empty until the first season is complete
        self._first: list[float] = []
        self.n = 0  # updates so far

    def update(self, y: float) -> None:
        """Take the next observation."""
        if not math.isfinite(y):
            raise ValueError(f"observation must be finite, not {y!r}")
        if self.n == 0:
            self.level, self.trend = y, 0.0
        else:
            s = self.season[self.n % self.m] if self.season else 0.0
            prev = self.level
            self.level = (self.alpha * (y - s)
                          + (1 - self.alpha) * (prev + self.phi * self.trend))
            self.trend = (self.beta * (self.level - prev)
                          + (1 - self.beta) * self.phi * self.trend)
            if self.season:
                i = self.n % self.m
                self.season[i] = self.gamma * (y - self.level) + (1 - self.gamma) * s
        if not self.season:
            self._first.append(y)
            if len(self._first) == self.m:
                mean = sum(self._first) / self.m
                # Index i holds the deviation of step i (mod m) of the season.
                self.season = [v - mean for v in self._first]
                # Within one season the trend was mostly the seasonal swing:
                # restart level and trend from the season's mean.
                self.level, self.trend = mean, 0.0
                self._first = []
        self.n += 1

    def skip(self) -> None:
        """A missing sample: advance one step on the model's own forecast."""
        if self.n:
            self.update(self.forecast(1))

    def forecast(self, h: int = 1) -> float:
        """Expected value ``h >= 1`` steps after the last update (0 before any)."""
        if self.n == 0:
            return 0.0
        h = max(1, h)
        damp = float(h) if self.phi == 1.0 else self.phi * (1 - self.phi ** h) / (1 - self.phi)
        s = self.season[(self.n - 1 + h) % self.m] if self.season else 0.0
        return self.level + damp * self.trend + s

    def forecast_max(self, horizon: int) -> float:
        """Largest forecast over steps ``1..horizon``."""
        return max(self.forecast(h) for h in range(1, max(1, horizon) + 1))

    def to_state(self) -> dict[str, Any]:
        """A JSON-able snapshot (see :meth:`from_state`)."""
        return {"m": self.m, "level": self.level, "trend": self.trend, "season": self.season,
                "first": self._first, "n": self.n}

    def load_state(self, st: Mapping[str, Any]) -> bool:
        """Restore a snapshot of a model with the same season length; False (and
        nothing changed) if it does not fit."""
        try:
            if int(st["m"]) != self.m:
                return False
            season = [float(v) for v in st["season"]]
            first = [float(v) for v in st["first"]]
            level, trend, n = float(st["level"]), float(st["trend"]), int(st["n"])
        except (KeyError, TypeError, ValueError):
            return False
        if (season and len(season) != self.m) or len(first) >= self.m:
            return False
        self.level, self.trend, self.season, self._first, self.n = level, trend, season, first, n
        return True


def replicas_for(connections: float, messages: float, s: ForecastSettings) -> int:
    """Replicas that carry ``connections`` and ``messages``/s with ``headroom``,
    within ``min_replicas..max_replicas``."""
    need = max(connections / s.capacity_connections, messages / s.capacity_messages)
    n = math.ceil(need * (1 + s.headroom) - 1e-9)
    return min(s.max_replicas, max(s.min_replicas, n))


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One region's answer after a sample."""

    region: str
    connections: float          # observed now
    messages: float             # observed now (messages/s)
    forecast_connections: float  # forecast peak over the horizon
    forecast_messages: float
    replicas: int               # recommended (>= reactive)
    reactive_replicas: int      # what the load observed now needs

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the API's ``/v1/forecast``)."""
        return {"region": self.region, "connections": self.connections,
                "messages_per_s": round(self.messages, 3),
                "forecast_connections": round(self.forecast_connections, 3),
                "forecast_messages_per_s": round(self.forecast_messages, 3),
                "recommended_replicas": self.replicas,
                "reactive_replicas": self.reactive_replicas}


@dataclass
class _Series:
    conn: HoltWinters
    msgs: HoltWinters
    last: Recommendation | None = None


@dataclass
class Forecaster:
    """Per-region models.  Call :meth:`observe` once per step for every region."""

    settings: ForecastSettings = field(default_factory=ForecastSettings)
    regions: dict[str, _Series] = field(default_factory=dict)

    def _series(self, region: str) -> _Series:
        sr = self.regions.get(region)
        if sr is None:
            s = self.settings
            sr = _Series(HoltWinters(s.season_steps, s.alpha, s.beta, s.gamma, s.phi),
                         HoltWinters(s.season_steps, s.alpha, s.beta, s.gamma, s.phi))
            self.regions[region] = sr
        return sr

    def observe(self, region: str, connections: float, messages: float) -> Recommendation:
        """Feed one step's load of ``region``; return its recommendation."""
        s = self.settings
        sr = self._series(region)
        connections, messages = max(0.0, connections), max(0.0, messages)
        sr.conn.update(connections)
        sr.msgs.update(messages)
        h = s.horizon_steps
        fc = max(0.0, sr.conn.forecast_max(h))
        fm = max(0.0, sr.msgs.forecast_max(h))
        reactive = replicas_for(connections, messages, s)
        rec = Recommendation(region, connections, messages, fc, fm,
                             max(reactive, replicas_for(fc, fm, s)), reactive)
        sr.last = rec
        return rec

    def latest(self) -> list[Recommendation]:
        """The last recommendation of every region, by region name."""
        return [sr.last for _, sr in sorted(self.regions.items()) if sr.last is not None]

    def to_state(self) -> dict[str, Any]:
        """JSON-able models of every region (persisted by the service)."""
        return {r: {"conn": sr.conn.to_state(), "msgs": sr.msgs.to_state()}
                for r, sr in self.regions.items()}

    def load_state(self, st: Mapping[str, Any]) -> int:
        """Restore models saved by :meth:`to_state`; returns how many regions fit."""
        n = 0
        for region, models in st.items():
            if not isinstance(models, Mapping):
                continue
            sr = self._series(str(region))
            if sr.conn.load_state(models.get("conn", {})) \
                    and sr.msgs.load_state(models.get("msgs", {})):
                n += 1
            else:
                del self.regions[str(region)]
        return n
