"""The sans-I/O IoT cores: validation, windows and pieces, quantiles, detectors,
shadows and the pipeline's acknowledgement bookkeeping."""

from __future__ import annotations

import math
import random

import pytest

from edge_node.iot import (
    Detector,
    DetectorSettings,
    IotSettings,
    Pipeline,
    Quantiles,
    Shadow,
    StaleVersion,
    Validator,
    Windows,
)
from edge_node.iot.evaluate import evaluate, generate

NOW = 1_700_000_000_000


def test_validator_reasons() -> None:
    v = Validator({"temp": (-40.0, 85.0), "hum": (0.0, math.inf)})
    ok, errors = v.check((
        ("temp", 21, NOW), ("x", 1.0, NOW), ("temp", 85.5, NOW), ("hum", "wet", NOW),
        ("hum", math.inf, NOW), ("hum", True, NOW), ("hum", 1.0, 1.5), ("hum", 1, 0),
        ("hum", 1, NOW + 3_600_000), ["temp", 1, NOW], ("temp", 1), ("", 1, NOW),
        ("t" * 65, 1, NOW), ("hum", 1e9, NOW - 1000),
    ), NOW)
    assert ok == [("temp", 21.0, NOW), ("hum", 1e9, NOW - 1000)]
    assert [(i, r) for i, r, _ in errors] == [
        (1, "unknown_metric"), (2, "out_of_range"), (3, "bad_type"), (4, "bad_type"),
        (5, "bad_type"), (6, "bad_type"), (7, "too_old"), (8, "too_new"), (9, "bad_sample"),
        (10, "bad_sample"), (11, "bad_sample"), (12, "bad_sample")]
    assert "85.5 outside [-40, 85]" in errors[1][2]


def test_validator_without_metrics_claim_accepts_any_finite() -> None:
    ok, errors = Validator(None).check((("anything", -1e12, NOW), ("y", math.nan, NOW)), NOW)
    assert ok == [("anything", -1e12, NOW)] and errors[0][1] == "bad_type"


def test_quantiles_relative_accuracy() -> None:
    rng = random.Random(1)
    vals = [rng.lognormvariate(3, 1) for _ in range(20_000)] + [-5.0, 0.0]
    q = Quantiles(0.01)
    for v in vals:
        q.add(v)
    vals.sort()
    for p in (0.5, 0.9, 0.99):
        exact = vals[int(p * (len(vals) - 1))]
        assert abs(q.quantile(p) - exact) / exact < 0.03
    assert q.quantile(0.0) == pytest.approx(-5.0, rel=0.02)
    assert Quantiles().quantile(0.5) == 0.0


def test_windows_close_with_grace_and_pieces_per_batch() -> None:
    w = Windows("d", 1000, 500)
    assert w.add_batch(1, [("t", 1.0, NOW), ("t", 3.0, NOW + 999)]) == {NOW}
    assert w.add_batch(2, [("t", 5.0, NOW + 1000), ("t", 2.0, NOW + 10)]) == {NOW, NOW + 1000}
    assert w.close_due(NOW + 1499) == []  # grace: still open
    [(name, r)] = w.close_due(NOW + 1500)
    assert name == NOW and r.samples == 3 and not r.late
    assert r.pieces == {1: {"t": [2, 4.0, 1.0, 3.0]}, 2: {"t": [1, 2.0, 2.0, 2.0]}}
    s = r.metrics["t"]
    assert (s["count"], s["min"], s["max"], s["last"]) == (3, 1.0, 3.0, 3.0)
    assert s["mean"] == pytest.approx(2.0)
    # A sample for the closed window is not lost: it goes into a late rollup.
    assert w.add_batch(3, [("t", 9.0, NOW + 5)]) == {-NOW - 1}
    out = w.close_due(NOW + 1600)
    assert [(n, r.late, r.samples, r.metrics) for n, r in out] == [(-NOW - 1, True, 1, {})]
    [(name2, r2)] = w.close_due(NOW, force=True)
    assert name2 == NOW + 1000 and r2.pieces == {2: {"t": [1, 5.0, 5.0, 5.0]}}
    assert w.late_samples == 1 and w.next_deadline() is None


def test_rollup_body_shape() -> None:
    w = Windows("d", 1000, 0, raw=True)
    w.add_batch(7, [("t", 1.5, NOW)])
    [(_n, r)] = w.close_due(NOW, force=True)
    b = r.body()
    assert b["w"] == NOW and b["n"] == 1 and b["p"] == [[7, {"t": [1, 1.5, 1.5, 1.5]}]]
    assert b["raw"] == [["t", 1.5, NOW]] and "late" not in b


def _run(det: Detector, xs: list[float]) -> list[tuple[int, str]]:
    return [(i, v.state) for i, x in enumerate(xs) if (v := det.update(x)) is not None]


