"""Start and stop the servers under test: the baseline and our edge.

A :class:`TargetSpec` is what the load processes need to reach a server (it is
pickled to them); a :class:`RunningTarget` is what the parent holds to sample and
stop it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from bench.errors import BenchError, BenchFailure
from bench.procstats import stop_process

#: ``edge-local`` is our edge without Redis (no history, no durability): it shows
#: what the durability path costs next to ``edge`` in the same run.
#: ``baseline-default`` is the baseline with websockets' default settings
#: (compression on) on the standard asyncio loop.  ``nats`` is the NATS server (Go)
#: with its WebSocket listener: a compiled broker side by side (:mod:`bench.nats_target`).
TARGETS = ("baseline", "edge", "edge-local", "baseline-default", "nats")
#: HMAC secret of the throw-away edge the benchmark starts.
BENCH_SECRET = b"edge-relay-bench-secret-not-for-production"
ROOM = "bench-room"
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class TargetSpec:
    """How a load process reaches a server under test."""

    kind: str  # a name of TARGETS
    url: str
    secret: bytes = BENCH_SECRET
    room: str = ROOM
    #: Edge targets started with QUIC: its ``quic://`` URL and the CA file of its certificate.
    quic_url: str = ""
    ca_file: str = ""


@dataclass
class RunningTarget:
    """A started server: its pid (sampled for CPU and RSS) and helper processes."""

    spec: TargetSpec
    pid: int
    #: Other processes the target needs (the edge's Redis), by role.
    helper_pids: dict[str, int] = field(default_factory=dict)
    _stoppers: list[_Stopper] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server and its helpers; safe to call twice."""
        while self._stoppers:
            stopper = self._stoppers.pop()
            with contextlib.suppress(Exception):
                stopper.stop()


class _Stopper(Protocol):
    def stop(self) -> None: ...


class _EdgeHandle(Protocol):
    pid: int
    url: str
    quic_url: str

    def stop(self) -> None: ...


class _RedisHandle(Protocol):
    pid: int
    url: str

    def stop(self) -> None: ...


def start_target(kind: str, edge_args: tuple[str, ...] = (), quic: bool = False) -> RunningTarget:
    """Start a fresh server of ``kind`` on a free loopback port and wait until it serves.

    ``edge_args`` are extra command-line options for the edge targets; ``quic`` also
    opens the edge's QUIC listener (with a throw-away certificate).  The other targets
    ignore ``edge_args`` and refuse ``quic``.
    """
    if quic:
        _check_quic(kind)
    if kind == "baseline":
        return _start_baseline()
    if kind == "baseline-default":
        return _start_baseline(defaults=True)
    if kind == "edge":
        return _start_edge(edge_args=edge_args, quic=quic)
    if kind == "edge-local":
        return _start_edge(with_redis=False, edge_args=edge_args, quic=quic)
    if kind == "edge-tls":  # bench.tls_target: brought in by --tls, not in TARGETS
        return _start_edge(edge_args=edge_args, tls=True)
    if kind == "nats":
        return _start_nats()
    raise BenchError(f"unknown target {kind!r} (choose from {', '.join(TARGETS)})")


def _spawn_tls(target: RunningTarget, redis: _RedisHandle | None, edge_args: tuple[str, ...],
               env: dict[str, str], log_path: str) -> RunningTarget:
    from bench.tls_target import spawn_tls_edge

    cert_dir = tempfile.mkdtemp(prefix="bench-edge-cert-")
    target._stoppers.append(_RemoveTree(cert_dir))
    launch = importlib.import_module("edge_node.local.launch")
    try:
        edge = spawn_tls_edge(launch.free_port(), redis.url if redis else "", BENCH_SECRET,
                              cert_dir, edge_args, env, log_path)
    except Exception as exc:
        target.stop()
        raise BenchFailure(f"could not start the TLS edge: {exc}") from exc
    target._stoppers.append(edge)
    target.spec = TargetSpec("edge-tls", edge.url, ca_file=edge.ca_file)
    target.pid = edge.pid
    return target


def _check_quic(kind: str) -> None:
    if kind not in ("edge", "edge-local"):
        raise BenchError(f"the {kind} target has no QUIC listener: QUIC transports need "
                         "--target edge or edge-local")


