"""Every bench scenario in a tiny configuration, end to end (no timing assertions)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.targets import check_available, start_target


def _edge_available() -> bool:
    try:
        check_available("edge")
    except BenchError:
        return False
    return True


TARGET = "both" if _edge_available() else "baseline"
KINDS = ["baseline", "edge"] if TARGET == "both" else ["baseline"]


def _report(out: Path, scenario: str) -> dict[str, Any]:
    found = sorted(out.glob(f"{scenario}-*.json"))
    assert len(found) == 1, found
    assert found[0].with_suffix(".md").is_file()
    doc: dict[str, Any] = json.loads(found[0].read_text())
    assert doc["schema"] == "edge-relay-bench/1"
    meta = doc["meta"]
    for key in ("scenario", "params", "timestamp", "host", "python", "git_commit"):
        assert key in meta
    assert meta["scenario"] == scenario
    assert meta["host"]["cpu_count"] >= 1
    assert set(doc["targets"]) == set(KINDS)
    for kind in KINDS:
        assert len(doc["targets"][kind]["runs"]) == 1
        assert doc["targets"][kind]["median"]
    assert isinstance(doc["warnings"], list)
    if TARGET == "both":
        assert "edge/baseline" in doc["ratios"]
    return doc


def test_fanout_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([
        "fanout", "--subscribers", "3", "--publishers", "1", "--rate", "50",
        "--duration", "1.5", "--warmup", "0.3", "--drain", "2",
        "--target", TARGET, "--out", str(tmp_path), "--quiet",
    ])
    assert rc == 0
    assert "server CPU µs per delivery" in capsys.readouterr().out
    doc = _report(tmp_path, "fanout")
    assert list(tmp_path.glob("fanout-*.png"))
    for kind in KINDS:
        run = doc["targets"][kind]["runs"][0]
        for section in ("throughput", "messages", "latency_us", "service_latency_us",
                        "send_lag_us", "server", "loadgen", "histograms"):
            assert section in run, (kind, section)
        msgs = run["messages"]
        assert msgs["sent"] == 75
        assert msgs["delivered"] > 0
        assert msgs["lost"] == 0, (kind, run["warnings"])
        assert msgs["duplicates"] == 0
        assert msgs["publish_errors"] == 0, run["warnings"]
        assert msgs["disconnected_clients"] == 0
        assert run["latency_us"]["count"] > 0
        assert run["server"]["rss_bytes"] > 0
        med = doc["targets"][kind]["median"]
        for fig in ("latency_us.p50", "latency_us.p99", "server.cpu_us_per_delivery"):
            assert fig in med


def test_connections_tiny(tmp_path: Path) -> None:
    rc = main([
        "connections", "--count", "20", "--batch", "10", "--settle", "0.2",
        "--target", TARGET, "--out", str(tmp_path), "--quiet", "--no-plot",
    ])
    assert rc == 0
    doc = _report(tmp_path, "connections")
    for kind in KINDS:
        run = doc["targets"][kind]["runs"][0]
        assert run["connections"]["connected"] == 20, run["warnings"]
        assert run["connections"]["failed"] == 0
        assert "bytes_per_connection" in run["memory"]
        assert run["memory"]["rss_after_bytes"] > 0


def test_failover_tiny(tmp_path: Path) -> None:
    """The failover command's own load: a SIGKILLed edge, every client served again,
    nothing lost or repeated (the exit code says so too). The other actions run on
    the cluster-scenario engine below."""
    rc = main([
        "failover", "--action", "kill", "--clients", "12", "--rooms", "3",
        "--publishers", "2", "--rate", "40", "--edges", "2", "--at", "1",
        "--duration", "3", "--out", str(tmp_path), "--quiet",
    ])
    reports = list(tmp_path.glob("failover-*.json"))
    assert len(reports) == 1
    doc = json.loads(reports[0].read_text())
    run = doc["runs"][0]
    assert run["served_again"] == 12 and run["lost"] == 0 and run["duplicates"] == 0, run
    assert run["published_acked"] > 0
    assert run["reconnects"] >= 12
    assert rc == 0


def _cluster_run(out: Path, scenario: str) -> dict[str, Any]:
    found = sorted(out.glob(f"{scenario}-*.json"))
    assert len(found) == 1, found
    doc: dict[str, Any] = json.loads(found[0].read_text())
    assert doc["schema"] == "edge-relay-bench/1"
    assert doc["meta"]["scenario"] == scenario
    assert set(doc["targets"]) == {"edge"}
    run: dict[str, Any] = doc["targets"]["edge"]["runs"][0]
    for section in ("throughput", "messages", "latency_us", "rooms", "timeline", "server",
                    "loadgen", "host"):
        assert section in run, section
    return run


TINY = ["--duration", "2", "--warmup", "0.3", "--drain", "1", "--quiet"]


def test_failover_drain_on_fanout_load(tmp_path: Path) -> None:
    """Drain under the fanout load: every subscriber handed off, none reconnects,
    nothing lost or repeated; a timeline plot with the drain marked."""
    rc = main(["failover", "--load", "fanout", "--action", "drain", "--clients", "8",
               "--publishers", "2", "--rooms", "2", "--rate", "40", "--edges", "2",
               "--at", "1", "--duration", "2.5", "--out", str(tmp_path), "--quiet"])
    run = _cluster_run(tmp_path, "failover-fanout")
    fo = run["failover"]
    assert fo["affected_clients"] == 8 and fo["served_again"] == 8, run["warnings"]
    assert fo["handoffs"] == 8 and fo["reconnects"] == 0
    assert run["messages"]["lost"] == 0 and run["messages"]["duplicates"] == 0
    assert run["messages"]["publish_acked"] == run["messages"]["sent"] == 100
    assert run["timeline"]["events"][0]["what"].startswith("drain")
    assert list(tmp_path.glob("failover-fanout-*-timeline.png"))
    assert rc == 0


def test_rooms_with_killed_edge(tmp_path: Path) -> None:
    """rooms over 2 edges with edge 1 SIGKILLed: its players come back through the
    other edge, every reliable message arrives once, per-room figures."""
    rc = main(["rooms", "--players", "12", "--rooms", "4", "--hz", "5", "--edges", "2",
               "--fault", "kill", "--at", "0.8", *TINY, "--out", str(tmp_path), "--no-plot"])
    assert rc == 0
    run = _cluster_run(tmp_path, "rooms")
    msgs = run["messages"]
    assert msgs["sent"] == 120 and msgs["publish_acked"] == 120, run["warnings"]
    assert msgs["expected"] == 240  # every message to the 2 other players of its room
    assert msgs["lost"] == 0 and msgs["duplicates"] == 0, run["warnings"]
    assert run["rooms"]["count"] == 4 and run["rooms"]["with_deliveries"] == 4
    fo = run["failover"]
    # Player i is on edge (i div rooms) mod edges: players 0-3 and 8-11 on edge 1.
    assert fo["affected_clients"] == 8 and fo["served_again"] == 8
    assert fo["reconnects"] >= 8
    assert fo["gap_ms"]["max"] > 0


def test_telemetry_through_a_redis_outage(tmp_path: Path) -> None:
    """Devices on one edge, their rooms forwarded to the origin, Redis frozen for half
    a second: the origin still applies every acknowledged sample, and reports the
    edge->origin lag."""
    rc = main(["telemetry", "--devices", "5", "--rate", "100", "--fault", "redis-stop",
               "--at", "0.6", "--outage", "0.5", *TINY, "--out", str(tmp_path), "--no-plot"])
    assert rc == 0
    run = _cluster_run(tmp_path, "telemetry")
    assert run["messages"]["publish_acked"] == run["messages"]["sent"] == 200
    org = run["origin"]
    assert org["room_events_applied"] == 200 and org["missing"] == 0, run["warnings"]
    assert org["lag_entries"] > 0 and org["lag_ms"]["p99"] >= org["lag_ms"]["p50"] > 0
    assert run["origin"]["cpu_s"] >= 0
    assert [e["what"] for e in run["timeline"]["events"]] == ["redis-stop redis",
                                                              "redis resumed"]


def test_telemetry_device_path_tiny(tmp_path: Path) -> None:
    """Devices send TELEMETRY batches through the IoT pipeline: every sample sent is
    acknowledged and counted once at the origin, and the rollups' lag is reported."""
    rc = main(["telemetry", "--path", "device", "--devices", "4", "--rate", "200",
               "--batch", "10", "--iot-window-ms", "200", *TINY, "--out", str(tmp_path)])
    assert rc == 0
    found = sorted(tmp_path.glob("telemetry-*.json"))
    assert len(found) == 1, found
    doc = json.loads(found[0].read_text())
    assert doc["meta"]["params"]["path"] == "device"
    run = doc["targets"]["edge"]["runs"][0]
    assert run["messages"]["sent"] == run["messages"]["acked"] == 400, run["warnings"]
    org = run["origin"]
    assert org["samples"] == 400 and org["missing"] == 0 and org["extra"] == 0
    assert org["lag_entries"] > 0 and org["lag_ms"]["p99.9"] >= org["lag_ms"]["p50"] > 0
    assert run["loadgen"]["procs"] == 2 and run["loadgen"]["cpu_percent_max"] >= 0
    assert run["server"]["cpu_s"] >= 0 and "other_cpu_percent" in run["host"]


