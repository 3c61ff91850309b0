"""The edge's downlink consumer against a real Redis server: pending entries read before
a crash are delivered after a restart, Redis pauses and restarts are survived (the
group is recreated), unusable entries are acknowledged and counted, delivered entries
are deleted from the stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_node.iot.downlink import GROUP, DownlinkConsumer, parse_entry
from edge_node.local.redis_server import RedisServer, find_server_binary, free_port, start_redis
from edge_node.uplink.wire import downlink_key
from tests.helpers import uid, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis server for these tests alone (they may pause or cut it)."""
    with start_redis() as s:  # stopped (and resumed first) on exit
        yield s


def cmd(device: str, cid: str, name: str = "reboot") -> dict[str, str]:
    return {"t": "command", "device": device, "id": cid,
            "body": json.dumps({"name": name, "args": {}}),
            "expires": str(time.time_ns() // 1_000_000 + 60_000)}


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, dict[str, Any], int]] = []

    def __call__(self, device: str, cid: str, body: dict[str, Any], expires: int) -> bool:
        self.got.append((device, cid, body, expires))
        return True

    def ids(self) -> list[str]:
        return [g[1] for g in self.got]


def test_parse_entry() -> None:
    f = {k.encode(): v.encode() for k, v in cmd("d", "c").items()}
    assert parse_entry(f) is not None and parse_entry(f)[:2] == ("d", "c")  # type: ignore[index]
    assert parse_entry({b"t": b"other"}) is None
    assert parse_entry({b"t": b"command", b"device": b"d"}) is None
    assert parse_entry({**f, b"body": b"{not json"}) is None


async def test_pending_entries_from_before_a_crash_are_delivered(server: RedisServer) -> None:
    edge = uid("edge")
    key = downlink_key(edge)
    r = aioredis.Redis.from_url(server.url)
    try:
        await r.xgroup_create(key, GROUP, id="0", mkstream=True)
        await r.xadd(key, cmd("d1", "c1"))  # type: ignore[arg-type]
        await r.xadd(key, cmd("d1", "c2"))  # type: ignore[arg-type]
        # The edge read them, then died before acknowledging.
        await r.xreadgroup(GROUP, edge, {key: ">"}, count=10)
        await r.xadd(key, cmd("d2", "c3"))  # type: ignore[arg-type]
        await r.xadd(key, {"t": "junk"})
        sink = Sink()
        c = DownlinkConsumer(server.url, edge, sink, block_ms=200)
        c.start()
        try:
            await wait_until(lambda: len(sink.got) == 3, 10.0, "three commands")
            assert sink.ids() == ["c1", "c2", "c3"]  # the pending ones first, in order
            await wait_until(lambda: c.bad == 1, 5.0, "the junk entry counted")

            async def settled() -> bool:
                pend: Any = await r.xpending(key, GROUP)
                return int(pend["pending"]) == 0 and int(await r.xlen(key)) == 0

            deadline = time.monotonic() + 5
            while not await settled():
                assert time.monotonic() < deadline, "entries not acked and deleted"
                await asyncio.sleep(0.05)
        finally:
            await c.stop()
    finally:
        await r.aclose()


async def test_survives_redis_pause_and_restart() -> None:
    port = free_port()
    exe = find_server_binary()

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                 "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    url = f"redis://127.0.0.1:{port}/0"
    proc = launch()
    edge = uid("edge")
    key = downlink_key(edge)
    sink = Sink()
    c = DownlinkConsumer(url, edge, sink, block_ms=200)
    r = aioredis.Redis.from_url(url, socket_timeout=2.0)
    try:

        async def add(cid: str) -> None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await r.xadd(key, cmd("d", cid))  # type: ignore[arg-type]
                    return
                except Exception:
                    assert time.monotonic() < deadline, "Redis did not come back"
                    await asyncio.sleep(0.1)

        await add("warmup")  # waits for the server to accept connections
        c.start()
        await wait_until(lambda: sink.ids() == ["warmup"], 10.0, "first command")
        os.kill(proc.pid, signal.SIGSTOP)
        await asyncio.sleep(1.5)
        os.kill(proc.pid, signal.SIGCONT)
        await add("after-pause")
        await wait_until(lambda: "after-pause" in sink.ids(), 15.0, "command after a pause")
        proc.kill()
        proc.wait()
        await asyncio.sleep(0.5)  # the consumer sees connection errors meanwhile
        proc = launch()  # empty: the stream and the group are gone
        await add("after-restart")
        await wait_until(lambda: "after-restart" in sink.ids(), 15.0,
                         "command after a restart")
        assert c.errors >= 1
        assert sink.ids().count("after-pause") == 1
    finally:
        await r.aclose()
        await c.stop()
        proc.kill()
        proc.wait()
