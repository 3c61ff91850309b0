"""Reading rooms owned by other edges, and the live channel, on a Redis Cluster (a mixin
of :class:`~edge_node.store.redis_sync.RoomSync`).

On one server an edge reads every mirrored room with one blocking ``XREAD`` over all
their streams.  On a cluster those streams are in different slots, so the owner publishes
a ``LIVE_APPENDED`` notice on the room's live channel right after each append (same
node, same pipeline) and :meth:`ClusterReading._tail_loop` reads every mirrored room
at once when one arrives (one pipeline, one round trip per node), and every
``tail_poll`` seconds anyway, since pub/sub may drop a notice.

Pub/sub on a cluster is plain ``SUBSCRIBE`` on one primary: ``PUBLISH`` is broadcast to
every node.  When that node goes away, :meth:`ClusterReading._resubscribe` subscribes
again on another.  See docs/redis-cluster.md for the measurements behind the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from edge_node.redis_io import keys as K
from edge_node.store import history
from edge_node.store.history import split_id
from edge_node.store.types import SyncListener

__all__ = ["ClusterReading"]

log = logging.getLogger("edge_node.sync")


class ClusterReading:
    """Mixin: delivery of mirrored rooms' entries, the cluster tail loop, pub/sub
    (re)subscription.  The attributes below are RoomSync's."""

    r: aioredis.Redis
    listener: SyncListener
    stats: Any
    tail_poll: float
    pubsub: Any
    _tails: dict[str, bytes]
    _subscribed: set[str]
    _tail_wake: asyncio.Event

    def _new_pubsub(self) -> Any:
        """A pub/sub connection.  On a cluster, plain PUBLISH is broadcast to every node,
        so one subscription on any primary hears every room (see docs/redis-cluster.md)."""
        if isinstance(self.r, RedisCluster):
            nodes = self.r.get_primaries()
            if nodes:
                return self.r.pubsub(node=random.choice(nodes), ignore_subscribe_messages=True)
        return self.r.pubsub(ignore_subscribe_messages=True)


    def _deliver(self, room: str, entries: list[Any]) -> int:
        """Hand newly read entries of a mirrored room to the hub, skipping any that a
        concurrent catch-up already delivered.  Returns how many were new."""
        n = 0
        for eid, fields in entries:
            last = self._tails.get(room)
            if last is None:
                break
            if split_id(eid) <= split_id(last):
                continue
            self._tails[room] = eid
            self.stats.remote_deliveries += 1
            n += 1
            self.listener.on_remote_message(room, history.parse_entry(eid, fields))
        return n

    async def _tail_sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tail_wake.wait(), seconds)
        self._tail_wake.clear()

    async def _tail_loop(self) -> None:
        """Cluster mode: read every mirrored room's stream (one pipeline, one round trip per
        node) when an owner announces an append (``LIVE_APPENDED``), at once again while
        entries arrive, and every ``tail_poll`` s anyway (pub/sub may drop a notice)."""
        backoff = 0.1
        while True:
            rooms = list(self._tails.items())
            if not rooms:
                await self._tail_sleep(self.tail_poll)
                continue
            pipe = self.r.pipeline(transaction=False)
            for room, last in rooms:
                pipe.xread({K.room_log(room): last}, count=1000)
            try:
                res: Any = await pipe.execute(raise_on_error=False)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log.warning("stream poll failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            got = 0
            for (room, _last), reply in zip(rooms, res, strict=True):
                if isinstance(reply, Exception) or not reply:
                    continue
                for _key, entries in reply:
                    got += self._deliver(room, entries)
            if got:
                await asyncio.sleep(0)  # more may follow: read again right away
            else:
                await self._tail_sleep(self.tail_poll)


    async def _resubscribe(self) -> None:
        old, self.pubsub = self.pubsub, self._new_pubsub()
        with contextlib.suppress(Exception):
            await old.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.subscribe(K.room_live("\x00none"), *self._subscribed)