def test_storm_tiny(tmp_path: Path) -> None:
    """A killed edge's clients come back under a low connect rate: the peak of
    resumes stays within what the limit admits, and the refusals are counted."""
    rc = main(["storm", "--clients", "30", "--rooms", "3", "--rate", "30", "--edges", "2",
               "--connect-rate", "20", "--at", "0.8", *TINY, "--out", str(tmp_path),
               "--no-plot"])
    assert rc == 0
    run = _cluster_run(tmp_path, "storm")
    fo = run["failover"]
    assert fo["affected_clients"] == 30 and fo["served_again"] == 30, run["warnings"]
    assert fo["resumes_per_s_peak"] <= fo["admit_bound_1s"] == 40
    assert fo["connects_rejected"] > 0
    assert run["messages"]["lost"] == 0 and run["messages"]["duplicates"] == 0


def test_sweep_tiny(tmp_path: Path) -> None:
    rc = main(["sweep", "--target", "baseline", "--subscribers", "2", "--publishers", "1",
               "--start-rate", "20", "--steps", "2", "--refine", "0", "--duration", "0.8",
               "--warmup", "0.2", "--drain", "0.5", "--p99-ms", "1000", "--quiet",
               "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("sweep-*.json")).read_text())
    run = doc["targets"]["baseline"]["runs"][0]
    assert [s["rate"] for s in run["steps"]] == [20.0, 30.0]
    assert run["sweep"]["steps"] == 2
    assert run["sweep"]["max_rate"] in (20.0, 30.0)


def test_recv_path_tiny(tmp_path: Path) -> None:
    rc = main(["recv-path", "--clients", "2", "--messages", "300", "--runs", "1",
               "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("recv-path-*.json")).read_text())
    assert set(doc["targets"]) == {"sdk", "websockets", "lean"}
    for data in doc["targets"].values():
        recv = data["runs"][0]["recv"]
        assert recv["messages"] == 600
        assert recv["per_core_per_s"] > 0
    paced = tmp_path / "paced"
    assert main(["recv-path", "--receiver", "sdk", "--clients", "2", "--messages", "200",
                 "--batch", "1", "--rate", "2000", "--runs", "1", "--out", str(paced)]) == 0
    doc = json.loads(next(paced.glob("recv-path-*.json")).read_text())
    assert doc["meta"]["params"]["rate"] == 2000
    assert doc["targets"]["sdk"]["runs"][0]["recv"]["messages"] == 400


def test_fanout_lean_receiver(tmp_path: Path) -> None:
    rc = main(["fanout", "--subscribers", "3", "--publishers", "1", "--rate", "40",
               "--duration", "1", "--warmup", "0.2", "--drain", "1", "--target", "edge-local",
               "--receiver", "lean", "--out", str(tmp_path), "--quiet", "--no-plot"])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("fanout-*.json")).read_text())
    run = doc["targets"]["edge-local"]["runs"][0]
    assert doc["meta"]["params"]["receiver"] == "lean"
    assert run["messages"]["sent"] == 40 and run["messages"]["lost"] == 0


def test_plot_command(tmp_path: Path) -> None:
    doc = {"schema": "edge-relay-bench/1",
           "meta": {"scenario": "fanout", "params": {"transport": "ws"}},
           "targets": {"edge": {"runs": [], "median": {"latency_us.p50": 900.0,
                                                       "latency_us.p99": 4000.0}}}}
    src = tmp_path / "a.json"
    src.write_text(json.dumps(doc))
    png = tmp_path / "out.png"
    assert main(["plot", str(src), "-o", str(png)]) == 0
    assert png.stat().st_size > 0


def test_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fanout", "--subscribers", "2", "--publishers", "1", "--rate", "20",
            "--duration", "0.6", "--warmup", "0.2", "--drain", "0.5",
            "--target", "baseline", "--quiet", "--no-plot"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    old = next((tmp_path / "a").glob("*.json"))
    new = next((tmp_path / "b").glob("*.json"))
    capsys.readouterr()
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "[baseline]" in out
    assert "latency_us.p50" in out


@pytest.mark.parametrize("argv", [
    [],
    ["fanout", "--rate", "0"],
    ["fanout", "--duration", "1", "--warmup", "1"],
    ["fanout", "--payload-size", "8"],
    ["fanout", "--target", "nope"],
    ["connections", "--count", "2", "--procs", "3"],
    ["compare", "/nonexistent/old.json", "/nonexistent/new.json"],
    ["rooms", "--players", "4", "--rooms", "3"],
    ["rooms", "--fault", "kill", "--edges", "1"],
    ["rooms", "--fault", "kill", "--at", "20"],
    ["telemetry", "--duration", "1", "--warmup", "2"],
    ["telemetry", "--path", "device", "--fault", "kill", "--edges", "2"],
    ["telemetry", "--path", "device", "--edges", "2"],
    ["telemetry", "--path", "device", "--iot-window-ms", "5"],
    ["telemetry", "--path", "bulk"],
    ["failover", "--action", "redis-stop"],
    ["sweep", "--factor", "1"],
    ["recv-path", "--clients", "1000", "--messages", "10000"],
    ["plot", "/nonexistent/report.json"],
    ["functions", "--in-flight", "17"],
    ["functions", "--clients", "100", "--in-flight", "4"],
    ["functions", "--body-us", "-1"],
    ["functions", "--procs", "3", "--clients", "2"],
    ["origin-functions", "--events", "100001"],
    ["origin-functions", "--body-us", "-1"],
    ["origin-functions", "--concurrency", "0"],
    ["origin-functions", "--sleep-ms", "-1"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip()


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["fanout", "--help"], ["connections", "--help"],
                 ["compare", "--help"], ["rooms", "--help"], ["telemetry", "--help"],
                 ["storm", "--help"], ["sweep", "--help"], ["recv-path", "--help"],
                 ["failover", "--help"], ["plot", "--help"], ["functions", "--help"],
                 ["origin-functions", "--help"]):
        assert main(argv) == 0
    assert "--subscribers" in capsys.readouterr().out


def test_baseline_server_healthz() -> None:
    target = start_target("baseline")
    try:
        http = target.spec.url.replace("ws://", "http://")
        with urllib.request.urlopen(http + "/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert resp.read().strip() == b"ok"
    finally:
        target.stop()


@pytest.mark.parametrize(
    ("rate", "publishers", "duration"), [(200, 5, 10), (7, 3, 1.5), (50, 1, 1)]
)
def test_schedule_covers_every_message_once(rate: float, publishers: int, duration: float) -> None:
    from bench.pacing import HEADER_SIZE, PayloadMaker, Schedule, read_payload

    s = Schedule(1_000, rate, publishers, duration, 0.5)
    assert sum(s.count_for(p) for p in range(publishers)) == s.total
    last = s.intended_ns(s.total - 1)
    assert s.t0_ns <= last < s.end_ns
    payload = PayloadMaker(88).make(2, 7, 123, 456)
    assert len(payload) == 88
    assert read_payload(payload) == (2, 7, 123, 456)
    with pytest.raises(ValueError):
        PayloadMaker(HEADER_SIZE - 1)


def test_nats_target_tiny(tmp_path: Path) -> None:
    """The NATS server (Go, over WebSocket) as a fanout and connections target: every
    subscriber gets every message once, and the report carries the edge/nats ratios."""
    rc = main([
        "fanout", "--subscribers", "3", "--publishers", "2", "--rate", "40",
        "--duration", "1.5", "--warmup", "0.3", "--drain", "2",
        "--target", "nats", "--out", str(tmp_path), "--quiet", "--no-plot",
    ])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("fanout-*.json")).read_text())
    run = doc["targets"]["nats"]["runs"][0]
    msgs = run["messages"]
    assert msgs["sent"] == 60
    assert msgs["delivered"] == 180, run["warnings"]
    assert msgs["lost"] == 0 and msgs["duplicates"] == 0 and msgs["invalid"] == 0
    # echo off: each publisher gets the other one's messages, never its own
    assert msgs["publisher_receipts"] == 60
    assert run["server"]["rss_bytes"] > 0  # (CPU is in 10 ms ticks: may read 0 at this rate)
    rc = main([
        "connections", "--count", "20", "--batch", "10", "--settle", "0.2",
        "--target", "nats", "--out", str(tmp_path), "--quiet", "--no-plot",
    ])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("connections-*.json")).read_text())
    assert doc["targets"]["nats"]["runs"][0]["connections"]["connected"] == 20


@pytest.mark.parametrize("transport", ["quic-stream", "quic-datagram"])
def test_fanout_over_quic_tiny(tmp_path: Path, transport: str) -> None:
    """fanout through the edge's QUIC listener: reliable publishes on the stream lose
    nothing; datagrams may be dropped, but never arrive twice."""
    rc = main([
        "fanout", "--transport", transport, "--subscribers", "3", "--publishers", "2",
        "--rate", "40", "--duration", "1.5", "--warmup", "0.3", "--drain", "2",
        "--out", str(tmp_path), "--quiet", "--no-plot",
    ])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("fanout-*.json")).read_text())
    assert doc["meta"]["params"]["transport"] == transport
    assert set(doc["targets"]) == {"edge"}  # "both" means the edge alone over QUIC
    msgs = doc["targets"]["edge"]["runs"][0]["messages"]
    assert msgs["sent"] == 60 and msgs["expected"] == 180
    assert msgs["duplicates"] == 0 and msgs["invalid"] == 0
    assert msgs["delivered"] + msgs["lost"] == 180
    if transport == "quic-stream":
        assert msgs["lost"] == 0 and msgs["publish_acked"] == 60
    else:
        assert msgs["delivered"] > 0