def check_available(kind: str, quic: bool = False) -> None:
    """Raise :class:`BenchError` if ``kind`` cannot be started in this installation
    (or, with ``quic``, has no QUIC listener)."""
    if quic:
        _check_quic(kind)
    if kind == "nats":
        from bench.nats_target import nats_binary

        nats_binary()
        return
    if kind not in ("edge", "edge-local", "edge-tls"):
        return
    for module in ("client_sdk", "edge_node.local.launch", "edge_node.local.redis_server"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BenchError(
                f"the edge target needs {module}, which cannot be imported ({exc}); "
                "use --target baseline"
            ) from exc
    sdk = importlib.import_module("client_sdk")
    if not hasattr(sdk, "connect"):
        raise BenchError("client_sdk.connect is missing; use --target baseline")


class _BaselineProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: str) -> None:
        self.proc = proc
        self.log_path = log_path

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


class _RemoveFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class _RemoveTree:
    def __init__(self, path: str) -> None:
        self.path = path

    def stop(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    """Our environment, with this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_repo_root(), env.get("PYTHONPATH", "")) if p
    )
    return env


def _start_baseline(defaults: bool = False) -> RunningTarget:
    env = _child_env()
    extra = ["--defaults"] if defaults else []
    log_fd, log_path = tempfile.mkstemp(prefix="bench-baseline-", suffix=".log")
    with os.fdopen(log_fd, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline_server", "--host", "127.0.0.1", "--port", "0",
             *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
    handle = _BaselineProcess(proc, log_path)
    try:
        port = _wait_ready(proc, log_path)
    except BaseException:
        handle.stop()
        raise
    spec = TargetSpec("baseline-default" if defaults else "baseline", f"ws://127.0.0.1:{port}")
    return RunningTarget(spec, proc.pid, {}, [handle])


def _start_nats() -> RunningTarget:
    from bench.nats_target import start_nats

    nats = start_nats()
    return RunningTarget(TargetSpec("nats", nats.url), nats.pid, {}, [nats])


def _wait_ready(proc: subprocess.Popen[bytes], log_path: str) -> int:
    """Read the server's stdout until ``READY port=P``; return P."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.1):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("READY port="):
                    return int(line.split("=", 1)[1])
    tail = Path(log_path).read_text(errors="replace")[-800:]
    raise BenchFailure(f"baseline server did not become ready: {tail.strip() or 'no output'}")


def _start_edge(with_redis: bool = True, edge_args: tuple[str, ...] = (),
                quic: bool = False, tls: bool = False) -> RunningTarget:
    kind = "edge-tls" if tls else "edge" if with_redis else "edge-local"
    check_available(kind)
    redis_mod = importlib.import_module("edge_node.local.redis_server")
    launch = importlib.import_module("edge_node.local.launch")
    redis: _RedisHandle | None = None
    if with_redis:
        try:
            redis = cast(_RedisHandle, redis_mod.start_redis())
        except Exception as exc:
            raise BenchFailure(f"could not start the embedded Redis: {exc}") from exc
    target = RunningTarget(TargetSpec(kind, ""), 0, {"redis": redis.pid} if redis else {},
                           [redis] if redis else [])
    log_fd, log_path = tempfile.mkstemp(prefix="bench-edge-", suffix=".log")
    os.close(log_fd)
    target._stoppers.append(_RemoveFile(log_path))
    env = _child_env()
    cert = key = ""
    if tls:
        return _spawn_tls(target, redis, edge_args, env, log_path)
    if quic:
        from edge_node.transports.quic.tls import write_self_signed

        cert_dir = tempfile.mkdtemp(prefix="bench-edge-cert-")
        target._stoppers.append(_RemoveTree(cert_dir))
        cert, key = os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem")
        write_self_signed(cert, key)
    try:
        edge = cast(
            _EdgeHandle,
            launch.spawn_edge(
                port=launch.free_port(),
                redis_url=redis.url if redis else "",
                secret=BENCH_SECRET,
                edge_id="bench-edge",
                extra_args=edge_args,
                env=env,
                log_path=log_path,
                quic=quic,
                quic_cert=cert,
                quic_key=key,
            ),
        )
    except Exception as exc:
        tail = Path(log_path).read_text(errors="replace")[-800:].strip()
        target.stop()
        raise BenchFailure(f"could not start the edge: {exc}\n{tail}") from exc
    target._stoppers.append(edge)
    target.spec = TargetSpec(kind, edge.url, quic_url=edge.quic_url if quic else "",
                             ca_file=cert)
    target.pid = edge.pid
    return target
