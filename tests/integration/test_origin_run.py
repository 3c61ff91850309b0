"""``origin run`` (API + worker processes) never leaves a worker behind: stopped with
SIGTERM it stops its workers; SIGKILLed, its workers notice and stop by themselves."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from edge_node.local.origin_api import spawn_api

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads child processes from /proc (Linux)")


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid``."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def workers_of(pid: int, count: int, timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    found: set[int] = set()
    while time.monotonic() < deadline and len(found) < count:
        found = children(pid)
        time.sleep(0.1)
    assert len(found) == count, f"expected {count} workers under {pid}, saw {found}"
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_origin_run(redis_url: str, tmp_path: Path,
                                       sig: signal.Signals) -> None:
    api = spawn_api(redis_url, "--workers", "2", command="run",
                    env={"ORIGIN_API_KEYS": "k"}, log_path=str(tmp_path / "run.log"))
    try:
        workers = workers_of(api.proc.pid, 2)
        os.kill(api.proc.pid, sig)
        api.proc.wait(timeout=15)
        assert wait_gone(workers, 10.0) == set(), (tmp_path / "run.log").read_text()
        if sig == signal.SIGKILL:
            assert "is gone: stopping" in (tmp_path / "run.log").read_text()
    finally:
        api.kill()  # the whole process group: workers left by a failure go too


def test_a_worker_that_dies_is_restarted_and_healthz_says_so_meanwhile(
        redis_url: str, tmp_path: Path) -> None:
    """SIGKILL one of ``origin run``'s workers: /healthz answers 503 workers_missing
    until the supervisor has started a new one (after 1 s), then 200 again; /metrics
    counts the restart."""
    import json
    import urllib.error
    import urllib.request

    def healthz() -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(api.http_url + "/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    api = spawn_api(redis_url, "--workers", "2", command="run",
                    env={"ORIGIN_API_KEYS": "k"}, log_path=str(tmp_path / "run.log"))
    try:
        before = workers_of(api.proc.pid, 2)
        status, body = healthz()
        assert status == 200 and body["workers"] == {"expected": 2, "running": 2,
                                                     "restarts": 0, "last_exit": None}
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        seen_missing = False
        while time.monotonic() < deadline and not seen_missing:
            status, body = healthz()
            seen_missing = status == 503 and body["status"] == "workers_missing"
            time.sleep(0.1)
        assert seen_missing, body
        after = workers_of(api.proc.pid, 2)
        assert victim not in after and len(after & before) == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and healthz()[0] != 200:
            time.sleep(0.1)
        status, body = healthz()
        assert status == 200 and body["workers"]["restarts"] == 1  # type: ignore[index]
        assert body["workers"]["last_exit"] == -signal.SIGKILL  # type: ignore[index]
        req = urllib.request.Request(api.http_url + "/metrics", headers={"X-API-Key": "k"})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
        assert "origin_worker_restarts_total 1.0" in text
        assert "origin_workers_running 2.0" in text
        assert "origin worker exited: restarting it" in (tmp_path / "run.log").read_text()
    finally:
        api.kill()
