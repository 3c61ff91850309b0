"""Settings behind the edge->origin lag work: the uplink's limits are checked, the GC
tuning does what its docstring says, lag buckets and quantiles agree."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from edge_node.runtime.gc_tuning import GEN0_THRESHOLD, tune_gc
from edge_node.uplink import UplinkSettings
from origin.effects import bucket_ms, lag_bucket
from origin.view import lag_quantiles


@pytest.mark.parametrize("field", ["send_max", "batch_max", "shards", "max_memory_entries"])
def test_uplink_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        UplinkSettings(redis_url="redis://x", edge_id="e", **{field: 0})


def test_send_max_default_is_many_batches() -> None:
    s = UplinkSettings(redis_url="redis://x", edge_id="e")
    assert s.send_max >= 10 * s.batch_max * s.shards


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_start_up_objects_and_raises_gen0() -> None:
    gc.unfreeze()
    _, g1, g2 = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GEN0_THRESHOLD, g1, g2)
    tune_gc(5000)
    assert gc.get_threshold()[0] == 5000


def test_lag_quantiles_include_p99_9_as_bucket_upper_bounds() -> None:
    buckets = {lag_bucket(2.0): 980, lag_bucket(40.0): 18, lag_bucket(900.0): 2}
    q = lag_quantiles(buckets)
    assert set(q) == {"p50", "p90", "p99", "p99.9"}
    assert q["p50"] == q["p90"] == round(bucket_ms(lag_bucket(2.0)), 3) >= 2.0
    assert 40.0 <= q["p99"] <= 40.0 * 1.1 + 1
    assert 900.0 <= q["p99.9"] <= 900.0 * 1.1 + 1
    assert lag_quantiles({}) == dict.fromkeys(q, 0.0)
