"""A Redis Cluster primary killed mid-run (SIGKILL): its replica is promoted, nothing
acknowledged as durable is lost, and where asynchronous replication did lose
acknowledged entries (``WAIT`` turned off) the loss is detected and reported.

Each test restarts the killed node afterwards (it rejoins as a replica), so the
session cluster is whole again for the next test.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client_sdk import connect
from edge_node.local.launch import spawn_edge
from edge_node.local.redis_server import RedisClusterServer
from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as redis_keys
from edge_node.store import history
from edge_node.store.redis_sync import RoomSync
from tests.helpers import PAIR as _P
from tests.helpers import SECRET, Recorder, http_get
from tests.helpers import wait_until as _wait

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    """Edges of this module talk to the session cluster."""
    return redis_cluster_url


def _replicated(cluster: RedisClusterServer, primary: int) -> bool:
    """True when every replica of ``primary`` has caught up with its offset."""
    info = cluster.info(primary, "replication")
    offset = int(info["master_repl_offset"])
    for k, v in info.items():
        if k.startswith("slave") and k[5:].isdigit():
            f = dict(x.split("=", 1) for x in v.split(",") if "=" in x)
            if int(f["offset"]) < offset:
                return False
    return True


async def test_primary_killed_mid_run_loses_nothing_acknowledged(
        edge_factory: Callable[..., Any], token: Callable[..., str],
        redis_cluster: RedisClusterServer) -> None:
    room = "ck1"
    key = redis_keys.room_log(room)
    a, b = edge_factory("edge-k1"), edge_factory("edge-k2")
    first = await connect(a.url, token("first"))
    await first.join(room)  # edge-k1 owns the room
    pub = await connect([a.url, b.url], token("pub"), backoff_base=0.05)
    await pub.join(room)
    subs, recs = [], []
    for i, url in enumerate([a.url, b.url]):
        c = await connect([url], token(f"s{i}"), backoff_base=0.05)
        rec = Recorder()
        await c.join(room, on_message=rec)
        subs.append(c)
        recs.append(rec)
    per = 120
    acked: dict[int, Any] = {}
    killed = 0
    try:
        async def run() -> None:
            futs = []
            for n in range(1, per + 1):
                futs.append((n, pub.publish_nowait(room, _P.pack(0, n))))
                await asyncio.sleep(0.02)
            for n, f in futs:
                acked[n] = await asyncio.wait_for(f, 60)

        task = asyncio.create_task(run())
        await asyncio.sleep(0.5)
        killed = redis_cluster.kill_primary_of(key)
        t0 = time.monotonic()
        promoted = await asyncio.to_thread(redis_cluster.wait_failover, key, killed)
        failover_s = time.monotonic() - t0
        # The kubelet would restart it: it comes back as the new primary's replica, and
        # acks (which wait for one replica) flow again.
        await asyncio.to_thread(redis_cluster.restart, killed)
        await task
        assert promoted != killed and failover_s < 20
        assert len(acked) == per
        r = redis_conn.connect(redis_cluster.url)
        try:
            stored = {(e.epoch, e.seq): e.payload
                      for e in await history.range_after(r, room, 0, 0, 100_000)}
            lost_ranges = await r.hgetall(redis_keys.room_lost(room))
        finally:
            await r.aclose()
        for n, pos in acked.items():
            assert stored.get((pos.epoch, pos.seq)) == _P.pack(0, n), f"acked #{n} lost"
        assert lost_ranges == {}
        expect = {(0, n) for n in range(1, per + 1)}
        for rec in recs:
            await _wait(lambda r=rec: set(r.seen) >= expect, 20, "all messages")
            assert len(rec.seen) == len(set(rec.seen)), "duplicates delivered"
            assert [n for _, n in rec.seen] == sorted(n for _, n in rec.seen)
        for c in subs:
            assert all(ev.recovered for ev in c.recoveries)
        # Live traffic (pub/sub between the edges) works after the failover too.
        for k in range(100):
            await pub.publish(room, _P.pack(9, k), reliable=False)
            if any(p == 9 for p, _ in recs[1].seen):
                break
            await asyncio.sleep(0.1)
        assert any(p == 9 for p, _ in recs[1].seen), "unreliable traffic did not come back"
    finally:
        for c in [first, pub, *subs]:
            await c.close()
        if killed:
            await asyncio.to_thread(redis_cluster.restart, killed)


class _Quiet:
    """A listener for a RoomSync used only to read history."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


async def test_unreplicated_loss_is_detected_and_reported(
        token: Callable[..., str], redis_cluster: RedisClusterServer, tmp_path: Path) -> None:
    """With ``REDIS_WAIT_REPLICAS=0`` an ack does not wait for the replica.  Cut the
    replica off (SIGSTOP), publish, kill the primary, let the stale replica be promoted:
    the owner edge finds the stream behind what Redis confirmed, records the lost range,
    and continues in a new epoch; a resume from before the loss is refused
    (``recovered: false``), one from after it is served."""
    room = "ck2"
    key = redis_keys.room_log(room)
    env = dict(os.environ, REDIS_WAIT_REPLICAS="0")
    edge = spawn_edge(redis_url=redis_cluster.url, secret=SECRET, edge_id="edge-l1", env=env,
                      log_path=str(tmp_path / "l1.log"))
    pub = await connect(edge.url, token("pub"), backoff_base=0.05)
    killed = 0
    sync = RoomSync(redis_cluster.url, "probe", _Quiet(), lease_ms=2000, stream_maxlen=1000,
                    append_batch=100, stats=None)
    try:
        await pub.join(room)
        p1 = await pub.publish(room, b"m1")
        assert p1 is not None
        primary = redis_cluster.slot_owner(key)
        [replica] = redis_cluster.replicas_of(primary)
        await _wait(lambda: _replicated(redis_cluster, primary), 10, "m1 on the replica")
        # Cut the replica off: stopped, and its link closed by the primary (otherwise
        # the writes would wait in its socket buffer and arrive after SIGCONT).
        redis_cluster.node(replica).pause()
        redis_cluster.drop_replicas(primary)
        try:
            lost = [await pub.publish(room, b"m%d" % i) for i in range(2, 6)]
            killed = primary
            redis_cluster.kill(primary)
        finally:
            redis_cluster.node(replica).resume()
        assert all(p is not None for p in lost)
        await asyncio.to_thread(redis_cluster.wait_failover, key, killed)
        p6 = await pub.publish(room, b"m6", timeout=30)
        assert p6 is not None and p6.epoch > p1.epoch
        upto = lost[-1]
        assert await sync.r.hgetall(redis_keys.room_lost(room)) == {
            f"{p1.epoch}-{p1.seq}".encode(): f"{upto.epoch}-{upto.seq}".encode()}
        _, gap, _ = await sync.history_after(room, p1.epoch, p1.seq, 100)
        assert gap, "a resume across the lost range must be answered recovered: false"
        entries, gap, _ = await sync.history_after(room, upto.epoch, upto.seq, 100)
        assert not gap and [e.payload for e in entries] == [b"m6"]
        log = (tmp_path / "l1.log").read_text()
        assert "acknowledged entries lost" in log
        status, _, body = await http_get(edge.http_url + "/metrics")
        assert status == 200 and "edge_stream_lost_total 1.0" in body.decode()
    finally:
        await pub.close()
        edge.stop()
        await sync.r.aclose()
        await sync.blocking.aclose()
        if killed:
            await asyncio.to_thread(redis_cluster.restart, killed)
