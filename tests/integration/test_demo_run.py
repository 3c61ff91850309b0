"""The demo, the product's front door, run end to end in small: three edges, an origin,
players, devices and arena bots, a drain and a SIGKILL; its JSON says nothing was lost
and every capability showed up: functions (RPCs, the window handler's device commands,
signed webhooks) and the players' token refreshes included."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.local.demo_app import HOT

pytestmark = pytest.mark.timeout(240)

DEVICES = 40


def test_small_demo_loses_nothing_and_runs_its_functions(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    run = subprocess.run(
        [sys.executable, "-m", "edge_node", "demo", "--edges", "3", "--players", "9",
         "--rooms", "3", "--rate", "10", "--devices", str(DEVICES), "--arena-bots", "2",
         "--rpc-callers", "3", "--duration", "14", "--json", str(out)],
        capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["ok"] and s["reliable"]["lost"] == 0 and s["reliable"]["duplicates"] == 0
    assert s["reliable"]["sent"] > 0 and s["iot"]["lost"] == 0
    assert s["failover"]["killed_edge"] and s["handover"]["drained_edge"]
    # Latency is split by path: every delivery before the kill is counted in one.
    paths = s["latency_by_path_ms"]
    assert paths["same_edge"]["deliveries"] > 0 and paths["cross_edge"]["deliveries"] > 0
    assert "latency_ms cross edge" in run.stdout

    f = s["functions"]
    assert f["rpc"]["callers"] == 3 and f["rpc"]["ok"] > 0 and f["rpc"]["failed"] == 0
    assert f["rpc"]["app_errors"] >= 3  # each caller's 10th submit is negative on purpose
    assert f["leaderboard"]["consistent"] and 1 <= f["leaderboard"]["players"] <= 3
    # Device i runs at random.Random(i).uniform(15, 30) °C: the clearly hot ones must
    # have been commanded by the window handler and cooled down.
    hot = sum(1 for i in range(DEVICES) if random.Random(i).uniform(15, 30) > HOT + 0.3)
    assert hot > 0, "the premise: some device of the fleet runs hot"
    assert f["telemetry"]["devices_cooled"] >= hot and f["telemetry"]["hot_at_end"] == 0
    assert f["telemetry"]["fan_commands"] >= f["telemetry"]["devices_cooled"]
    # Injected anomalies raise alerts; the origin POSTs each to the demo's receiver.
    assert s["iot"]["alerts"] > 0
    assert f["webhook"]["events"] >= s["iot"]["alerts"] and f["webhook"]["bad_signatures"] == 0
    assert f["webhook"]["kinds"].get("alert", 0) == f["webhook"]["deliveries"]
    ok_runs = f["edge_calls"].get("score.submit", {}).get("ok", 0)
    assert ok_runs > 0  # counted by the edges still up (the killed one's are gone)
    assert "functions.rpc" in run.stdout and "functions.webhook" in run.stdout
    # Players hold 6 s tokens (a 14 s run): each refreshed on its live connection at
    # least once, through the drain and the kill; no session was cut for an expired one.
    t = s["tokens"]
    assert t["ttl_s"] == 6.0 and t["players"] == 9 and t["players_refreshed"] == 9
    assert t["refreshes"] >= 9 and t["expired_closes"] == 0 and t["refused"] == 0
    assert t["valid_at_end"] == 9 and "tokens.refreshes" in run.stdout
    # Two spectators stopped reading for a third of the run: the "latest" one ends with
    # the newest update of every entity, the "drop" one was told what it missed and
    # read it back.
    d = s["delivery"]
    assert d["ok"] and d["latest"]["newest_of_every_key"] and d["latest"]["stale"] == 0
    assert d["latest"]["received"] < d["latest"]["published"]  # conflated: it fell behind
    assert d["drop"]["dropped"] > 0 and d["drop"]["complete"]
    assert d["drop"]["recovered"] == d["drop"]["dropped"]
    assert "delivery.latest" in run.stdout and "delivery.drop" in run.stdout


def test_the_demo_runs_over_tls(tmp_path: Path) -> None:
    """``edge-relay demo --tls``: the edges serve wss:// with the cluster's development
    certificate; every simulated client trusts it, the edges' metrics are read over
    https://, and nothing is lost through the drain and the kill."""
    out = tmp_path / "demo.json"
    run = subprocess.run(
        [sys.executable, "-m", "edge_node", "demo", "--tls", "--edges", "3", "--players", "6",
         "--rooms", "2", "--rate", "10", "--devices", "10", "--arena-bots", "1",
         "--rpc-callers", "2", "--duration", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["ok"] and s["config"]["tls"] and "wss://" in run.stderr
    assert s["delivery"]["ok"]  # the stalled spectators over wss:// too
    assert s["reliable"]["lost"] == 0 and s["reliable"]["sent"] > 0
    assert s["handover"]["clients_moved"] == s["handover"]["clients_on_drained_edge"] > 0
    # The surviving edge's counters were scraped over https://.
    assert any(e.get("messages_out", 0) > 0 for e in s["edges"])
