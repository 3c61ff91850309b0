"""``python -m bench.scenarios.failover_trace`` in a tiny configuration (real cluster,
real drain): every figure is produced; bad arguments get exit 2 and one line."""

from __future__ import annotations

import pytest

from bench.scenarios.failover_trace import TraceParams, main, run_trace


async def test_trace_of_a_tiny_drain() -> None:
    r = await run_trace(TraceParams(clients=6, rooms=2, rate=40.0, at=1.0, duration=2.5))
    assert r["handoffs"] == 6 and r["reconnects"] == 0
    for key in ("handoff_to_welcome_ms", "welcome_to_first_ms", "switch_silence_ms",
                "gap_before_ms", "gap_ms", "excess_before_ms", "excess_ms"):
        assert r[key]["p50"] is not None and r[key]["max"] >= r[key]["p50"], key
    assert r["latency_max_ms_by_100ms"], "no latency around the drain"
    rows = r["cpu_by_100ms"]
    assert rows and {"loadgen", "edge1", "edge2", "edge3", "other"} <= set(rows[0])


@pytest.mark.parametrize("args", [["--clients", "0"], ["--at", "9", "--duration", "5"],
                                  ["--rate", "0"]])
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
