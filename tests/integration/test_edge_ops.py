"""The operations surface of a real edge: ``/metrics`` and ``/healthz`` on the
WebSocket port, the room streams and the edge registry in the real Redis server,
and stopping on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from client_sdk import ClientClosedError, ForbiddenError
from client_sdk.protocol import PROTOCOL_VERSION, Hello, encode
from edge_node.redis_io import keys as K
from tests.helpers import eventually, http_get, uid


async def scrape(edge: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample_name: {sorted label items: value}}`` from the edge's /metrics."""
    status, _, body = await http_get(edge.http_url + "/metrics")
    assert status == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out






@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url)
    yield r
    await r.aclose()


# -- /healthz and /metrics ---------------------------------------------------


async def test_healthz_and_metrics(edge_factory, clients, token) -> None:
    edge = edge_factory(uid("ops"))
    status, ctype, body = await http_get(edge.http_url + "/healthz")
    assert (status, ctype) == (200, "application/json")
    health = json.loads(body)
    assert (health["status"], health["edge_id"], health["connections"]) == (
        "ok", edge.edge_id, 0)

    status, ctype, body = await http_get(edge.http_url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    text = body.decode()
    for type_line in ("# TYPE edge_connections gauge",
                      "# TYPE edge_messages_out_total counter",
                      "# TYPE edge_fanout_seconds histogram",
                      "# TYPE edge_errors_total counter"):
        assert type_line in text.splitlines(), f"missing {type_line!r}"
    m = await scrape(edge)
    assert m["edge_connections"][()] == 0

    # Traffic: two members, one publish delivered to both, one refused join.
    room = uid("metrics")
    a = await clients(edge.url, token("a", rooms=["metrics-*"]))
    b = await clients(edge.url, token("b"))
    sa, sb = await a.join(room), await b.join(room)
    await a.publish(room, b"hello")
    assert (await sa.get(5)).payload == (await sb.get(5)).payload == b"hello"
    with pytest.raises(ForbiddenError):
        await a.join("not-allowed")

    m = await scrape(edge)
    assert m["edge_connections"][()] == 2
    assert m["edge_messages_out_total"][()] >= 2
    assert m["edge_fanout_seconds_count"][()] >= 1
    buckets = m["edge_fanout_seconds_bucket"]
    assert buckets[(("le", "+Inf"),)] == m["edge_fanout_seconds_count"][()]
    assert m["edge_errors_total"][(("code", "4403"),)] >= 1
    status, _, body = await http_get(edge.http_url + "/healthz")
    assert json.loads(body)["connections"] == 2

    await a.close()
    await b.close()

    async def no_connections() -> bool:
        return (await scrape(edge))["edge_connections"][()] == 0

    await eventually(no_connections, what="edge_connections back to 0")
    # Query strings are ignored.
    status, _, _ = await http_get(edge.http_url + "/metrics?format=text")
    assert status == 200


async def test_http_unknown_paths_are_404(edge) -> None:
    for path in ("/", "/nope", "/metrics/extra", "/healthz/x", "/index.html"):
        status, _, body = await http_get(edge.http_url + path)
        assert status == 404, path
        assert body, "a 404 says what is served"
    # A WebSocket upgrade on any path is still a WebSocket.
    ws = await ws_connect(edge.url + "/any/path", open_timeout=5, close_timeout=1)
    await ws.close()
    # And the edge is fine after all that.
    status, _, _ = await http_get(edge.http_url + "/healthz")
    assert status == 200


# -- Redis content -----------------------------------------------------------


async def test_room_stream_holds_reliable_messages(edge_factory, clients, token,
                                                   redis) -> None:
    edge = edge_factory(uid("stream"))
    room = uid("stream")
    c = await clients(edge.url, token("writer"))
    sub = await c.join(room)
    n = 25
    positions = []
    for i in range(n):
        pos = await c.publish(room, b"m%d" % i)
        assert pos is not None
        positions.append(pos)
        if i == n // 2:  # unreliable traffic never reaches the stream
            await c.publish(room, b"ephemeral", reliable=False)
    assert len([await sub.get(5) for _ in range(n + 1)]) == n + 1

    key = K.room_log(room)
    assert key == f"er:{{room:{room}}}:log"

    async def all_appended() -> bool:
        return await redis.xlen(key) >= n

    await eventually(all_appended, timeout=2, what=f"{n} entries in {key}")
    entries = await redis.xrange(key)
    assert [eid.decode() for eid, _ in entries] == [f"{p.epoch}-{p.seq}" for p in positions]
    for i, (_, fields) in enumerate(entries):
        sender, payload, origin = msgpack.unpackb(fields[b"d"], raw=False)[:3]
        assert (sender, payload, origin) == (c.session_id, b"m%d" % i, edge.edge_id)
    epoch = positions[0].epoch
    owner = await redis.get(K.room_owner(room))
    assert owner is not None and owner.decode() == f"{edge.edge_id}:{epoch}"


async def test_edge_registry(edge_factory, clients, token, redis) -> None:
    edge = edge_factory(uid("reg"))

    async def registered() -> bool:
        return await redis.zscore(K.EDGES, edge.edge_id) is not None

    await eventually(registered, timeout=3, what="the edge in er:edges")
    score = await redis.zscore(K.EDGES, edge.edge_id)
    assert score is not None and score > time.time() - 10, "the heartbeat is not fresh"
    info = {k.decode(): v.decode() for k, v in
            (await redis.hgetall(K.edge_info(edge.edge_id))).items()}
    assert K.edge_info(edge.edge_id) == f"er:{{edge:{edge.edge_id}}}:info"
    assert info["id"] == edge.edge_id
    assert info["url"] == edge.url
    assert int(info["pid"]) == edge.pid
    ttl = await redis.pttl(K.edge_info(edge.edge_id))
    assert 0 < ttl <= 10_000, "the info hash must expire without heartbeats"

    # The heartbeat carries the load.
    c = await clients(edge.url, token("load"))
    await c.join(uid("load"))

    async def load_reported() -> bool:
        raw = await redis.hget(K.edge_info(edge.edge_id), "connections")
        return raw is not None and float(raw) == 1

    await eventually(load_reported, timeout=3, what="connections=1 in the heartbeat")
    await c.close()

    # A clean stop deregisters.
    await asyncio.to_thread(edge.stop)
    assert edge.proc.returncode == 0
    assert await redis.zscore(K.EDGES, edge.edge_id) is None
    assert await redis.exists(K.edge_info(edge.edge_id)) == 0


# -- stopping ----------------------------------------------------------------


async def test_sigterm_closes_clients_with_4100(edge_factory, clients, token) -> None:
    """A stopping edge with no neighbour to hand its clients to tells them to go
    elsewhere (4100) and exits with 0.  (Without Redis it knows no neighbours; the
    handover path is tested in test_handover.py.)"""
    edge = edge_factory(uid("drain"), redis=False)
    c = await clients(edge.url, token("leaver"), reconnect=False)
    sub = await c.join(uid("drain"))
    edge.signal(signal.SIGTERM)
    with pytest.raises(ClientClosedError) as ei:  # the subscription ends with the close
        async with asyncio.timeout(5):
            async for _ in sub:
                pass
    assert ei.value.code == 4100, repr(ei.value)
    assert not c.connected
    await asyncio.to_thread(edge.proc.wait, 10)
    assert edge.proc.returncode == 0


@pytest.mark.slow
async def test_sigterm_with_unresponsive_clients_exits_cleanly(edge_factory, token) -> None:
    edge = edge_factory(uid("stuck"))
    conns = []
    for i in range(3):
        ws = await ws_connect(edge.url, compression=None, max_size=None, ping_interval=None,
                              close_timeout=1)
        await ws.send(encode(Hello(PROTOCOL_VERSION, token(f"stuck-{i}"))))
        await ws.recv()  # WELCOME
        conns.append(ws)
    # Block this event loop while the edge stops: our three clients cannot answer its
    # close frames, like peers behind a dead link.  EdgeProcess.stop() SIGTERMs, waits
    # 10 s, then SIGKILLs.
    edge.stop()
    rc = edge.proc.returncode
    for ws in conns:
        await ws.close()
    assert rc == 0, f"the edge had to be killed (exit status {rc})"
