"""The demo's machine-share figures: which limit, if any, was reached."""

from __future__ import annotations

import os

from edge_node.local.machine_share import CpuShares, bottleneck


def test_the_bottleneck_is_the_machine_then_the_load_generator_then_none() -> None:
    assert bottleneck({"load": 0.3}, 0.9) == "machine"
    assert bottleneck({"load": 0.95}, 0.6) == "load generator"
    assert bottleneck({"load": 0.4, "edges": 0.5}, 0.5) is None


def test_cpu_shares_count_this_process_and_survive_a_gone_pid() -> None:
    shares = CpuShares({"gone": [2**22 + 12345]})  # no such process
    shares.start()
    x = 0
    for i in range(2_000_000):  # some CPU in this process
        x += i
    out = shares.stop()
    assert out["cores"]["load"] > 0 and out["cores"]["gone"] == 0.0
    assert out["cpus"] == (os.cpu_count() or 1) and 0 <= out["busy_percent"] <= 100
