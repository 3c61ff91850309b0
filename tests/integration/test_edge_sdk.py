"""The Python SDK against real edge processes: URL failover on connect, automatic
reconnect after the edge restarts on the same port, and what the positions of a
room look like afterwards.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from client_sdk import ConnectError, connect
from edge_node.local.launch import EdgeProcess, free_port, spawn_edge
from edge_node.redis_io import keys as K
from tests.helpers import SECRET, eventually, uid


@pytest.fixture
async def respawn(redis_url: str, tmp_path: Any) -> AsyncIterator[Any]:
    """``await respawn(old_edge)``: a new edge process on the old one's port and id.

    Stopped from a thread so that connected clients can answer its close frames.
    """
    started: list[EdgeProcess] = []

    async def make(old: EdgeProcess) -> EdgeProcess:
        e = await asyncio.to_thread(
            spawn_edge, port=old.port, redis_url=redis_url, secret=SECRET,
            edge_id=old.edge_id, log_path=str(tmp_path / f"{old.edge_id}-respawned.log"))
        started.append(e)
        return e

    yield make
    for e in started:
        await asyncio.to_thread(e.stop)




async def test_connect_walks_the_url_list(edge, clients, token) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    c = await clients([dead, edge.url], token("walker"))
    assert (c.url, c.edge_id, c.connected) == (edge.url, edge.edge_id, True)
    assert c.session_id and c.server_info["max_frame_bytes"] == 64 * 1024


async def test_connect_with_no_reachable_edge_raises_connect_error(token) -> None:
    urls = [f"ws://127.0.0.1:{free_port()}", f"ws://127.0.0.1:{free_port()}"]
    with pytest.raises(ConnectError):
        await connect(urls, token("nobody"), connect_timeout=2)


async def test_reconnects_and_rejoins_after_edge_restart(edge_factory, clients, respawn,
                                                         token) -> None:
    edge = edge_factory(uid("restart"))
    room = uid("restart")
    a = await clients(edge.url, token("alice"), backoff_base=0.05, backoff_cap=0.5)
    reconnected = asyncio.Event()
    a.on_reconnect = lambda _c: reconnected.set()
    sub = await a.join(room)
    first = await a.publish(room, b"before")
    assert first is not None and (await sub.get(5)).payload == b"before"

    await asyncio.to_thread(edge.stop)  # clients get 4100 and start reconnecting
    new = await respawn(edge)  # same port, same edge id
    await asyncio.wait_for(reconnected.wait(), 8)
    assert (a.reconnects, a.connected, a.url) == (1, True, edge.url)

    b = await clients(new.url, token("bob"))
    sb = await b.join(room)

    async def alice_is_back() -> bool:
        return {m.subject for m in await b.presence(room)} == {"alice", "bob"}

    await eventually(alice_is_back, what="alice re-joined on the new edge process")
    pos = await b.publish(room, b"after")
    assert pos is not None and (pos.epoch, pos.seq) > (first.epoch, first.seq)
    m = await sub.get(5)  # the same subscription object keeps delivering
    assert (m.payload, m.epoch, m.seq) == (b"after", pos.epoch, pos.seq)
    mine = await a.publish(room, b"again")
    assert mine is not None and (mine.epoch, mine.seq) > (pos.epoch, pos.seq)
    assert [x.payload for x in (await sb.get(5), await sb.get(5))] == [b"after", b"again"]
    assert await a.ping() > 0


async def test_positions_continue_after_crash_and_restart_with_same_id(edge_factory, clients,
                                                                       respawn, token,
                                                                       redis_url) -> None:
    """The restarted process finds the dead one's unexpired lease under its own edge
    id; it must continue the room's positions (and stream), not restart at seq 1."""
    edge = edge_factory(uid("crash"))
    room = uid("crash")
    a = await clients(edge.url, token("alice"), backoff_base=0.05, backoff_cap=0.5)
    reconnected = asyncio.Event()
    a.on_reconnect = lambda _c: reconnected.set()
    await a.join(room)
    before = [await a.publish(room, b"%d" % i) for i in range(3)]
    last = before[-1]
    assert last is not None

    await asyncio.to_thread(edge.kill)  # crash: the room lease (5 s) stays in Redis
    await respawn(edge)
    await asyncio.wait_for(reconnected.wait(), 8)
    pos = await asyncio.wait_for(a.publish(room, b"after"), 5)
    assert pos is not None
    assert (pos.epoch, pos.seq) > (last.epoch, last.seq), (
        f"position {pos} repeats one already used before the crash ({before})")
    # The room stream holds all four messages, in position order.
    r = aioredis.Redis.from_url(redis_url)
    try:
        async def four_entries() -> bool:
            return await r.xlen(K.room_log(room)) >= 4

        await eventually(four_entries, timeout=2, what="4 entries in the room stream")
        ids = [eid.decode() for eid, _ in await r.xrange(K.room_log(room))]
    finally:
        await r.aclose()
    assert ids == [f"{p.epoch}-{p.seq}" for p in (*before, pos) if p is not None]


async def test_cancelled_publish_future_leaves_no_unretrieved_exception(edge, token) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _lp, ctx: reported.append(ctx))
    try:
        room = uid("cancel")
        c = await connect(edge.url, token("impatient"))
        await c.join(room)
        fut = c.publish_nowait(room, b"x")
        assert fut is not None
        fut.cancel()  # the application gives up on this publish
        await c.close()  # before the ACK: the outbox fails what is pending
        del fut, c
        for _ in range(3):
            await asyncio.sleep(0)
            gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not reported, [ctx.get("message") for ctx in reported]
