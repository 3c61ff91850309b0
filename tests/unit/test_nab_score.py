"""The NAB scorer (``bench.nab``) on hand-made tiny series with known answers."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bench import nab
from bench.errors import BenchError
from bench.scenarios.anomaly import sample_score
from edge_node.iot.detect import Verdict

STD = nab.PROFILES["standard"]
LOW_FP = nab.PROFILES["reward_low_FP"]
LOW_FN = nab.PROFILES["reward_low_FN"]


def _hits(n: int, at: list[int], value: float = 1.0) -> list[float]:
    out = [0.0] * n
    for i in at:
        out[i] = value
    return out


def _raw(n: int, windows: list[tuple[int, int]], at: list[int], p: nab.Profile = STD) -> float:
    return nab.score(nab.truth(n, windows), _hits(n, at), 0.5).raw(p)


def test_profiles_and_sigmoid_are_nab_s() -> None:
    assert nab.PROFILES == {"standard": (1.0, 0.11, 1.0), "reward_low_FP": (1.0, 0.22, 1.0),
                            "reward_low_FN": (1.0, 0.11, 2.0)}
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert nab.scaled_sigmoid(3.0) == -1.0 and nab.scaled_sigmoid(50.0) == -1.0


def test_learning_period_is_15_percent_at_most_750() -> None:
    assert nab.learning_period(1000) == 150
    assert nab.learning_period(4032) == 604
    assert nab.learning_period(5000) == 750
    assert nab.learning_period(15902) == 750
    assert nab.learning_period(6) == 0


def test_detection_at_the_left_edge_earns_a_tp_at_the_right_edge_about_zero() -> None:
    n, win = 2000, [(1000, 1399)]  # learning period 300, a window of 400 samples
    assert _raw(n, win, [1000]) == pytest.approx(1.0)  # A_TP * S(-1) / S(-1)
    right = _raw(n, win, [1399])
    assert 0 < right < 0.01  # NAB's p at the right edge is -1/width: S ~ 0.006
    middle = _raw(n, win, [1200])
    assert right < middle < 1.0
    assert _raw(n, win, [1000], LOW_FN) == pytest.approx(1.0)  # A_TP is 1 in every profile


def test_only_the_first_detection_of_a_window_counts() -> None:
    n, win = 2000, [(1000, 1399)]
    t = nab.score(nab.truth(n, win), _hits(n, [1300, 1001, 1200]), 0.5)
    assert t.detected == 1 and t.in_windows == 3 and t.false_positives == 0
    assert t.raw(STD) == pytest.approx(_raw(n, win, [1001]))
    assert t.raw(STD) > _raw(n, win, [1200])


def test_a_missed_window_costs_a_fn() -> None:
    n, win = 2000, [(1000, 1099), (1500, 1599)]
    assert _raw(n, win, []) == -2.0
    assert _raw(n, win, [], LOW_FN) == -4.0
    assert _raw(n, win, [1000]) == pytest.approx(1.0 - 1.0)


def test_false_positive_weight_grows_with_the_distance_past_the_window() -> None:
    n, win = 4000, [(1000, 1099)]  # width 100: p = (i - 1099) / 99
    fp = [_raw(n, win, [1000, i]) - 1.0 for i in (1100, 1149, 1198, 1297, 1396, 3000)]
    assert fp[0] == pytest.approx(0.11 * nab.scaled_sigmoid(1 / 99))  # just after: ~0
    assert fp[0] > -0.01
    assert all(a > b for a, b in itertools.pairwise(fp[:4]))  # ever more costly ...
    assert fp[2] == pytest.approx(-0.11 * 0.98661, abs=1e-5)  # one window length past
    assert fp[4] == fp[5] == pytest.approx(-0.11)  # ... to -A_FP (p >= 3)
    low = _raw(n, win, [1000, 1198], LOW_FP) - 1.0
    assert low == pytest.approx(2 * fp[2])


def test_a_false_positive_before_any_window_costs_a_fp() -> None:
    n, win = 2000, [(1500, 1599)]
    assert _raw(n, win, [400, 1500]) == pytest.approx(1.0 - 0.11)
    assert _raw(n, [], [400, 401]) == pytest.approx(-0.22)
    assert _raw(n, [], [400], LOW_FP) == pytest.approx(-0.22)


def test_learning_period_is_ignored() -> None:
    n, win = 1000, [(500, 599)]  # learning period 150
    assert _raw(n, win, [0, 10, 149]) == -1.0  # nothing counted: the window missed
    assert _raw(n, win, [150]) == pytest.approx(-1.0 - 0.11)  # the first scored sample
    t = nab.score(nab.truth(n, win), _hits(n, [3, 149]), 0.5)
    assert t.false_positives == 0 and t.in_windows == 0


def test_null_detector_scores_0_and_perfect_100() -> None:
    specs = [(2000, [(1000, 1099)]), (1500, [(400, 449), (900, 999)]), (800, [])]
    truths = [nab.truth(n, w) for n, w in specs]
    null = nab.total(nab.score(t, [0.0] * t.n, 0.5) for t in truths)
    perfect = nab.total(nab.score(t, _hits(t.n, [a for a, _b in w]), 0.5)
                        for t, (_n, w) in zip(truths, specs, strict=True))
    some = nab.total(nab.score(t, _hits(t.n, [b for _a, b in w]), 0.5)
                     for t, (_n, w) in zip(truths, specs, strict=True))
    for p in nab.PROFILES.values():
        assert null.normalised(p) == pytest.approx(0.0)
        assert perfect.normalised(p) == pytest.approx(100.0)
        assert 0 < (some.normalised(p) or 0) < 100
    # at the right edges: no FN cost, ~0 TP credit -> about half-way under standard
    assert 50 < (some.normalised(STD) or 0) < 55
    assert null.windows == perfect.windows == 3
    assert nab.score(truths[2], [0.0] * 800, 0.5).normalised(STD) is None  # no window


def test_threshold_optimisation_picks_the_best_threshold_per_profile() -> None:
    n, win = 2000, [(1000, 1399)]
    scores = [0.0] * n
    scores[1000] = 0.5  # the window at its left edge, at 0.5
    for i in range(400, 410):  # 10 false positives before the window, at 0.8
        scores[i] = 0.8
    points = nab.sweep([nab.truth(n, win)], [scores])
    assert [t for t, _ in points] == [nab.NO_DETECTION, 0.8, 0.5, 0.0]
    # standard: 0.5 -> 1 - 10 x 0.11 = -0.1 beats nothing (-1) and 0.8 (-2.1)
    thr, best = nab.optimise(points, STD)
    assert thr == 0.5 and best.raw(STD) == pytest.approx(-0.1)
    # low FP: 1 - 10 x 0.22 = -1.2 is worse than detecting nothing (-1)
    thr, best = nab.optimise(points, LOW_FP)
    assert thr == nab.NO_DETECTION and best.normalised(LOW_FP) == 0.0
    assert nab.optimise(points, LOW_FN)[0] == 0.5


def test_threshold_ties_go_to_the_highest_threshold() -> None:
    n = 1000
    scores = [0.0] * n
    scores[500] = 0.9  # the window's left edge
    scores[520] = 0.6  # later in the same window: adds nothing, so 0.9 and 0.6 tie
    points = nab.sweep([nab.truth(n, [(500, 549)])], [scores])
    assert [t for t, _ in points] == [nab.NO_DETECTION, 0.9, 0.6, 0.0]
    assert points[1][1].raw(STD) == points[2][1].raw(STD) == pytest.approx(1.0)
    assert nab.optimise(points, STD)[0] == 0.9


def test_sweep_agrees_with_scoring_at_each_threshold() -> None:
    rng = random.Random(7)
    specs = [(1200, [(300, 349), (700, 799)]), (900, [(600, 640)]), (700, [])]
    truths = [nab.truth(n, w) for n, w in specs]
    scores = [[round(rng.random() ** 6, 2) for _ in range(t.n)] for t in truths]
    points = nab.sweep(truths, scores)
    assert len(points) > 50
    thresholds = [t for t, _ in points]
    assert thresholds == sorted(thresholds, reverse=True)
    for thr, tally in points:
        direct = nab.total(nab.score(t, s, thr) for t, s in zip(truths, scores, strict=True))
        assert direct.detected == tally.detected
        assert direct.false_positives == tally.false_positives
        for p in nab.PROFILES.values():
            assert direct.raw(p) == pytest.approx(tally.raw(p), abs=1e-9)
    for p in nab.PROFILES.values():  # optimise = the best of a brute force
        best = max(tally.raw(p) for _t, tally in points)
        assert nab.optimise(points, p)[1].raw(p) == best


def test_scores_outside_0_1_are_refused() -> None:
    t = nab.truth(100, [])
    with pytest.raises(ValueError):
        nab.score(t, [1.5] * 100, 0.5)
    with pytest.raises(ValueError):
        nab.sweep([t], [[math.nan] * 100])


def test_windows_match_timestamps_as_nab_does() -> None:
    t0 = datetime(2014, 3, 9)
    ts = [t0 + timedelta(minutes=5 * i) for i in range(10)]
    ts.insert(6, ts[5])  # a repeated timestamp (index 5 and 6)
    assert nab.window_indices(ts, ts[2], ts[5]) == (2, 5)  # the first occurrence
    assert nab.window_indices(ts, ts[6], ts[8]) == (5, 8)
    half = timedelta(minutes=2)
    assert nab.window_indices(ts, ts[2] - half, ts[4] + half) == (2, 4)  # between samples
    assert nab.window_indices(ts, ts[3] + half, ts[3] + 2 * half) is None


def test_binary_adapter_and_graded_verdicts() -> None:
    assert sample_score(None) == 0.0
    assert sample_score(Verdict("raised", 9.0, 7.5, 1.0, "any")) == 1.0
    assert sample_score(Verdict("cleared", 1.0, 0.5, 1.0, "any")) == 0.0

    class Graded:
        graded = True
        state = "score"
        score = 0.37

    assert sample_score(Graded()) == 0.37


def test_load_reads_a_nab_directory_and_refuses_bad_ones(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no such directory"):
        nab.load(tmp_path / "missing")
    with pytest.raises(BenchError, match="holds no series"):
        nab.load(tmp_path)
    cat = tmp_path / "data" / "cat"
    cat.mkdir(parents=True)
    rows = [f"2020-01-01 00:{m:02d}:00,{m}" for m in range(30)]
    (cat / "a.csv").write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    with pytest.raises(BenchError, match=r"no windows\.json"):
        nab.load(tmp_path)
    (tmp_path / "windows.json").write_text(json.dumps(
        {"cat/a.csv": [["2020-01-01 00:10:00.000000", "2020-01-01 00:14:00.000000"]],
         "cat/gone.csv": []}))
    corpus, warnings = nab.load(tmp_path)
    assert [s.name for s in corpus] == ["cat/a.csv"] and corpus[0].category == "cat"
    assert corpus[0].windows == ((10, 14),) and corpus[0].values[3] == 3.0
    assert len(warnings) == 1 and "cat/gone.csv" in warnings[0]
    (cat / "b.csv").write_text("timestamp,value\n2020-01-01 00:00:00,x\n")
    with pytest.raises(BenchError, match=r"cat/b\.csv"):
        nab.load(tmp_path)
