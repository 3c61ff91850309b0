"""Keeping ``origin run``'s worker processes alive.

:class:`WorkerSupervisor` starts one process per command and, from a background
thread, restarts any that exits while the origin is not stopping: after 1 s, then 2,
4, ... up to 30 s while it keeps dying within a minute of its start (a worker that ran
longer restarts after 1 s again).  It counts restarts and says how many workers run,
for ``/healthz`` and ``/metrics``; :meth:`WorkerSupervisor.stop` terminates every
worker (then kills those that do not exit within 5 s) and stops restarting.

:meth:`WorkerSupervisor.check` does one pass and takes ``now``: the tests drive it
with fake processes and a fake clock.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["WorkerSupervisor", "WorkerStatus"]

log = logging.getLogger("origin.supervise")


class _Proc(Protocol):
    pid: int

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(slots=True)
class _Slot:
    cmd: list[str]
    proc: _Proc | None = None
    started: float = 0.0
    #: When to start it again (None: running, or not due).
    restart_at: float | None = None
    backoff: float = 0.0
    restarts: int = 0
    last_exit: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What ``/healthz`` and ``/metrics`` show."""

    expected: int
    running: int
    restarts: int
    last_exit: int | None = None
    pids: tuple[int, ...] = field(default_factory=tuple)


class WorkerSupervisor:
    """Runs and restarts worker processes (see the module docstring)."""

    def __init__(self, cmds: Sequence[list[str]], env: dict[str, str] | None = None, *,
                 backoff_base: float = 1.0, backoff_cap: float = 30.0,
                 healthy_after: float = 60.0, poll_every: float = 0.5,
                 spawn: Callable[..., Any] = subprocess.Popen,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = [_Slot(list(c)) for c in cmds]
        self.env = env
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.healthy_after = healthy_after
        self.poll_every = poll_every
        self._spawn = spawn
        self._clock = clock
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, watch: bool = True) -> None:
        """Start every worker, then (``watch``) the thread that restarts them."""
        now = self._clock()
        with self._lock:
            for slot in self.slots:
                self._launch(slot, now)
        if watch:
            self._thread = threading.Thread(target=self._watch, name="worker-supervisor",
                                            daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_every):
            self.check(self._clock())

    def _launch(self, slot: _Slot, now: float) -> None:
        slot.proc = self._spawn(slot.cmd, env=self.env)
        slot.started, slot.restart_at = now, None

    def check(self, now: float) -> None:
        """One pass: note workers that exited, restart those whose backoff is over."""
        with self._lock:
            if self._stopping.is_set():
                return
            for i, slot in enumerate(self.slots):
                proc = slot.proc
                if proc is not None:
                    code = proc.poll()
                    if code is None:
                        continue
                    slot.proc, slot.last_exit = None, code
                    quick = now - slot.started < self.healthy_after
                    slot.backoff = (min(self.backoff_cap, max(self.backoff_base,
                                                              slot.backoff * 2))
                                    if quick else self.backoff_base)
                    slot.restart_at = now + slot.backoff
                    log.error("origin worker exited: restarting it", extra={
                        "worker": i, "exit_code": code, "in_s": slot.backoff})
                if slot.restart_at is not None and now >= slot.restart_at:
                    slot.restarts += 1
                    self._launch(slot, now)

    def status(self) -> WorkerStatus:
        """Workers expected, running, restarted so far, the last exit code seen."""
        with self._lock:
            running = [s.proc for s in self.slots if s.proc is not None
                       and s.proc.poll() is None]
            exits = [s.last_exit for s in self.slots if s.last_exit is not None]
            return WorkerStatus(len(self.slots), len(running),
                                sum(s.restarts for s in self.slots),
                                exits[-1] if exits else None,
                                tuple(p.pid for p in running))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop restarting; terminate every worker, kill those still there after
        ``timeout`` seconds."""
        self._stopping.set()
        with self._lock:
            procs = [s.proc for s in self.slots if s.proc is not None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.poll_every)
