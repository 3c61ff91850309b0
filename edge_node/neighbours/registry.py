"""Edge registry in Redis: a heartbeat with address and load, expiring on silence.

``er:edges`` is a sorted set (edge id -> last heartbeat, Unix seconds) and
``er:{edge:ID}:info`` a hash that expires after ``heartbeat_ttl`` seconds.
An edge is live when its info hash exists; readers also drop ids whose score
is older than the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge_node.redis_io import keys as K

__all__ = ["Registry", "is_draining", "live_edges"]

log = logging.getLogger("edge_node.neighbours.registry")


class Registry:
    """Heartbeats one edge into Redis until :meth:`stop`."""

    def __init__(self, r: aioredis.Redis, edge_id: str, *, url: str, region: str,
                 interval: float, ttl: float, load: Callable[[], dict[str, float]],
                 on_control: Callable[[bytes], None] | None = None) -> None:
        self.r = r
        #: Called with an operator request the origin left for this edge (e.g.
        #: ``b"drain"``), consumed in the same round trip as the heartbeat.
        self.on_control = on_control
        self.edge_id = edge_id
        self.url = url
        self.region = region
        self.interval = interval
        self.ttl = ttl
        self.load = load
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Write one heartbeat."""
        now = time.time()
        info = {"id": self.edge_id, "url": self.url, "region": self.region,
                "pid": os.getpid(), "ts": now, **self.load()}
        pipe = self.r.pipeline(transaction=False)
        key = K.edge_info(self.edge_id)
        pipe.hset(key, mapping={k: str(v) for k, v in info.items()})
        pipe.pexpire(key, int(self.ttl * 1000))
        pipe.zadd(K.EDGES, {self.edge_id: now})
        if self.on_control is not None:
            pipe.getdel(K.edge_control(self.edge_id))
        res = await pipe.execute()
        if self.on_control is not None and res[-1]:
            self.on_control(res[-1])

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except RedisError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start heartbeating in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="registry")

    async def stop(self) -> None:
        """Stop and deregister."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError):
            await self.r.delete(K.edge_info(self.edge_id))
            await self.r.zrem(K.EDGES, self.edge_id)


def is_draining(info: dict[str, str]) -> bool:
    """Whether a registry entry (:func:`live_edges`) says its edge is draining (the
    heartbeat's ``draining`` field, "0" or "1"; absent: not draining)."""
    return str(info.get("draining", "0")) not in ("0", "0.0")


async def live_edges(r: aioredis.Redis, ttl: float = 5.0) -> list[dict[str, str]]:
    """Info of every edge whose heartbeat is younger than ``ttl`` seconds."""
    ids: Any = await r.zrangebyscore(K.EDGES, time.time() - ttl, "+inf")
    out = []
    for eid in ids:
        info: Any = await r.hgetall(K.edge_info(eid.decode()))
        if info:
            out.append({k.decode(): v.decode() for k, v in info.items()})
    return out
