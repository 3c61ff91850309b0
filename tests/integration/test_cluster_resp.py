"""The slot-routing append writer (edge_node.redis_io.resp_cluster) against the real cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from edge_node.local.redis_server import RedisClusterServer, free_port
from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io.resp_cluster import ClusterRespWriter
from edge_node.redis_io.resp_writer import RespConnectionError

pytestmark = pytest.mark.timeout(60)


def _writer(cluster: RedisClusterServer, **kw: object) -> ClusterRespWriter:
    seeds, _ = redis_conn.cluster_seeds(cluster.url)
    return ClusterRespWriter(seeds[:1], **kw)  # type: ignore[arg-type]


@pytest.fixture
async def r(redis_cluster: RedisClusterServer) -> AsyncIterator[aioredis.Redis]:
    redis_cluster.wait_ok()
    c = redis_conn.connect(redis_cluster.url)
    yield c
    await c.aclose()


async def test_commands_for_every_node_in_one_call_replies_in_order(
        redis_cluster: RedisClusterServer, r: aioredis.Redis) -> None:
    w = _writer(redis_cluster)
    keys = [f"t:{{rw{i}}}:s" for i in range(30)]  # spread over all three primaries
    assert len({redis_cluster.slot_owner(k) for k in keys}) == 3
    try:
        await r.delete(*keys[:1])
        replies = await w.execute([("XADD", k, "*", "n", str(i)) for i, k in enumerate(keys)]
                                  + [("LPUSH", keys[0], "x")])  # WRONGTYPE: a value, not raised
        assert all(isinstance(x, bytes) for x in replies[:-1])
        assert isinstance(replies[-1], ResponseError) and "WRONGTYPE" in str(replies[-1])
        for i, k in enumerate(keys):
            [(_id, fields)] = await r.xrange(k)
            assert fields == {b"n": str(i).encode()}
        assert w.redirects == 0
    finally:
        await w.close()
        for k in keys:
            await r.delete(k)


async def test_a_stale_slot_map_is_corrected_by_moved(
        redis_cluster: RedisClusterServer, r: aioredis.Redis) -> None:
    w = _writer(redis_cluster)
    key = "t:{moved}:k"
    try:
        await w.connect()
        right = redis_cluster.slot_owner(key)
        wrong = next(p for p in redis_cluster.ports if p != right
                     and redis_cluster.info(p, "replication")["role"] == "master")
        w._slots = [("127.0.0.1", wrong)] * len(w._slots)  # as if every slot had moved
        assert await w.execute([("SET", key, "v"), ("GET", key)]) == [b"OK", b"v"]
        assert w.redirects == 2
        assert await r.get(key) == b"v"
        # The map was re-read: the next call goes straight to the right node.
        assert await w.execute([("GET", key)]) == [b"v"]
        assert w.redirects == 2
    finally:
        await w.close()
        await r.delete(key)


async def test_wait_marks_writes_a_replica_did_not_confirm(
        redis_cluster: RedisClusterServer, r: aioredis.Redis) -> None:
    w = _writer(redis_cluster, wait_replicas=1, wait_ms=100)
    key = "t:{wait1}:k"
    primary = redis_cluster.slot_owner(key)
    other = next(k for k in (f"t:{{wait{i}}}:k" for i in range(2, 50))
                 if redis_cluster.slot_owner(k) != primary)  # on another shard
    [replica] = redis_cluster.replicas_of(primary)
    try:
        assert await w.execute([("SET", key, "1"), ("SET", other, "1")]) == [b"OK", b"OK"]
        redis_cluster.node(replica).pause()
        try:
            rep = await w.execute([("SET", key, "2"), ("SET", other, "2"), ("GET", key)])
        finally:
            redis_cluster.node(replica).resume()
        assert isinstance(rep[0], ResponseError) and str(rep[0]).startswith("UNREPLICATED")
        assert isinstance(rep[2], ResponseError)  # the whole node's group: not confirmed
        assert rep[1] == b"OK"  # the other shard's replica confirmed
        assert await r.get(key) == b"2"  # it ran on the primary all the same
        assert w.unreplicated == 1
    finally:
        await w.close()
        await r.delete(key, other)


async def test_no_reachable_node_is_connection_trouble() -> None:
    w = ClusterRespWriter([("127.0.0.1", free_port())], connect_timeout=0.5)
    with pytest.raises(RespConnectionError, match="no cluster node answered"):
        await w.execute([("GET", "k")])
    await w.close()
    with pytest.raises(RespConnectionError, match="closed"):
        await w.execute([("GET", "k")])
