"""Webhooks end to end: a real Redis server, a real origin worker (in this process),
and a real HTTP receiver on 127.0.0.1 started by the test.

Events enter as the edges send them (an uplink batch XADDed to the uplink stream);
the worker applies them, queues them on the hooks stream and POSTs them.  Cases:
a signed delivery the receiver verifies with the documented recipe; 500 then 200
(retried, delivered once); always 500 (dead-lettered after the bounded attempts, the
breaker opens, both visible in the origin API's /metrics); the receiver down then
up; a worker stopped with a delivery pending (another worker delivers it).

Nothing waits on machine speed: every wait is "until this is true", bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from edge_node.local.redis_server import RedisServer, start_redis
from edge_node.uplink.wire import pack_batch, pack_entry, shard_of, stream_key
from origin.hooks.record import STATS_KEY, dead_stream, hooks_stream
from origin.hooks.retry import RetryPolicy
from origin.hooks.runner import HookSettings
from origin.hooks.setup import HookConfig
from origin.settings import OriginSettings
from origin.webhooks.config import WebhookSettings
from origin.worker import Worker

pytestmark = pytest.mark.timeout(90)

SHARDS = 2
SECRET = b"whsec-0123456789abcdef"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with start_redis() as s:
        yield s


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    await c.flushall()  # counters and streams are global: each test starts clean
    yield c
    await c.aclose()


# -- a real HTTP receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    """Answers POSTs with ``statuses`` in turn (then ``default``); records them."""

    statuses: list[int] = field(default_factory=list)
    default: int = 200
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip()
                       for h in head[1:] if ":" in h}
            body = await reader.readexactly(int(headers["content-length"]))
            status = self.statuses.pop(0) if self.statuses else self.default
            self.requests.append((headers, body, status))
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=t0p"

    def delivered(self) -> list[tuple[dict[str, str], bytes, int]]:
        return [x for x in self.requests if 200 <= x[2] < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rc = Receiver()
    await rc.start()
    yield rc
    await rc.stop()


# -- driving a worker -------------------------------------------------------------------


def hook_config(url: str, *, attempts: int = 5, breaker_failures: int = 100,
                cooldown: float = 0.3, claim_idle_ms: int = 60_000) -> HookConfig:
    wh = WebhookSettings((("alert", url),), (SECRET,), timeout=5.0,
                         retry=RetryPolicy(attempts, base=0.05, cap=0.3, max_elapsed=30.0),
                         breaker_failures=breaker_failures, breaker_cooldown=cooldown)
    return HookConfig((), wh, HookSettings(claim_interval=0.2, block_ms=100,
                                           claim_idle_ms=claim_idle_ms))


@contextlib.asynccontextmanager
async def running(url: str, hooks: HookConfig, consumer: str = "w-1"
                  ) -> AsyncIterator[Worker]:
    s = OriginSettings(redis_url=url, shards=SHARDS, block_ms=100, claim_interval=0.2)
    w = Worker(s, consumer, hooks)
    stop = asyncio.Event()
    task = asyncio.ensure_future(w.run(stop))
    try:
        yield w
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def send(r: aioredis.Redis, key: str, *bodies: Any, kind: str = "alert",
               seq0: int = 1, edge: str = "edge-t") -> list[str]:
    """XADD one uplink batch (as an edge does); returns the event ids."""
    packed = [pack_entry(seq0 + i, kind, key, int(time.time() * 1000), b)
              for i, b in enumerate(bodies)]
    await r.xadd(stream_key(shard_of(key, SHARDS)), pack_batch(edge, packed))  # type: ignore[arg-type]
    return [f"{edge}:{seq0 + i}" for i in range(len(bodies))]


async def until(pred: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settled(r: aioredis.Redis) -> bool:
    """Every hooks stream empty (each event acknowledged and deleted)."""
    lens = [await r.xlen(hooks_stream(i)) for i in range(SHARDS)]
    return sum(lens) == 0


def verify(body: bytes, header: str, secret: bytes, now: float) -> bool:
    """The receiver's recipe from docs/webhooks.md, as a receiver would write it."""
    parts = dict(p.split("=", 1) for p in header.split(",") if p.startswith("t="))
    sigs = [p[3:] for p in header.split(",") if p.startswith("v1=")]
    t = int(parts["t"])
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(now - t) <= 300 and any(hmac.compare_digest(mac, s) for s in sigs)