@pytest.mark.parametrize("mode", ["ewma", "mad", "both", "any"])
def test_detector_spike_and_clear(mode: str) -> None:
    rng = random.Random(3)
    xs = [10 + rng.gauss(0, 1) for _ in range(400)]
    xs[200] += 12
    events = _run(Detector(DetectorSettings(mode=mode)), xs)
    assert events[0] == (200, "raised")
    assert events[1][1] == "cleared" and events[1][0] >= 200 + 20
    assert len(events) == 2


def test_detector_warmup_suppresses_early_outliers() -> None:
    xs = [10.0, 10.5, 9.5] * 10 + [100.0] + [10.0] * 10
    assert _run(Detector(DetectorSettings(warmup=50)), xs) == []


def test_detector_hysteresis_no_flapping_on_a_noisy_level() -> None:
    """A level shift raises once; values hovering near the threshold afterwards do
    not raise and clear over and over."""
    rng = random.Random(5)
    xs = [rng.gauss(0, 1) for _ in range(300)] + [8 + rng.gauss(0, 1) for _ in range(300)]
    events = _run(Detector(DetectorSettings(mode="ewma")), xs)
    assert events[0] == (300, "raised")
    assert sum(1 for _, s in events if s == "raised") == 1


def test_detector_clean_noisy_signal_no_alert_fixed_seeds() -> None:
    for seed in range(20):
        s = generate(seed, n=3000, clean=True)
        assert _run(Detector(DetectorSettings()), s.values) == [], seed


def test_detector_settings_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        DetectorSettings(mode="magic")
    with pytest.raises(ValueError):
        DetectorSettings(z_on=2.0, z_off=3.0)


def test_evaluation_precision_recall() -> None:
    r = evaluate(DetectorSettings(), seeds=[1], series=5)
    assert r["anomalies"] == 20 and r["precision"] >= 0.9 and r["recall"] >= 0.9


def test_shadow_versions_and_delta() -> None:
    sh = Shadow()
    sh.report(1, {"led": "off", "fw": "1"})
    with pytest.raises(StaleVersion) as info:
        sh.report(1, {"led": "on"})
    assert info.value.current == 1
    assert sh.set_desired(3, {"led": "on", "fw": "1"})
    assert sh.delta() == {"led": "on"}
    assert not sh.set_desired(2, {"led": "blink"})  # older desired: ignored
    assert sh.set_desired(3, {"led": "on"})  # the same version again (re-push)
    sh.report(2, {"led": "on"})
    assert sh.delta() == {} and sh.reported == {"led": "on", "fw": "1"}


def test_pipeline_acks_after_windows_close_and_tickets_are_durable() -> None:
    p = Pipeline(IotSettings(window_ms=1000, grace_ms=0))
    v = p.validator((("t", 0.0, 100.0),))
    r1 = p.ingest("d", v, 11, (("t", 1.0, NOW), ("t", 2.0, NOW + 1500)), NOW)
    r2 = p.ingest("d", v, 12, (("t", 500.0, NOW),), NOW)  # all refused: ack at once
    assert r1.accepted == 2 and r2.accepted == 0 and r2.errors[0][1] == "out_of_range"
    assert p.ready_acks(0) == [("d", 12, 0, 1)]
    out = p.close_due(NOW + 1000)  # first window only
    assert [n for n, _ in out] == [NOW]
    p.submitted(out[0][0], out[0][1], ticket=5)
    assert p.ready_acks(100) == []  # batch 11 is also in the still-open window
    [(n2, r)] = p.close_due(NOW + 2000)
    p.submitted(n2, r, ticket=9)
    assert p.ready_acks(8) == []  # not durable yet
    assert p.ready_acks(9) == [("d", 11, 2, 0)]
    # A re-sent batch is a duplicate: not folded again, acknowledged again.
    dup = p.ingest("d", v, 11, (("t", 1.0, NOW),), NOW)
    assert dup.duplicate and p.duplicates == 1
    assert p.ready_acks(9) == [("d", 11, 2, 0)]
    assert p.accepted == 2 and p.rejected["out_of_range"] == 1


def test_pipeline_alerts_carry_sample_time() -> None:
    p = Pipeline(IotSettings())
    v = p.validator(None)
    rng = random.Random(9)
    samples = tuple(("t", 5 + rng.gauss(0, 0.1), NOW + i) for i in range(200))
    samples = (*samples, ("t", 50.0, NOW + 200))
    res = p.ingest("d", v, 1, samples, NOW)
    assert [(a.state, a.ts_ms, a.metric) for a in res.alerts] == [("raised", NOW + 200, "t")]
    body = res.alerts[0].body()
    assert body["device"] == "d" and body["value"] == 50.0 and body["score"] > 6
