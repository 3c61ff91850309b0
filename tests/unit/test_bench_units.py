"""Unit tests of the bench harness's pure parts and of the SDK's dedupe window.

(The WebSocket framing the lean client uses is the SDK's: tests/unit/test_ws_frames.py.)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.cluster_load import PAYLOAD, ClientSpec, ClusterPlan
from bench.scenarios.cluster_figures import analyse, summary_us
from bench.sweep import bisect, next_rate, passes
from client_sdk.dedupe import RecentKeys

# --- RecentKeys ----------------------------------------------------------------------


class _Model:
    """The reference behaviour: an OrderedDict that forgets the oldest key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.d: OrderedDict[int, int] = OrderedDict()

    def add(self, key: int, value: int) -> None:
        if key in self.d:
            self.d[key] = value
            return
        self.d[key] = value
        if len(self.d) > self.size:
            self.d.popitem(last=False)


@given(st.integers(1, 8), st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=200))
def test_recent_keys_matches_ordered_dict_model(size: int, ops: list[tuple[int, int]]) -> None:
    keys: RecentKeys[int] = RecentKeys(size)
    model = _Model(size)
    for k, v in ops:
        keys.add(k, v)
        model.add(k, v)
        assert len(keys) == len(model.d) <= size
        for probe in range(21):
            assert (probe in keys) == (probe in model.d)
            assert keys.get(probe) == model.d.get(probe)


def test_recent_keys_forgets_the_oldest_and_readd_keeps_place() -> None:
    keys: RecentKeys[str] = RecentKeys(2)
    keys.add(1, "a")
    keys.add(2, "b")
    keys.add(1, "a2")  # already present: updated in place, 1 is still the oldest
    keys.add(3, "c")
    assert 1 not in keys and keys.get(2) == "b" and keys.get(3) == "c"
    with pytest.raises(ValueError):
        RecentKeys(0)


# --- sweep -----------------------------------------------------------------------------


def test_sweep_grows_until_failure_then_bisects() -> None:
    assert next_rate([(100, True)], 2.0) == 200
    assert next_rate([(100, True), (200, False)], 2.0) is None
    assert bisect([(100, True), (200, False)]) == 150
    assert bisect([(100, True), (200, False), (150, True)]) == 175
    assert bisect([(100, False)]) == 50
    assert bisect([(100, True), (200, True)]) is None


def _run(p99: float, lost: int = 0) -> dict[str, Any]:
    return {"latency_us": {"p99": p99},
            "messages": {"lost": lost, "duplicates": 0, "publish_errors": 0,
                         "disconnected_clients": 0}}


def test_sweep_pass_rule() -> None:
    assert passes(_run(9_000), 10)
    assert not passes(_run(11_000), 10)
    assert not passes(_run(1_000, lost=1), 10)


# --- cluster figures ----------------------------------------------------------------


def _plan(reliable: bool = True) -> ClusterPlan:
    clients = (
        ClientSpec(0, 0, "r0", True),
        ClientSpec(1, 1, "r0", True),
        ClientSpec(2, 1, "r0", False, publisher=0, kind="service"),
    )
    return ClusterPlan(urls=("ws://a", "ws://b"), secret=b"s", clients=clients, publishers=1,
                       hz=10.0, duration=1.0, warmup=0.0, drain=0.0, payload_size=PAYLOAD.size,
                       reliable=reliable)


def _result(plan: ClusterPlan, t0: int, got: dict[int, list[int]], fault_served: int = 0
            ) -> dict[str, Any]:
    sched = plan.schedule(t0)
    c, rv, lat = [], [], []
    seen = {}
    for idx, seqs in got.items():
        bm = bytearray(sched.max_seq())
        for s in seqs:
            bm[s] = 1
            c.append(idx)
            rv.append(sched.intended_ns(s) + 1_000_000)  # 1 ms after the intended time
            lat.append(1_000_000)
        seen[idx] = {0: bytes(bm)}
    n = sched.total
    return {
        "clients": [{"idx": i, "start_edge": plan.clients[i].home, "served_ns": fault_served,
                     "dups": 0, "invalid": 0, "unique": len(got.get(i, [])), "reconnects": 1,
                     "handoffs": 0, "recovered_false": 0, "reasons": [], "connected": True}
                    for i in range(3)],
        "seen": seen, "sent": {0: b"\x01" * n}, "acked": {0: b"\x01" * n},
        "publish_errors": 0, "publish_last_error": "",
        "d_client": np.asarray(c, dtype=np.uint32).tobytes(),
        "d_recv": np.asarray(rv, dtype=np.int64).tobytes(),
        "d_lat": np.asarray(lat, dtype=np.int64).tobytes(),
        "receipts": len(c), "cpu_s": 0.0, "cpu_wall_s": 1.0,
    }