def test_fanout_refuses_quic_for_targets_without_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fanout", "--transport", "quic-stream", "--target", "baseline",
                 "--quiet"]) == 2
    assert "no QUIC listener" in capsys.readouterr().err
    assert main(["fanout", "--transport", "quic-datagram", "--receiver", "lean",
                 "--quiet"]) == 2
    assert "WebSocket only" in capsys.readouterr().err


def test_fanout_with_write_interval_loses_nothing(tmp_path: Path) -> None:
    """An edge started with --write-interval-ms (frames held and joined under load)
    still delivers every message once to every subscriber."""
    rc = main([
        "fanout", "--target", "edge", "--edge-write-interval-ms", "5", "--subscribers", "4",
        "--publishers", "2", "--rate", "400", "--duration", "1.5", "--warmup", "0.3",
        "--drain", "2", "--receiver", "lean", "--out", str(tmp_path), "--quiet", "--no-plot",
    ])
    assert rc == 0
    doc = json.loads(next(tmp_path.glob("fanout-*.json")).read_text())
    assert doc["meta"]["params"]["edge_args"] == ["--write-interval-ms", "5"]
    msgs = doc["targets"]["edge"]["runs"][0]["messages"]
    assert msgs["sent"] == 600 and msgs["delivered"] == 2400, msgs
    assert msgs["lost"] == 0 and msgs["duplicates"] == 0 and msgs["publish_errors"] == 0


