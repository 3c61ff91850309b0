"""The IoT command lines: ``python -m bench iot`` (a tiny real run) and
``python -m edge_node.iot.evaluate`` (help, a run, user errors exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=100, env=env, check=False)


def test_bench_iot_small_run(tmp_path: Path) -> None:
    p = run("bench", "iot", "--duration", "3", "--devices", "2", "--batch", "20",
            "--alert-devices", "2", "--spikes", "2", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    [report] = list(tmp_path.glob("iot-*.json"))
    doc = json.loads(report.read_text())
    assert doc["pipeline"]["samples_per_s"] > 0
    assert doc["edge_ingest"]["samples_acked"] > 0
    assert doc["alert_latency"]["alerts_timed"] >= 1
    assert "device->alert latency" in p.stdout


def test_bench_iot_user_error() -> None:
    p = run("bench", "iot", "--devices", "0")
    assert p.returncode == 2 and "--devices must be at least 1" in p.stderr
    assert "Traceback" not in p.stderr


def test_evaluate_cli() -> None:
    p = run("edge_node.iot.evaluate", "--help")
    assert p.returncode == 0 and "precision" in p.stdout
    p = run("edge_node.iot.evaluate", "--seeds", "1", "--series", "2", "--mode", "any",
            "--json")
    assert p.returncode == 0, p.stderr
    [r] = json.loads(p.stdout)
    assert r["mode"] == "any" and r["anomalies"] == 8 and 0 <= r["precision"] <= 1
    p = run("edge_node.iot.evaluate", "--series", "0")
    assert p.returncode == 2 and "--series must be >= 1" in p.stderr