def test_analyse_counts_loss_per_room_and_latency() -> None:
    plan = _plan()
    t0 = 10**12
    res = _result(plan, t0, {0: list(range(10)), 1: [0, 1, 2, 3, 4, 6, 7, 8, 9]})
    out = analyse(plan, [res], t0, 0, set())
    assert out["messages"]["expected"] == 20
    assert out["messages"]["lost"] == 1
    assert out["messages"]["rooms_with_loss"] == 1
    assert out["throughput"]["offered_deliveries_per_s"] == 20
    assert out["latency_us"]["p99"] == 1000.0
    assert out["rooms"]["with_deliveries"] == 1
    assert sum(out["timeline"]["delivered_per_s"]) > 0
    assert "failover" not in out


def test_analyse_failover_gap_and_resume() -> None:
    plan = _plan()
    t0 = 10**12
    fault = t0 + 300_000_000
    served = t0 + 700_000_000
    # Client 0 (affected) misses nothing but gets seqs 3..6 only after it resumed.
    res = _result(plan, t0, {0: [0, 1, 2, 7, 8, 9], 1: list(range(10))}, served)
    out = analyse(plan, [res], t0, fault, {0})
    fo = out["failover"]
    assert fo["affected_clients"] == 1 and fo["served_again"] == 1
    assert fo["resume_s"]["max"] == pytest.approx(0.4)
    assert fo["gap_ms"]["max"] == pytest.approx(500.0)  # from seq 2 (0.2 s) to seq 7 (0.7 s)
    assert fo["resumes_per_s_peak"] == 1
    assert out["messages"]["lost"] == 4


def test_analyse_reports_the_steady_gap_before_the_fault() -> None:
    """The longest gap between arrivals in the 2 s before the fault's window is
    reported next to the fault's gaps (the floor they compare with)."""
    plan = replace(_plan(), duration=4.0)  # 40 messages, 100 ms apart
    t0 = 10**12
    fault = t0 + 3_000_000_000  # steady window: 0.5 s .. 2.5 s
    every = list(range(40))
    res = _result(plan, t0, {0: [s for s in every if s != 10], 1: every}, fault + 10**8)
    fo = analyse(plan, [res], t0, fault, {0})["failover"]
    assert fo["gap_ms_before_fault_max"] == pytest.approx(200.0)  # seq 9 -> 11
    assert fo["gap_ms"]["max"] == pytest.approx(100.0)
    fo = analyse(_plan(), [_result(_plan(), t0, {0: list(range(10))})], t0,
                 t0 + 300_000_000, {0})["failover"]
    assert fo["gap_ms_before_fault_max"] is None  # no steady stretch before the fault


def test_summary_us_empty_and_percentiles() -> None:
    assert summary_us(np.asarray([], dtype=np.int64))["p99"] == 0.0
    s = summary_us(np.arange(1, 1001, dtype=np.int64) * 1000)
    assert s["p50"] == 500.0 and s["p99"] == 990.0 and s["max"] == 1000.0


# --- bench functions --------------------------------------------------------------------


def test_functions_pin_layout_own_cpu_per_edge_when_enough() -> None:
    from bench.scenarios.functions import pin_layout

    assert pin_layout(2, 4) == ([{0}, {1}], {2, 3})
    assert pin_layout(1, 2) == ([{0}], {1})
    # Fewer CPUs than edges + 1: the edges share all but the last CPU.
    assert pin_layout(2, 2) == ([{0}, {0}], {1})
    assert pin_layout(3, 3) == ([{0}, {1}, {0}], {2})


def test_functions_machine_notes() -> None:
    from bench.scenarios.functions import machine_notes

    p = {"edges": 2, "procs": 2, "pin": False}
    assert machine_notes(p, 4) == []
    (note,) = machine_notes(p, 2)
    assert "2 CPUs" in note
    assert len(machine_notes({**p, "pin": True}, 2)) == 2


@pytest.mark.parametrize("change", [{"in_flight": 17}, {"clients": 65, "in_flight": 4},
                                    {"procs": 3, "clients": 2}, {"body_us": -1},
                                    {"body_us": 100_001}, {"payload_size": 20_000}])
def test_functions_validate_refuses(change: dict[str, int]) -> None:
    from bench.errors import BenchError
    from bench.scenarios.functions import validate

    p = {"edges": 2, "clients": 16, "in_flight": 4, "procs": 2, "body_us": 0,
         "payload_size": 64}
    validate(p)
    with pytest.raises(BenchError):
        validate({**p, **change})


async def test_bench_rpcs_echo_and_work() -> None:
    import time

    from bench.rpc_functions import functions
    from edge_node.functions import RpcError

    echo, work = functions.rpcs["echo"].fn, functions.rpcs["work"].fn
    assert await echo(None, {"a": b"x"}) == {"a": b"x"}
    t0 = time.thread_time_ns()
    assert await work(None, {"us": 2000, "echo": [1]}) == [1]
    assert time.thread_time_ns() - t0 >= 2_000_000
    assert await work(None, {"us": 0}) is None
    for bad in (None, {}, {"us": -1}, {"us": 100_001}, {"us": 1.5}, {"us": True}):
        with pytest.raises(RpcError) as err:
            await work(None, bad)
        assert err.value.kind == "bad_us"