# -- the cases --------------------------------------------------------------------------


async def test_delivery_is_signed_and_carries_the_event_id(
        server: RedisServer, r: aioredis.Redis, receiver: Receiver) -> None:
    async with running(server.url, hook_config(receiver.url)):
        ids = await send(r, "dev-1", {"metric": "temp", "value": 99.5, "ts": 1})
        await send(r, "room-1", {"x": 1}, kind="room_event", seq0=10)  # no webhook
        await until(lambda: _n(receiver.delivered, 1), "the delivery")
        await until(lambda: settled(r), "the hooks stream to drain")
    headers, body, _ = receiver.delivered()[0]
    assert verify(body, headers["x-edge-relay-signature"], SECRET, time.time())
    assert not verify(body, headers["x-edge-relay-signature"], b"wrong-secret-000000",
                      time.time())
    assert headers["x-edge-relay-event-id"] == ids[0]
    assert headers["x-edge-relay-event-kind"] == "alert"
    assert headers["x-edge-relay-attempt"] == "1"
    doc = json.loads(body)
    assert doc["id"] == ids[0] and doc["kind"] == "alert" and doc["key"] == "dev-1"
    assert doc["body"]["value"] == 99.5 and doc["edge"] == "edge-t"
    assert len(receiver.requests) == 1  # the room_event had no webhook
    assert int(await r.hget(STATS_KEY, "wh:ok:alert") or 0) == 1


async def _n(get: Any, n: int) -> bool:
    return len(get()) >= n


async def test_500_then_200_is_retried_and_delivered_once(
        server: RedisServer, r: aioredis.Redis, receiver: Receiver) -> None:
    receiver.statuses = [500]
    async with running(server.url, hook_config(receiver.url)):
        ids = await send(r, "dev-2", {"metric": "m", "ts": 2})
        await until(lambda: _n(receiver.delivered, 1), "the retried delivery")
        await until(lambda: settled(r), "the hooks stream to drain")
        await asyncio.sleep(0.3)  # a second delivery would have to come now: none does
    assert [s for _h, _b, s in receiver.requests] == [500, 200]
    assert [h["x-edge-relay-event-id"] for h, _b, _s in receiver.requests] == ids * 2
    assert [h["x-edge-relay-attempt"] for h, _b, _s in receiver.requests] == ["1", "2"]
    assert len(receiver.delivered()) == 1
    assert await r.xlen(dead_stream(shard_of("dev-2", SHARDS))) == 0