def test_sigterm_stops_everything_the_run_started(tmp_path: Path) -> None:
    """A bench run that is SIGTERMed (CI timeout, kill) exits 143 after stopping its
    edge, its Redis and its load processes: nothing is left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "fanout", "--target", "edge", "--duration", "30",
         "--subscribers", "5", "--publishers", "1", "--rate", "50", "--out", str(tmp_path),
         "--quiet", "--no-plot"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ),
    )
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        kids: list[psutil.Process] = []
        while time.monotonic() < deadline:  # edge, Redis and a load worker
            kids = parent.children(recursive=True)
            if any("spawn_main" in " ".join(k.cmdline()) for k in kids if k.is_running()):
                break
            time.sleep(0.2)
        roles = " ".join(" ".join(k.cmdline()) for k in kids)
        assert "edge_node" in roles and "spawn_main" in roles, roles
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        assert b"terminated" in err
        _gone, alive = psutil.wait_procs(kids, timeout=10)
        assert alive == [], [k.cmdline() for k in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_games_tiny(tmp_path: Path) -> None:
    """games: arena rooms over 2 edges; ticks run, patches beat full states, every input
    acknowledged, the report has its figures."""
    rc = main(["games", "--rooms", "3", "--players", "3", "--edges", "2", "--input-hz", "4",
               "--duration", "2", "--warmup", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    (path,) = sorted(tmp_path.glob("games-*.json"))
    doc = json.loads(path.read_text())
    assert doc["schema"] == "edge-relay-bench/1" and doc["meta"]["scenario"] == "games"
    run = doc["targets"]["edge"]["runs"][0]
    assert run["players_joined"] == 9, doc["warnings"]
    assert run["ticks_per_s"] > 0 and run["tick_jitter_p99_ms"] is not None
    assert run["edge_cpu_us_per_room_tick"] > 0
    assert run["patch_bytes_per_player_s"] > 0
    assert run["full_bytes_per_player_s"] > run["patch_bytes_per_player_s"]
    assert run["inputs_acked_percent"] == 100.0, doc["warnings"]


def test_games_kill_tiny(tmp_path: Path) -> None:
    """games --chaos kill: the rooms of the killed edge are restored on the other one
    and tick again; no acknowledged input lost or taken twice; figures in the report."""
    rc = main(["games", "--rooms", "2", "--players", "3", "--edges", "2", "--input-hz", "4",
               "--duration", "4", "--warmup", "1", "--chaos", "kill", "--out",
               str(tmp_path), "--quiet"])
    assert rc == 0
    (path,) = sorted(tmp_path.glob("games-*.json"))
    run = json.loads(path.read_text())["targets"]["edge"]["runs"][0]
    assert run["rooms_hit"] == 1 and run["restores"] == 1
    assert run["inputs_lost"] == 0 and run["inputs_twice"] == 0
    assert run["ticked_again_max_s"] is not None  # how soon: a figure, not a test
    assert run["snapshot_bytes"] > 0 and run["restore_p50_ms"] is not None


def test_anomaly_tiny(tmp_path: Path) -> None:
    """anomaly: the edge's detector over two generated NAB-format series; the spike in the
    window is detected, the report has the three profiles; a bad --data is a usage error."""
    import math
    import random
    from datetime import datetime, timedelta

    rng = random.Random(3)
    t0 = datetime(2020, 1, 1)
    (tmp_path / "data" / "gen").mkdir(parents=True)
    windows: dict[str, list[list[str]]] = {}
    for k in range(2):
        rows = []
        for i in range(1200):
            v = 10 + math.sin(i / 20) + rng.gauss(0, 0.1) + (25 if i == 800 else 0)
            rows.append(f"{t0 + timedelta(minutes=i)},{v}")
        (tmp_path / "data" / "gen" / f"s{k}.csv").write_text("timestamp,value\n" + "\n".join(rows))
        windows[f"gen/s{k}.csv"] = [["2020-01-01 13:15:00", "2020-01-01 13:35:00"]]
    (tmp_path / "windows.json").write_text(json.dumps(windows))
    out = tmp_path / "out"
    rc = main(["anomaly", "--data", str(tmp_path), "--out", str(out), "--quiet",
               "--plot", str(out / "series.png"), "--series", "1"])
    assert rc == 0
    (path,) = sorted(out.glob("anomaly-*.json"))
    run = json.loads(path.read_text())["targets"]["edge"]["runs"][0]
    assert run["series"] == 2 and run["windows"] == 2
    assert run["detections"]["windows_detected"] == 2, run["per_series"]
    assert set(run["scores"]) == {"standard", "reward_low_FP", "reward_low_FN"}
    assert run["scores"]["standard"]["deployed"] > 50
    assert run["us_per_sample"]["median"] > 0 and run["memory_bytes"]["max"] > 0
    assert main(["anomaly", "--data", str(tmp_path / "nope"), "--quiet"]) == 2


def test_functions_tiny(tmp_path: Path) -> None:
    """functions: RPCs and PINGs over WebSocket and QUIC on one edge, then spread over
    two; every phase answered requests without errors and the report has every figure
    (their size depends on the machine: not asserted)."""
    rc = main(["functions", "--edges", "2", "--clients", "2", "--in-flight", "2",
               "--procs", "1", "--body-us", "20", "--duration", "0.5", "--warmup", "0.2",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    (path,) = sorted(tmp_path.glob("functions-*.json"))
    assert path.with_suffix(".md").is_file()
    doc = json.loads(path.read_text())
    assert doc["schema"] == "edge-relay-bench/1" and doc["meta"]["scenario"] == "functions"
    assert doc["meta"]["params"]["body_us"] == 20
    run = doc["targets"]["edge"]["runs"][0]
    for t in ("ws", "quic"):
        rpc, ping = run[t]["rpc"], run[t]["ping"]
        for phase in (rpc, ping):
            assert phase["requests"] > 0 and phase["errors"] == 0, doc["warnings"]
            assert phase["cpu_us"] > 0 and phase["latency_us"]["p50"] > 0
            assert phase["edge_cpu_percent"] > 0
            assert {"host_busy_percent", "other_cpu_percent"} <= set(phase)
        # The edge ran the function with the known body ('work'), not 'echo'.
        assert rpc["body_us"] == 20 and rpc["edge_calls_ok"] > 0
        assert rpc["metric_fn_wall_us"] > 0
        assert run[t]["overhead_us_per_call"] == round(rpc["cpu_us"] - 20, 2)
        assert run[t]["overhead_over_ping_us"] == round(
            run[t]["overhead_us_per_call"] - ping["cpu_us"], 2)
    scaling = run["scaling"]
    assert scaling["edges_1"] == run["ws"]["rpc"]
    two = scaling["edges_2"]
    assert two["requests"] > 0 and two["errors"] == 0
    assert len(two["edge_cpu_percent_per_edge"]) == 2 and min(two["edge_cpu_percent_per_edge"]) > 0
    assert scaling["ratio"] == round(two["per_s"] / scaling["edges_1"]["per_s"], 3)
    assert scaling["calls_per_edge_cpu_s"] > 0
    median = doc["targets"]["edge"]["median"]
    for key in ("ws.overhead_us_per_call", "quic.overhead_over_ping_us", "scaling.ratio",
                "scaling.edges_2.per_s"):
        assert key in median


def test_origin_functions_tiny(tmp_path: Path) -> None:
    """origin-functions: 1 then 2 origin workers drain a small backlog; every event's
    handler recorded its effect exactly once (no timing asserted)."""
    rc = main(["origin-functions", "--events", "300", "--sleep-ms", "2", "--body-us", "10",
               "--duration", "15", "--shards", "2", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    (path,) = sorted(tmp_path.glob("origin-functions-*.json"))
    assert path.with_suffix(".md").is_file()
    doc = json.loads(path.read_text())
    assert doc["schema"] == "edge-relay-bench/1"
    assert doc["meta"]["scenario"] == "origin-functions"
    assert doc["meta"]["params"]["workers_max"] == 2
    run = doc["targets"]["origin"]["runs"][0]
    for w in (1, 2):
        ph = run[f"workers_{w}"]
        assert ph["workers"] == w and ph["drained"], doc["warnings"]
        assert ph["handled"] == ph["effects"] == ph["fn_ok"] == 300
        assert ph["duplicates"] == 0 and ph["missing"] == 0 and ph["dead_letters"] == 0
        assert ph["left_queued"] == 0
        assert len(ph["worker_cpu_percent_per_worker"]) == w
        assert ph["per_s"] > 0 and ph["cpu_us"] > 0
        assert ph["overhead_us_per_event"] == round(ph["cpu_us"] - 10, 2)
    assert run["ratio"] == round(run["workers_2"]["per_s"] / run["workers_1"]["per_s"], 3)
    median = doc["targets"]["origin"]["median"]
    for key in ("workers_1.per_s", "workers_2.per_s", "ratio", "events_per_worker_cpu_s"):
        assert key in median
