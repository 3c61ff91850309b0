"""The demand forecast: Holt-Winters on seasonal series, level shifts, replicas, settings."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from origin.forecast import (
    Forecaster,
    ForecastSettings,
    ForecastSettingsError,
    HoltWinters,
    replicas_for,
)
from origin.forecast_eval import evaluate, generate


def _seasonal(i: int, m: int = 24) -> float:
    return 1000 + 300 * math.sin(2 * math.pi * i / m) + 100 * math.cos(4 * math.pi * i / m)


def test_tracks_a_seasonal_series() -> None:
    m = 24
    hw = HoltWinters(m, alpha=0.2, beta=0.05, gamma=0.3, phi=0.98)
    for i in range(5 * m):
        hw.update(_seasonal(i, m))
    n = 5 * m
    for h in range(1, m + 1):
        want = _seasonal(n - 1 + h, m)
        assert abs(hw.forecast(h) - want) < 0.02 * 300, (h, hw.forecast(h), want)
    # A mean-only model would be off by up to the amplitude: the season is what helps.
    assert max(abs(hw.forecast(h) - 1000) for h in range(1, m + 1)) > 250


def test_reacts_to_a_level_shift() -> None:
    m = 24
    hw = HoltWinters(m, alpha=0.3, beta=0.05, gamma=0.2, phi=0.9)
    for i in range(3 * m):
        hw.update(_seasonal(i, m))
    errors = []
    for i in range(3 * m, 5 * m):
        errors.append(abs(hw.forecast(1) - (_seasonal(i, m) + 500)))
        hw.update(_seasonal(i, m) + 500)
    assert errors[0] > 450  # the shift is a surprise
    assert max(errors[6:m]) < 0.05 * 500  # caught up within 6 steps
    # The steps right after the shift leave some of it in their seasonal indices;
    # they fade season by season (additive Holt-Winters), the average error is small.
    assert sum(errors[m:]) / m < 0.05 * 500
    assert errors[2 * m - 1] < errors[m]


def test_first_season_is_holts_linear_trend() -> None:
    hw = HoltWinters(100, alpha=0.5, beta=0.5, gamma=0.3, phi=1.0)
    assert hw.forecast(3) == 0.0  # nothing seen yet
    for i in range(30):
        hw.update(10.0 + 2.0 * i)
    assert hw.season == []
    assert hw.forecast(5) == pytest.approx(10.0 + 2.0 * 34, rel=0.01)
    assert hw.forecast_max(5) == pytest.approx(hw.forecast(5))


def test_rejects_non_finite_and_bad_season() -> None:
    hw = HoltWinters(4, 0.3, 0.1, 0.3)
    with pytest.raises(ValueError):
        hw.update(float("nan"))
    with pytest.raises(ValueError):
        HoltWinters(1, 0.3, 0.1, 0.3)


def test_skip_advances_on_the_forecast() -> None:
    hw = HoltWinters(4, 0.5, 0.1, 0.3)
    hw.skip()  # nothing to go on: still empty
    assert hw.n == 0
    for v in (1.0, 2.0, 3.0, 4.0, 1.0):
        hw.update(v)
    before = hw.forecast(1)
    hw.skip()
    assert hw.n == 6
    assert math.isfinite(hw.forecast(1)) and before > 0


def test_state_round_trip_and_mismatch() -> None:
    a = HoltWinters(6, 0.3, 0.1, 0.3)
    for i in range(15):
        a.update(float(i % 6))
    b = HoltWinters(6, 0.3, 0.1, 0.3)
    assert b.load_state(json.loads(json.dumps(a.to_state())))
    assert [b.forecast(h) for h in range(1, 7)] == [a.forecast(h) for h in range(1, 7)]
    c = HoltWinters(7, 0.3, 0.1, 0.3)
    assert not c.load_state(a.to_state())
    assert not c.load_state({"m": 7, "season": "x"})
    assert c.n == 0


def test_replicas_for_capacity_headroom_and_bounds() -> None:
    s = ForecastSettings(capacity_connections=1000, capacity_messages=10_000, headroom=0.25,
                         min_replicas=2, max_replicas=10)
    assert replicas_for(0, 0, s) == 2
    assert replicas_for(4000, 0, s) == 5  # 4 * 1.25
    assert replicas_for(100, 40_000, s) == 5  # messages dominate
    assert replicas_for(10**9, 0, s) == 10


def test_recommendation_is_never_below_the_observed_load() -> None:
    s = ForecastSettings(step=60, season=60 * 24, horizon=300, capacity_connections=100,
                         min_replicas=1)
    f = Forecaster(s)
    rec = None
    for _i in range(24 * 3):
        rec = f.observe("eu", 100.0, 0.0)
    assert rec is not None and rec.replicas == rec.reactive_replicas == 2
    rec = f.observe("eu", 1000.0, 0.0)  # a surge the model has not seen
    assert rec.reactive_replicas == 12 and rec.replicas >= 12
    assert [r.region for r in f.latest()] == ["eu"]
    assert rec.as_dict()["recommended_replicas"] == rec.replicas


def test_forecaster_state_survives_a_restart() -> None:
    s = ForecastSettings(step=60, season=600)
    f = Forecaster(s)
    for i in range(25):
        f.observe("eu", 100.0 + i, 10.0)
        f.observe("us", 50.0, 5.0)
    g = Forecaster(s)
    assert g.load_state(json.loads(json.dumps(f.to_state()))) == 2
    assert g.observe("eu", 125.0, 10.0).forecast_connections == \
        f.observe("eu", 125.0, 10.0).forecast_connections
    h = Forecaster(ForecastSettings(step=60, season=1200))  # another season length
    assert h.load_state(f.to_state()) == 0 and h.regions == {}


def test_settings_from_env() -> None:
    s = ForecastSettings.from_env({"ORIGIN_FORECAST_STEP": "30",
                                   "ORIGIN_FORECAST_MAX_REPLICAS": "7",
                                   "ORIGIN_FORECAST_HEADROOM": ""})
    assert s.step == 30.0 and s.max_replicas == 7 and s.headroom == 0.2
    assert s.season_steps == 2880 and ForecastSettings().horizon_steps == 20
    with pytest.raises(ForecastSettingsError, match="ORIGIN_FORECAST_STEP"):
        ForecastSettings.from_env({"ORIGIN_FORECAST_STEP": "soon"})
    with pytest.raises(ForecastSettingsError, match="alpha"):
        ForecastSettings(alpha=1.5)
    with pytest.raises(ForecastSettingsError, match="step"):
        ForecastSettings(step=0)
    with pytest.raises(ForecastSettingsError):
        ForecastSettings(min_replicas=5, max_replicas=2)


def test_evaluation_gives_lead_over_reactive_scaling() -> None:
    curve = generate(days=4, sale_days=(2, 3))
    assert curve == generate(days=4, sale_days=(2, 3))  # fixed seed: same curve
    res = evaluate(curve, ForecastSettings())
    assert res["daily_lead"]["events"] > 5
    assert res["daily_lead"]["median_s"] >= 60  # at least the pod start-up time
    fc, re = res["scalers"]["forecast"], res["scalers"]["reactive"]
    assert fc["under_target_s"] < re["under_target_s"]
    assert fc["overloaded_s"] <= re["overloaded_s"]
    assert 0 <= res["extra_cost_pct"] < 10
    assert [s["day"] for s in res["sale_lead"]] == [2, 3]


def test_eval_cli_help_and_usage_errors(tmp_path) -> None:
    run = [sys.executable, "-m", "origin", "forecast-eval"]
    ok = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--pod-start" in ok.stdout
    bad = subprocess.run([*run, "--alpha", "2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "alpha" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([*run, "--days", "1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--days" in bad.stderr
    out = tmp_path / "f.json"
    done = subprocess.run([*run, "--days", "3", "--sale-days", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "lead median" in done.stdout
    assert json.loads(out.read_text())["settings"]["pod_start"] == 60.0
