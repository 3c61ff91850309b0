"""CPU and memory of processes, CPU pinning, file-descriptor limits, and counters read
from a server's ``/metrics``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import psutil

#: A load process above this share of one core may be the bottleneck itself.
LOADGEN_SATURATION_PERCENT = 85.0
#: CPU used by processes outside the benchmark above this share of a core: a noisy host.
OTHER_CPU_WARN_PERCENT = 10.0


@dataclass(frozen=True)
class ProcSample:
    """CPU time (user + system, seconds) and RSS (bytes) of a process at ``t`` (monotonic s)."""

    t: float
    cpu_s: float
    rss: int


def sample(proc: psutil.Process) -> ProcSample:
    """Sample ``proc``; raise ``psutil.Error`` if it is gone."""
    with proc.oneshot():
        times = proc.cpu_times()
        rss = int(proc.memory_info().rss)
    return ProcSample(time.monotonic(), float(times.user + times.system), rss)


def sample_self() -> ProcSample:
    """Sample the calling process's CPU time precisely (no RSS: it is 0 here)."""
    return ProcSample(time.monotonic(), time.process_time(), 0)


def cpu_between(a: ProcSample, b: ProcSample) -> tuple[float, float]:
    """Return (CPU seconds, percent of one core) spent between two samples."""
    cpu = max(0.0, b.cpu_s - a.cpu_s)
    wall = b.t - a.t
    return cpu, (100.0 * cpu / wall if wall > 0 else 0.0)


def system_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds since boot: ``task`` (user + nice + system: processes),
    ``irq`` (hard and soft interrupts, where loopback traffic is often accounted) and
    ``steal`` (taken by the hypervisor)."""
    t = psutil.cpu_times()
    return {
        "task": float(t.user + t.nice + t.system),
        "irq": float(getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)),
        "steal": float(getattr(t, "steal", 0.0)),
    }


def cpu_count() -> int:
    return os.cpu_count() or 1


def can_pin() -> bool:
    """True when the server and the load can be pinned to distinct cores (CPU 0 and 1)."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        return False
    return {0, 1} <= allowed


def pin_pid(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process ``pid`` to ``cpus`` (threads made later inherit it)."""
    try:
        tids = [t.id for t in psutil.Process(pid).threads()]
    except psutil.Error:
        tids = [pid]
    for tid in tids:
        # A thread may end between the listing and the call.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def pin_self(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)


def metric_total(http_url: str, name: str) -> float:
    """Sum of every series of metric ``name`` on ``http_url/metrics`` (0 when the
    server does not answer: a killed edge)."""
    try:
        with urllib.request.urlopen(http_url + "/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM ``proc``, then SIGKILL it if it has not exited within ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
