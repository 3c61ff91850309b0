"""``python -m bench transports`` end to end with tiny parameters (figures not judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.scenarios.transports import MODES


def _bench(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "transports", *args, "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=240, env=dict(os.environ),
        cwd=Path(__file__).resolve().parents[2], check=False)


def test_transports_scenario_reports_every_mode(tmp_path: Path) -> None:
    r = _bench("--runs", "1", "--rtt-samples", "20", "--messages", "50", "--subscribers", "2",
               "--handshakes", "3", out=tmp_path)
    assert r.returncode == 0, r.stderr
    (report,) = tmp_path.glob("transports-*.json")
    doc = json.loads(report.read_text())
    s = doc["summary"]
    assert set(s) == set(MODES)
    for mode in MODES:
        assert s[mode]["rtt_p50_us"] > 0 and s[mode]["deliveries_per_s"] > 0, mode
    for mode in ("ws", "quic_stream"):
        assert s[mode]["delivered_fraction"] == 1.0, "reliable deliveries all arrive"
        assert s[mode]["edge_cpu_ms_per_handshake"] >= 0
    assert "| RTT p50 µs |" in r.stdout


def test_transports_scenario_user_error_is_one_line(tmp_path: Path) -> None:
    r = _bench("--payload-size", "2000", out=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--payload-size" in r.stderr
