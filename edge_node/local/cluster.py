"""A local cluster on loopback: Redis (``REDIS_URL`` or embedded), the origin (workers
and HTTP API in one process group) and N edge processes.

Used by ``edge-relay up`` and the demo.  :meth:`LocalCluster.stop` (also on
context exit) stops every process it started, whatever happened before.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import time
from types import TracebackType
from typing import Any

from edge_node.local.launch import EdgeProcess, free_port, spawn_edge
from edge_node.local.redis_server import RedisServer, RedisUnavailable, start_redis

__all__ = ["LocalCluster", "cmd_up"]


class LocalCluster:
    """Redis and edges as child processes; ``start()`` then ``stop()``."""

    def __init__(self, n_edges: int = 3, *, base_port: int = 0, secret: bytes | None = None,
                 redis_url: str | None = None, edge_args: list[str] | None = None,
                 log_dir: str | None = None, origin: bool = True,
                 origin_workers: int = 2, quic: bool = True,
                 origin_env: dict[str, str] | None = None, tls: bool = False) -> None:
        self.n_edges = n_edges
        self.base_port = base_port
        self.secret = secret or secrets.token_urlsafe(24).encode()
        self.redis_url = redis_url if redis_url is not None else os.environ.get("REDIS_URL", "")
        self.edge_args = edge_args or []
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="edge-relay-logs-")
        self.redis: RedisServer | None = None
        self.edges: list[EdgeProcess] = []
        self.with_origin = origin
        self.origin_workers = origin_workers
        #: More environment for the origin (its webhooks, say); wins over ours.
        self.origin_env = origin_env or {}
        self.origin: Any = None
        #: The origin API key: the first of ``ORIGIN_API_KEYS`` when set (all of them are
        #: accepted), else a fresh random one (printed by ``up``).
        self.api_keys = [k.strip() for k in os.environ.get("ORIGIN_API_KEYS", "").split(",")
                         if k.strip()] or [secrets.token_urlsafe(16)]
        self.api_key = self.api_keys[0]
        #: Edges also listen for QUIC, with one development certificate (CA file
        #: for clients: ``ca_file``); with ``tls`` they serve ``wss://`` with it too.
        self.quic = quic
        self.tls = tls
        self.ca_file = ""

    def start(self) -> LocalCluster:
        """Start Redis (unless a URL was given) and the edges; wait until healthy."""
        try:
            if not self.redis_url:
                self.redis = start_redis()
                self.redis_url = self.redis.url
            if self.with_origin:
                from edge_node.local.origin_api import spawn_api

                # The demand forecast samples the registry every second here (a
                # deployment uses minutes): the demo shows its recommendation.
                # (The environment may hold both variables set below: later keys win.)
                env = {"ORIGIN_FORECAST_STEP": "1", **os.environ,
                       "ORIGIN_API_KEYS": ",".join(self.api_keys),
                       "EDGE_RELAY_SECRET": self.secret.decode(), **self.origin_env}
                self.origin = spawn_api(self.redis_url, "--workers", str(self.origin_workers),
                                        command="run", env=env,
                                        log_path=os.path.join(self.log_dir, "origin.log"))
            key_file = ""
            if self.quic or self.tls:
                from edge_node.transports.quic.tls import write_self_signed

                self.ca_file = os.path.join(self.log_dir, "quic-cert.pem")
                key_file = os.path.join(self.log_dir, "quic-key.pem")
                write_self_signed(self.ca_file, key_file)
            for i in range(self.n_edges):
                port = self.base_port + i if self.base_port else free_port()
                self.edges.append(spawn_edge(
                    port=port, redis_url=self.redis_url, secret=self.secret,
                    edge_id=f"edge-{i + 1}",
                    extra_args=[*self.edge_args, "--uplink-spool",
                                os.path.join(self.log_dir, f"edge-{i + 1}.spool")],
                    log_path=os.path.join(self.log_dir, f"edge-{i + 1}.log"),
                    quic=self.quic, quic_cert=self.ca_file if self.quic else "",
                    quic_key=key_file if self.quic else "",
                    tls_cert=self.ca_file if self.tls else "",
                    tls_key=key_file if self.tls else "",
                ))
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def urls(self) -> list[str]:
        """WebSocket URLs of the edges, in order."""
        return [e.url for e in self.edges]

    @property
    def quic_urls(self) -> list[str]:
        """QUIC URLs of the edges, in order ("" for an edge without QUIC)."""
        return [e.quic_url for e in self.edges]

    def describe(self) -> dict[str, Any]:
        """Addresses and pids, for printing."""
        return {
            "redis": self.redis_url,
            "embedded_redis": self.redis is not None,
            "origin": self.origin.http_url if self.origin else None,
            "edges": [{"id": e.edge_id, "url": e.url, "pid": e.pid,
                       **({"quic_url": e.quic_url} if e.quic_url else {})}
                      for e in self.edges],
            **({"quic_ca_file": self.ca_file} if self.ca_file else {}),
            **({"ca_file": self.ca_file} if self.ca_file else {}),
            "logs": self.log_dir,
        }

    def stop(self) -> None:
        """Stop edges (SIGTERM, then SIGKILL) and the embedded Redis."""
        for e in self.edges:
            e.stop(timeout=5.0)
        if self.origin is not None:
            self.origin.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def check_startup(redis_url: str, base_port: int, n_edges: int) -> None:
    """What ``up`` can check before starting anything; :class:`UserError` naming the
    cause and the fix.  (A child's own start-up error is reported too: see
    :func:`edge_node.local.launch.wait_healthy`.)"""
    import asyncio
    import socket

    from redis.exceptions import RedisError

    from edge_node.cli import UserError
    from edge_node.redis_io import conn as redis_conn

    if redis_url:
        try:
            redis_conn.check_url(redis_url)
        except redis_conn.RedisURLError as exc:
            raise UserError(f"{exc} (REDIS_URL; unset it to use the embedded server)"
                            ) from None
        try:
            asyncio.run(redis_conn.ping(redis_url))
        except (RedisError, OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach Redis at {redis_url} (REDIS_URL): "
                            f"{exc or type(exc).__name__} (start it, or unset REDIS_URL to "
                            "use the embedded server)") from None
    for port in range(base_port, base_port + n_edges) if base_port else ():
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                raise UserError(f"port {port} is in use ({exc.strerror}): stop what listens "
                                "there or choose another --base-port") from None


def cmd_up(a: Any) -> int:
    """``edge-relay up``: run a cluster until Ctrl-C."""
    from client_sdk.protocol import mint_token
    from edge_node.cli import UserError
    from edge_node.config import DEV_SECRET, secrets_from_env

    if a.edges < 1 or a.edges > 64:
        raise UserError("--edges must be between 1 and 64")
    if a.base_port and not 0 < a.base_port <= 65536 - a.edges:
        raise UserError(f"--base-port must leave room for {a.edges} ports below 65536")
    check_startup(os.environ.get("REDIS_URL", ""), a.base_port, a.edges)
    secret = secrets_from_env(os.environ.get("EDGE_RELAY_SECRET"))[0]
    cluster = LocalCluster(a.edges, base_port=a.base_port, secret=secret,
                           tls=getattr(a, "tls", False))
    try:
        cluster.start()
    except (RedisUnavailable, RuntimeError) as exc:
        raise UserError(str(exc)) from exc
    d = cluster.describe()
    print(f"redis  {d['redis']}{'  (embedded)' if d['embedded_redis'] else ''}")
    for e in d["edges"]:
        http = e["url"].replace("wss://", "https://").replace("ws://", "http://")
        print(f"edge   {e['id']:8} {e['url']}  pid {e['pid']}  (metrics: {http}/metrics)")
    if cluster.tls:
        print(f"ca     {cluster.ca_file}  (the development certificate: clients trust it "
              "with TlsOptions(ca_file=...) or EDGE_RELAY_CA_FILE)")
    if d["origin"]:
        print(f"origin {d['origin']}  (API key: {cluster.api_key}; try {d['origin']}/docs)")
    print(f"logs   {d['logs']}")
    tok = mint_token(secret, "dev", "player", ["*"], now=time.time(), ttl=86400)
    print(f"token  {tok}")
    if os.environ.get("EDGE_RELAY_SECRET"):
        print("secret the first key of EDGE_RELAY_SECRET signs tokens")
    else:
        print(f"secret the development key {DEV_SECRET.decode()!r} signs tokens "
              "(edge_node.config.DEV_SECRET; set EDGE_RELAY_SECRET for your own)")
    print("Ctrl-C to stop.", flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
            for e in cluster.edges:
                if not e.alive():
                    print(f"edge {e.edge_id} exited (code {e.proc.returncode}); "
                          f"see {e.log_path}", file=sys.stderr)
                    stop = True
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0
