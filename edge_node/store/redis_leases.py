"""Lease upkeep of :class:`~edge_node.store.redis_sync.RoomSync` (a mixin): renew the leases we
hold, notice an owner change or a lapsed lease of the rooms we mirror and take them over,
probe a suspect owner and steal its leases, adopt a room handed over by a draining edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from edge_node.neighbours.liveness import probe_edge
from edge_node.redis_io import keys as K
from edge_node.runtime.tasks import spawn
from edge_node.store import history
from edge_node.store.history import split_id
from edge_node.store.types import Lease, SyncListener

__all__ = ["LeaseKeeper"]

log = logging.getLogger("edge_node.sync")


class LeaseKeeper:
    """Mixin: the lease loop and take-overs.  The attributes below are RoomSync's."""

    r: aioredis.Redis
    edge_id: str
    lease_ms: int
    listener: SyncListener
    stats: Any
    _sha: dict[str, str]
    _owned: dict[str, str]
    _tails: dict[str, bytes]
    _owners: dict[str, str]
    _suspected: dict[str, float]
    _failed_over: dict[str, float]
    failover_observer: Any
    _load_scripts: Callable[[], Any]
    _script: Callable[..., Any]

    async def _lease_loop(self) -> None:
        period = self.lease_ms / 4000.0
        while True:
            await asyncio.sleep(period)
            try:
                await self._renew_and_takeover()
            except RedisError as exc:
                log.warning("lease renewal failed", extra={"error": str(exc)})
            except Exception:
                log.exception("lease loop error")

    async def _renew_and_takeover(self) -> None:
        owned = list(self._owned.items())
        mirrors = list(self._tails)
        pipe = self.r.pipeline(transaction=False)
        for room, tok in owned:
            # execute_command: redis-py's cluster pipeline blocks its evalsha() method
            # (EVALSHA itself routes by its key like any single-slot command).
            pipe.execute_command("EVALSHA", self._sha["renew"], 2, K.room_owner(room),
                                 K.room_epoch(room), tok, self.lease_ms)
        for room in mirrors:
            pipe.get(K.room_owner(room))
        if not owned and not mirrors:
            return
        try:
            res = await pipe.execute()
        except NoScriptError:
            await self._load_scripts()  # renewed on the next round, well inside the lease
            return
        for (room, tok), ok in zip(owned, res[: len(owned)], strict=True):
            if not ok and self._owned.get(room) == tok:
                del self._owned[room]
                self.listener.on_lease_lost(room)
        for room, cur in zip(mirrors, res[len(owned):], strict=True):
            if room not in self._tails:
                continue
            if cur is not None:
                owner = cur.decode().rpartition(":")[0]
                if owner != self._owners.get(room):
                    self._owners[room] = owner
                    if owner == self.edge_id:  # handed to us (drain of another edge)
                        await self._adopt(room, cur.decode())
                        continue
                    self.listener.on_owner_changed(room, owner)
                continue
            await self._takeover(room)

    def suspect(self, edge_id: str) -> None:
        """Something suggests ``edge_id`` is dead: probe it, and if it does not
        answer, steal the leases it holds on rooms we mirror (at most one probe
        per edge per second)."""
        if edge_id == self.edge_id or not edge_id:
            return
        now = time.monotonic()
        if now - self._suspected.get(edge_id, -10.0) < 1.0:
            return
        self._suspected[edge_id] = now
        spawn(self._probe_and_steal(edge_id))

    async def _probe_and_steal(self, edge_id: str) -> None:
        try:
            info: Any = await self.r.hgetall(K.edge_info(edge_id))
            url = (info.get(b"url") or b"").decode()
            if url and await probe_edge(url):
                return  # alive: its leases stand
            rooms = [r for r, owner in self._owners.items() if owner == edge_id]
            if not rooms:
                return
            log.warning("edge does not answer: taking its rooms over",
                        extra={"dead_edge": edge_id, "rooms": len(rooms)})
            for room in rooms:
                if await self._script("steal", 1, K.room_owner(room), edge_id):
                    self.stats.lease_steals += 1
                if room in self._tails:
                    await self._takeover(room)
        except RedisError as exc:
            log.warning("probe/steal failed", extra={"error": str(exc)})

    async def _adopt(self, room: str, token: str) -> None:
        """A draining owner handed us the room's lease (same epoch): read the
        stream to its end, then own the room and continue its positions."""
        tail = self._tails.get(room)
        if tail is None or not token.startswith(self.edge_id + ":"):
            return
        # One round trip: the stream's rest, then the lease (the old owner is fenced
        # since the handover, so nothing can follow what this read returns).
        pipe = self.r.pipeline(transaction=False)
        pipe.xrange(K.room_log(room), min=b"(" + tail, count=100_000)
        pipe.get(K.room_owner(room))
        entries, cur = await pipe.execute()
        self._deliver_caught_up(room, entries)
        if cur is None or cur.decode() != token or room not in self._tails:
            return
        last = self._tails.pop(room)
        self._owners.pop(room, None)
        self._owned[room] = token
        le, ls = split_id(last)
        self.listener.on_lease_acquired(
            room, Lease(self.edge_id, int(token.rpartition(":")[2]), True, token, le, ls))

    async def _takeover(self, room: str) -> None:
        """The owner's lease lapsed: read the stream to its end, then take the lease."""
        await self._catch_up(room)
        acq: Any = await self._script(
                "acquire", 2, K.room_owner(room), K.room_epoch(room),
            self.edge_id, self.lease_ms,
        )
        ok, tok = acq
        if not ok or room not in self._tails:
            return
        await self._catch_up(room)
        last = self._tails.pop(room)
        prev_owner = self._owners.pop(room, None)
        token = tok.decode()
        self._owned[room] = token
        le, ls = split_id(last)
        self.stats.lease_takeovers += 1
        if prev_owner:
            await self._observe_failover(prev_owner)
        self.listener.on_lease_acquired(
            room, Lease(self.edge_id, int(token.rpartition(":")[2]), True, token, le, ls))

    async def _observe_failover(self, edge_id: str) -> None:
        """Record how long after its last heartbeat a dead owner's rooms moved here."""
        now = time.time()
        seen = self._failed_over.get(edge_id)
        if self.failover_observer is None or (seen is not None and now - seen < 60.0):
            return
        self._failed_over[edge_id] = now
        if len(self._failed_over) > 1000:
            self._failed_over.clear()
        try:
            last: Any = await self.r.zscore(K.EDGES, edge_id)
        except RedisError:
            return
        if last is not None:
            self.failover_observer(max(0.0, now - float(last)))

    async def _catch_up(self, room: str) -> None:
        last = self._tails.get(room)
        if last is None:
            return
        entries: Any = await self.r.xrange(K.room_log(room), min=b"(" + last, count=100_000)
        self._deliver_caught_up(room, entries)

    def _deliver_caught_up(self, room: str, entries: Any) -> None:
        for eid, fields in entries:
            if self._tails.get(room) is None:
                return
            self._tails[room] = eid
            self.listener.on_remote_message(room, history.parse_entry(eid, fields))
