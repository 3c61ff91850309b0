"""Start origin processes (for ``edge-relay up``, the demo and tests).

:func:`spawn_worker` and :func:`spawn_api` run ``python -m origin ...`` as children in
their own process group; :func:`spawn_api` returns once ``/healthz`` answers 200.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from edge_node.local.launch import wait_healthy
from edge_node.local.redis_server import free_port

__all__ = ["OriginProcess", "spawn_worker", "spawn_api"]


class OriginProcess:
    """A running origin child process (worker or API)."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, port: int = 0) -> None:
        self.proc = proc
        self.name = name
        self.port = port
        self.http_url = f"http://127.0.0.1:{port}" if port else ""

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the process group (a crash; ``run``'s workers go too) and reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``; safe to
        call twice."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        self.kill()


def _spawn(args: Sequence[str], env: dict[str, str] | None,
           log_path: str | None) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen([sys.executable, "-m", "origin", *args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    finally:
        if log_path and not isinstance(out, int):
            out.close()


def spawn_worker(redis_url: str, consumer: str, *extra: str, env: dict[str, str] | None = None,
                 log_path: str | None = None) -> OriginProcess:
    """Start ``python -m origin worker`` (returns at once; it creates the groups itself)."""
    proc = _spawn(["worker", "--redis-url", redis_url, "--consumer", consumer, *extra],
                  env, log_path)
    return OriginProcess(proc, consumer)


def spawn_api(redis_url: str, *extra: str, command: str = "api", port: int = 0,
              env: dict[str, str] | None = None, log_path: str | None = None,
              timeout: float = 15.0) -> OriginProcess:
    """Start ``python -m origin api`` (or ``run``) and wait until ``/healthz`` is 200."""
    port = port or free_port()
    proc = _spawn([command, "--redis-url", redis_url, "--port", str(port), *extra], env,
                  log_path)
    p = OriginProcess(proc, command, port)
    try:
        wait_healthy(p.http_url, proc, timeout, what=f"origin {command}", log_path=log_path)
    except BaseException:
        p.kill()
        raise
    return p
