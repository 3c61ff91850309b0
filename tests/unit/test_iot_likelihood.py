"""The anomaly-likelihood detector (``edge_node.iot.likelihood``) on generated series."""

from __future__ import annotations

import math
import random

from bench.scenarios.anomaly import deep_size
from edge_node.iot.detect import Detector, DetectorSettings
from edge_node.iot.likelihood import LikelihoodDetector, LikelihoodSettings

N = 3000
AT = 2000  # where the anomalies start
EARLY = 30  # an anomaly must raise an alert within this many samples


def _run(xs: list[float]) -> tuple[list[int], list[float]]:
    det = LikelihoodDetector()
    scores = [det.update(x) for x in xs]
    raised = []
    det2 = LikelihoodDetector()
    for i, x in enumerate(xs):
        det2.update(x)
        if det2.raised:
            raised.append(i)
    return raised, scores


def _noise(seed: int, sigma: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [10.0 + rng.gauss(0, sigma) for _ in range(N)]


def _daily(seed: int, period: int = 288, noise: float = 0.3) -> list[float]:
    rng = random.Random(seed)
    return [10 + 5 * math.sin(2 * math.pi * i / period) + rng.gauss(0, noise)
            for i in range(N)]


def test_flat_series_no_alert() -> None:
    assert _run([42.0] * N)[0] == []


def test_quantised_series_no_alert() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        xs = [float(round(3 + rng.gauss(0, 0.6))) for _ in range(N)]
        assert _run(xs)[0] == [], seed


def test_square_wave_no_alert() -> None:
    xs = [20.0 if (i // 144) % 2 else 80.0 for i in range(N)]
    assert _run(xs)[0] == []


def test_seasonal_without_anomaly_no_alert() -> None:
    for seed in range(5):
        assert _run(_daily(seed))[0] == [], seed


def test_noise_without_anomaly_no_alert() -> None:
    for seed in range(5):
        assert _run(_noise(seed))[0] == [], seed


def _one_early(raised: list[int]) -> None:
    assert raised, "no alert"
    assert AT <= raised[0] <= AT + EARLY, raised
    assert len([i for i in raised if i < AT + 300]) == 1, raised


def test_spike_raises_one_alert() -> None:
    for seed in range(5):
        xs = _noise(seed)
        xs[AT] += 8.0
        _one_early(_run(xs)[0])
        xs = _daily(seed)
        xs[AT] = 18.0  # above the seasonal band
        _one_early(_run(xs)[0])


def test_level_shift_raises_one_alert() -> None:
    for seed in range(5):
        xs = _noise(seed)
        xs[AT:] = [x + 5.0 for x in xs[AT:]]
        _one_early(_run(xs)[0])


def test_change_of_period_raises_one_alert() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        xs = [10 + 5 * math.sin(2 * math.pi * i / (288 if i < AT else 12))
              + rng.gauss(0, 0.3) for i in range(N)]
        _one_early(_run(xs)[0])


def test_change_of_variance_raises_one_alert() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        xs = [10 + rng.gauss(0, 1.0 if i < AT else 6.0) for i in range(N)]
        _one_early(_run(xs)[0])


def test_deterministic_and_scores_in_unit_interval() -> None:
    rng = random.Random(7)
    xs = [rng.lognormvariate(0, 1.5) * (1 + (i // 500) % 3) for i in range(N)]
    xs[1500] = 1e6
    xs[2500:2600] = [0.0] * 100
    a, sa = _run(xs)
    b, sb = _run(xs)
    assert (a, sa) == (b, sb)
    assert all(0.0 <= s <= 1.0 for s in sa)
    assert all(s == 0.0 for s in sa[: LikelihoodSettings().warmup + 1])


def test_memory_bounded() -> None:
    sizes = []
    for n in (500, 5000, 50000):
        det = LikelihoodDetector()
        rng = random.Random(1)
        for _ in range(n):
            det.update(rng.gauss(0, 1))
        sizes.append(deep_size(det))
    assert max(sizes) - min(sizes) <= 64 and max(sizes) < 4096, sizes  # int widths vary


def test_detector_mode_likelihood_verdicts() -> None:
    det = Detector(DetectorSettings(mode="likelihood"))
    assert det.graded
    xs = _noise(3)
    xs[AT:] = [x + 5.0 for x in xs[AT:]]
    verdicts = []
    for i, x in enumerate(xs):
        v = det.update(x)
        assert 0.0 <= det.last_score <= 1.0
        if v is not None:
            verdicts.append((i, v))
    assert verdicts[0][1].state == "raised" and verdicts[0][1].graded
    assert verdicts[0][1].detector == "likelihood" and 0.5 <= verdicts[0][1].score <= 1.0
    assert verdicts[1][1].state == "cleared"
    assert not Detector(DetectorSettings(mode="any")).graded


def test_a_new_sensor_is_guarded_by_the_z_scores_while_the_likelihood_learns() -> None:
    """The likelihood scores nothing in its first 200 samples; a spike at sample 100
    still raises (through the robust z-scores), clears, and then the likelihood
    decides alone."""
    import random

    from edge_node.iot.detect import Detector, DetectorSettings

    rng = random.Random(3)
    d = Detector(DetectorSettings(mode="likelihood"))
    states = []
    for i in range(600):
        x = 20.0 + rng.gauss(0, 0.5) + (10.0 if i == 100 else 0.0) + (15.0 if i == 500 else 0.0)
        v = d.update(x)
        if v is not None:
            states.append((i, v.state, v.graded))
    assert states[0] == (100, "raised", False)  # the z-scores' alert
    assert states[1][1] == "cleared" and not states[1][2]
    assert (500, "raised", True) in states  # the likelihood's (a new extreme), after


# --- seasonal baselines (timestamps) ---------------------------------------------------

T0 = 1_400_025_600.0  # a midnight (UTC); samples every 5 minutes: 288 a day
DAY = 288
WEEK = 7 * DAY


def _run_t(xs: list[float], settings: LikelihoodSettings | None = None) -> list[int]:
    det = LikelihoodDetector(settings)
    raised = []
    for i, x in enumerate(xs):
        det.update(x, T0 + 300.0 * i)
        if det.raised:
            raised.append(i)
    return raised


def _weekly(seed: int, weeks: int) -> list[float]:
    """Weekdays: a daily sine of amplitude 5 around 10; weekends: amplitude 1 around 6."""
    rng = random.Random(seed)
    return [(10 + 5 * math.sin(2 * math.pi * i / DAY) if (i // DAY) % 7 < 5
             else 6 + math.sin(2 * math.pi * i / DAY)) + rng.gauss(0, 0.3)
            for i in range(weeks * WEEK)]


def test_seasonal_without_anomaly_no_alert_with_timestamps() -> None:
    for seed in range(5):
        assert _run_t(_daily(seed)) == [], seed
        assert _run_t([42.0] * N) == []


def test_pattern_change_at_normal_amplitude_raises_one_alert() -> None:
    """For 6 hours the daily cycle runs upside down (from a zero crossing, so no jump):
    every value is inside the usual range, but wrong for its hour.  Without a seasonal
    baseline it was raised only when the cycle jumped back (~78 samples late)."""
    at = WEEK  # a week of history, a zero crossing of the sine
    for seed in range(5):
        xs = _daily(seed)
        xs[at:at + 72] = [20.0 - x for x in xs[at:at + 72]]
        raised = _run_t(xs)
        assert raised and at <= raised[0] <= at + EARLY, (seed, raised)
        assert len([i for i in raised if i < at + 300]) == 1, (seed, raised)


def test_weekly_pattern_learnt_no_alert_after_two_weeks() -> None:
    """Weekends unlike weekdays: the first weekend and the first Monday after it are
    new (an alert each at most); from the third week on the hour-of-week baseline
    knows them (the level alone raised an alert every Monday)."""
    for seed in range(3):
        raised = _run_t(_weekly(seed, 5))
        assert len(raised) <= 2 and all(i < 2 * WEEK for i in raised), (seed, raised)


def test_timestamps_optional_and_seasonal_off_is_the_level_alone() -> None:
    rng = random.Random(5)
    xs = [10 + 5 * math.sin(2 * math.pi * i / DAY) + rng.gauss(0, 0.3) for i in range(N)]
    xs[2500] += 9.0
    a = LikelihoodDetector()
    b = LikelihoodDetector(LikelihoodSettings(seasonal=False))
    c = LikelihoodDetector()
    for i, x in enumerate(xs):
        sa = a.update(x)
        assert b.update(x, T0 + 300.0 * i) == sa == c.update(x, None)
    assert a.season == 0 and a._prof is None  # no timestamps: no seasonal state


def test_memory_bounded_with_timestamps() -> None:
    sizes = []
    for n in (500, 5000, 50000):
        det = LikelihoodDetector()
        rng = random.Random(1)
        for i in range(n):
            det.update(10 + 5 * math.sin(2 * math.pi * i / DAY) + rng.gauss(0, 1),
                       T0 + 300.0 * i)
        sizes.append(deep_size(det))
    # 24 + 168 bins of (offset, count) doubles: 3 KB more than without timestamps
    assert max(sizes[1:]) - min(sizes[1:]) <= 64 and max(sizes) < 8192, sizes


def test_level_shift_inside_the_daily_range_raises_one_alert() -> None:
    """+3 on a daily sine of amplitude 5 (noise 0.3): inside the range the series
    swings through; against the level alone it was missed on every seed."""
    for seed in range(5):
        xs = _daily(seed)
        xs[AT:] = [x + 3.0 for x in xs[AT:]]
        _one_early(_run_t(xs))


def test_flat_quantised_and_square_wave_no_alert_with_timestamps() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        assert _run_t([float(round(3 + rng.gauss(0, 0.6))) for _ in range(N)]) == [], seed
    assert _run_t([20.0 if (i // 144) % 2 else 80.0 for i in range(N)]) == []
    assert _run_t([42.0] * N) == []
