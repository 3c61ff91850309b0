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
