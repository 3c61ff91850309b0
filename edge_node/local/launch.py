"""Start edge processes (for ``up``, the demo, tests and benchmarks).

:func:`spawn_edge` runs ``python -m edge_node edge ...`` as a child process in
its own process group and returns once the edge answers ``/healthz``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import partial
from types import TracebackType

from edge_node.local.redis_server import free_port

__all__ = ["EdgeProcess", "spawn_edge", "free_port", "free_udp_port"]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """Return a UDP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EdgeProcess:
    """A running edge child process."""

    def __init__(self, proc: subprocess.Popen[bytes], edge_id: str, host: str, port: int,
                 log_path: str | None, quic_port: int | None = None, *,
                 tls: bool = False) -> None:
        self.proc = proc
        self.edge_id = edge_id
        self.host = host
        self.port = port
        self.url = f"{'wss' if tls else 'ws'}://{host}:{port}"
        self.http_url = f"{'https' if tls else 'http'}://{host}:{port}"
        self.log_path = log_path
        #: UDP port of the QUIC listener and its URL ("" when QUIC is off).
        self.quic_port = quic_port
        self.quic_url = f"quic://{host}:{quic_port}" if quic_port else ""
        #: The WebSocket URL (``url`` may be pointed at ``quic_url`` by tests).
        self.ws_url = self.url

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the edge process."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL after ``timeout``."""
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> EdgeProcess:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def last_error(log_path: str | None) -> str:
    """The last one-line error (``...: error: CAUSE``) a child printed to its log, or ""."""
    if not log_path:
        return ""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        head, sep, cause = line.partition("error: ")
        if sep and cause.strip() and not head.lstrip().startswith("{"):
            return cause.strip()
    return ""


def wait_healthy(http_url: str, proc: subprocess.Popen[bytes] | None, timeout: float, *,
                 what: str = "edge", log_path: str | None = None, ca_file: str = "") -> None:
    """Poll ``/healthz`` until it answers 200; raise ``RuntimeError`` on timeout or exit.

    The message names ``what`` and, when the child printed one to ``log_path``, its own
    one-line error (the cause: Redis unreachable, a port in use, a bad setting).  An
    ``https://`` URL is checked against ``ca_file`` (PEM; default: the system roots)."""
    context = (ssl.create_default_context(cafile=ca_file or None)
               if http_url.startswith("https://") else None)

    def failure(text: str) -> RuntimeError:
        cause = last_error(log_path)
        return RuntimeError(f"{what} {text}" + (f": {cause}" if cause else "")
                            + (f" (log: {log_path})" if log_path else ""))

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise failure(f"exited with code {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(http_url + "/healthz", timeout=0.5,
                                        context=context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise failure(f"at {http_url} not healthy after {timeout:.0f} s")


def spawn_edge(
    *,
    port: int = 0,
    redis_url: str = "",
    secret: bytes | None = None,
    edge_id: str = "edge-1",
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_path: str | None = None,
    timeout: float = 15.0,
    quic: bool = False,
    quic_port: int = 0,
    quic_cert: str = "",
    quic_key: str = "",
    nofile: tuple[int, int] | None = None,
    tls_cert: str = "",
    tls_key: str = "",
) -> EdgeProcess:
    """Start one edge process and wait until it is healthy.

    ``quic=True`` also listens for QUIC on UDP ``quic_port`` (0: a free one),
    with ``quic_cert`` and ``quic_key`` if given, else a development certificate.
    ``tls_cert`` (and ``tls_key``) serve ``wss://`` with that pair; the edge's URLs
    become ``wss://`` and ``https://`` and its health is checked trusting ``tls_cert``
    (a self-signed development certificate is its own CA).  ``nofile`` starts it with
    that (soft, hard) open-file limit.
    """
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "edge_node", "edge", "--host", host, "--port", str(port),
           "--edge-id", edge_id, *extra_args]
    udp_port = (quic_port or free_udp_port(host)) if quic else None
    if udp_port is not None:
        cmd += ["--quic-port", str(udp_port)]
        if quic_cert:
            cmd += ["--quic-cert", quic_cert, "--quic-key", quic_key or quic_cert]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    if tls_cert:
        cmd += ["--tls-cert", tls_cert, "--tls-key", tls_key or tls_cert]
    child_env = dict(os.environ if env is None else env)
    if secret is not None:
        child_env["EDGE_RELAY_SECRET"] = secret.decode()
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=child_env,
            start_new_session=True,
            preexec_fn=None if nofile is None else partial(
                resource.setrlimit, resource.RLIMIT_NOFILE, nofile))
    finally:
        if log_path and not isinstance(out, int):
            out.close()
    edge = EdgeProcess(proc, edge_id, host, port, log_path, udp_port, tls=bool(tls_cert))
    try:
        wait_healthy(edge.http_url, proc, timeout, what=f"edge {edge_id}", log_path=log_path,
                     ca_file=tls_cert)
    except BaseException:
        edge.kill()
        raise
    return edge