async def test_always_failing_is_dead_lettered_and_the_breaker_opens(
        server: RedisServer, r: aioredis.Redis, receiver: Receiver,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from edge_node.local.origin_api import spawn_api
    from tests.helpers import http_get

    receiver.default = 503
    # Breaker: opens at the 3rd consecutive failure, cool-down far beyond the jobs'
    # time bound: the remaining events are dead-lettered without another request.
    cfg = hook_config(receiver.url, attempts=3, breaker_failures=3, cooldown=600.0)
    async with running(server.url, cfg):
        await send(r, "dev-3", {"metric": "a", "ts": 3})
        await until(lambda: _dead(r, "dev-3", 1), "the first dead letter")
        await send(r, "dev-3", {"metric": "b", "ts": 4}, seq0=2)
        await until(lambda: _dead(r, "dev-3", 2), "the second dead letter")
        await until(lambda: settled(r), "the hooks stream to drain")
        await asyncio.sleep(0.5)  # stats flushed every 0.2 s
    assert len(receiver.requests) == 3  # the second event never reached the URL
    entries: Any = await r.xrange(dead_stream(shard_of("dev-3", SHARDS)))
    first = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert first["event"] == "edge-t:1" and first["kind"] == "alert"
    assert first["target"] == f"url:{receiver.url}" and first["attempts"] == "3"
    assert first["reason"] == "attempts" and "HTTP 503" in first["error"]
    assert json.loads(first["body"]) == {"metric": "a", "ts": 3}
    second = {k.decode(): v.decode() for k, v in entries[1][1].items()}
    assert second["attempts"] == "0" and second["reason"] == "elapsed"
    assert "breaker open" in second["error"]

    log = tmp_path_factory.mktemp("origin") / "api.log"
    api = spawn_api(server.url, "--shards", str(SHARDS), env={"ORIGIN_API_KEYS": "k1"},
                    log_path=str(log))
    try:
        status, _ct, text = await http_get(f"{api.http_url}/metrics", {"X-API-Key": "k1"})
    finally:
        api.stop()
    assert status == 200
    m = text.decode()
    url = f"http://127.0.0.1:{receiver.port}/hook"  # query string not shown
    assert f'origin_webhook_breaker_state{{consumer="w-1",url="{url}"}} 2.0' in m
    assert 'origin_webhook_deliveries_total{kind="alert",outcome="dead_lettered"} 2.0' in m
    assert 'origin_webhook_deliveries_total{kind="alert",outcome="failed"} 3.0' in m
    assert 'origin_webhook_delivery_seconds_count{kind="alert"} 3.0' in m
    assert f'origin_hooks_dead_letter_length{{shard="{shard_of("dev-3", SHARDS)}"}} 2.0' in m
    assert "t0p" not in m


async def _dead(r: aioredis.Redis, key: str, n: int) -> bool:
    return int(await r.xlen(dead_stream(shard_of(key, SHARDS)))) >= n


async def test_receiver_down_then_up(server: RedisServer, r: aioredis.Redis,
                                     receiver: Receiver) -> None:
    await receiver.stop()  # nothing listens on its port now
    cfg = hook_config(receiver.url, attempts=50, breaker_failures=2, cooldown=0.2)
    async with running(server.url, cfg):
        ids = await send(r, "dev-4", {"metric": "c", "ts": 5})

        async def failed_twice() -> bool:
            return int(await r.hget(STATS_KEY, "wh:failed:alert") or 0) >= 2

        await until(failed_twice, "two refused attempts")
        await receiver.start()  # same port
        await until(lambda: _n(receiver.delivered, 1), "the delivery once it is up")
        await until(lambda: settled(r), "the hooks stream to drain")
    assert [h["x-edge-relay-event-id"] for h, _b, _s in receiver.requests] == ids
    assert await r.xlen(dead_stream(shard_of("dev-4", SHARDS))) == 0


async def test_a_delivery_pending_when_its_worker_stops_is_delivered_by_another(
        server: RedisServer, r: aioredis.Redis, receiver: Receiver) -> None:
    receiver.default = 500
    cfg = hook_config(receiver.url, attempts=50, claim_idle_ms=500)
    async with running(server.url, cfg, consumer="w-a"):
        ids = await send(r, "dev-5", {"metric": "d", "ts": 6})
        await until(lambda: _n(lambda: receiver.requests, 1), "a first (failed) attempt")
    # w-a stopped with the event unacknowledged: it is still pending in Redis.
    pending: Any = await r.xpending(hooks_stream(shard_of("dev-5", SHARDS)), "hooks")
    assert pending["pending"] == 1
    receiver.default = 200
    async with running(server.url, cfg, consumer="w-b"):
        await until(lambda: _n(receiver.delivered, 1), "w-b to claim and deliver it")
        await until(lambda: settled(r), "the hooks stream to drain")
    assert receiver.delivered()[0][0]["x-edge-relay-event-id"] == ids[0]
    assert len(receiver.delivered()) == 1
