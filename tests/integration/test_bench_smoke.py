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


@pytest.mark.parametrize("action", ["kill", "drain", "stop"])
def test_failover_tiny(tmp_path: Path, action: str) -> None:
    """Each failover action runs end to end and reports every client served again,
    nothing lost or repeated (the scenario's exit code says so too)."""
    rc = main([
        "failover", "--action", action, "--clients", "12", "--rooms", "3",
        "--publishers", "2", "--rate", "40", "--edges", "2", "--at", "1",
        "--duration", "3", "--out", str(tmp_path), "--quiet",
    ])
    reports = list(tmp_path.glob("failover-*.json"))
    assert len(reports) == 1
    doc = json.loads(reports[0].read_text())
    run = doc["runs"][0]
    assert run["served_again"] == 12 and run["lost"] == 0 and run["duplicates"] == 0, run
    assert run["published_acked"] > 0
    if action == "drain":
        assert run["handoffs"] == 12 and run["reconnects"] == 0
    else:
        assert run["reconnects"] >= 12
    assert rc == 0


def test_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fanout", "--subscribers", "2", "--publishers", "1", "--rate", "20",
            "--duration", "1", "--warmup", "0.2", "--drain", "1",
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
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip()


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["fanout", "--help"], ["connections", "--help"],
                 ["compare", "--help"]):
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
