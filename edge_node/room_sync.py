"""Room state in Redis: owner leases with fencing, batched stream appends,
tailing rooms owned elsewhere, forwarding publishes to owners, cross-edge
presence and unreliable traffic.

Nothing here sits on the local fan-out path: :meth:`RoomSync.append` and
:meth:`RoomSync.forward` only queue; background tasks do the round trips.
Upcalls go to a :class:`SyncListener` (the hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from . import redis_keys as K
from .tasks import spawn

__all__ = ["RoomSync", "SyncListener", "Lease", "SyncUnavailable"]

log = logging.getLogger("edge_node.sync")

# KEYS: owner, epoch; ARGV: edge_id, lease_ms.  Returns {1, token} or {0, token}.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local e = redis.call('INCR', KEYS[2])
local tok = ARGV[1] .. ':' .. e
redis.call('SET', KEYS[1], tok, 'PX', ARGV[2])
return {1, tok}
"""
# KEYS: owner; ARGV: token, lease_ms.  1 when renewed, 0 when the lease is not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: owner, log; ARGV: token, maxlen, id1, data1, id2, data2, ...
# Fencing: a writer whose lease token is not the current one is refused.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('FENCED') end
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], ARGV[i], 'd', ARGV[i + 1])
end
return (#ARGV - 2) / 2
"""

_pack = msgpack.Packer(use_bin_type=True).pack

LIVE_PRESENCE_JOIN = 1
LIVE_PRESENCE_LEAVE = 2
LIVE_UNRELIABLE = 3


class SyncUnavailable(RuntimeError):
    """Redis could not be reached for an operation that needs it."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Result of activating a room: who owns it and from which position to read."""

    owner_edge: str
    epoch: int
    mine: bool
    token: str
    last_epoch: int
    last_seq: int


class SyncListener(Protocol):
    """Upcalls from :class:`RoomSync` into the hub."""

    def on_remote_message(
        self, room: str, epoch: int, seq: int, sender: str, payload: bytes,
        origin_edge: str, req_id: int,
    ) -> None: ...

    def on_forwarded_publish(
        self, room: str, sender: str, payload: bytes, origin_edge: str, req_id: int,
        idem: int,
    ) -> None: ...

    def on_live(self, room: str, kind: int, body: list[Any]) -> None: ...

    def on_lease_lost(self, room: str) -> None: ...

    def on_lease_acquired(self, room: str, lease: Lease) -> None: ...


def _split_id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


class RoomSync:
    """All of one edge's Redis traffic for rooms.  Call :meth:`start` first."""

    def __init__(
        self, url: str, edge_id: str, listener: SyncListener, *, lease_ms: int,
        stream_maxlen: int, append_batch: int, stats: Any, edge_ttl: float = 5.0,
    ) -> None:
        self.edge_ttl = edge_ttl
        self.url = url
        self.edge_id = edge_id
        self.listener = listener
        self.lease_ms = lease_ms
        self.maxlen = stream_maxlen
        self.append_batch = append_batch
        self.stats = stats
        self.r: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=0
        )
        # Blocking reads need a connection without a short socket timeout (PITFALLS).
        self.blocking: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=2.0
        )
        self.pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        self._inbox = K.edge_inbox(edge_id)
        self._inbox_last = b"0-0"
        self._tails: dict[str, bytes] = {}  # room -> last stream id read (mirror rooms)
        self._owned: dict[str, str] = {}  # room -> lease token
        self._appends: dict[str, list[bytes | str]] = {}
        self._forwards: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sha: dict[str, str] = {}
        self._subscribed: set[str] = set()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Load scripts, create the inbox, start background tasks."""
        for name, src in (("acquire", _ACQUIRE), ("renew", _RENEW),
                          ("release", _RELEASE), ("append", _APPEND)):
            self._sha[name] = await self.r.script_load(src)
        first: Any = await self.r.xadd(self._inbox, {"w": b"1"}, maxlen=10_000,
                                       approximate=True)
        self._inbox_last = first
        await self.pubsub.subscribe(K.room_live("\x00none"))  # keep the pubsub connection open
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._append_loop(), name="sync-append"),
            loop.create_task(self._read_loop(), name="sync-read"),
            loop.create_task(self._lease_loop(), name="sync-lease"),
            loop.create_task(self._live_loop(), name="sync-live"),
        ]

    async def stop(self) -> None:
        """Flush appends, release leases, stop tasks, close connections."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        for room, tok in list(self._owned.items()):
            with contextlib.suppress(Exception):
                await self.r.evalsha(self._sha["release"], 1, K.room_owner(room), tok)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.r.aclose()
        await self.blocking.aclose()

    # -- rooms --------------------------------------------------------------

    async def activate(self, room: str) -> Lease:
        """Take the room's lease if free, otherwise start tailing its stream."""
        try:
            acq: Any = await self.r.evalsha(
                self._sha["acquire"], 2, K.room_owner(room), K.room_epoch(room),
                self.edge_id, self.lease_ms,
            )
            ok, tok = acq
            last: Any = await self.r.xrevrange(K.room_log(room), count=1)
            await self._subscribe(room)
        except RedisError as exc:
            raise SyncUnavailable(str(exc)) from exc
        token = tok.decode()
        owner, _, epoch_s = token.rpartition(":")
        last_id = last[0][0] if last else b"0-0"
        le, ls = _split_id(last_id)
        lease = Lease(owner, int(epoch_s), bool(ok) or owner == self.edge_id, token, le, ls)
        if lease.mine:
            self._owned[room] = token
        else:
            self._tails[room] = last_id
            self._wake_reader()
        return lease

    async def deactivate(self, room: str) -> None:
        """The last local member left: stop tailing, release a lease we hold."""
        self._tails.pop(room, None)
        tok = self._owned.pop(room, None)
        try:
            await self._unsubscribe(room)
            if tok is not None:
                await self.flush()
                await self.r.evalsha(self._sha["release"], 1, K.room_owner(room), tok)
        except RedisError as exc:
            log.warning("deactivate failed", extra={"room": room, "error": str(exc)})

    def append(self, room: str, epoch: int, seq: int, data: bytes) -> None:
        """Queue one message for the room stream (owner only; never blocks)."""
        buf = self._appends.get(room)
        if buf is None:
            buf = self._appends[room] = []
        buf.append(f"{epoch}-{seq}")
        buf.append(data)
        self.stats.stream_backlog += 1
        self._wake.set()

    def forward(self, owner_edge: str, body: list[Any]) -> None:
        """Queue a publish for the owner edge's inbox."""
        self._forwards.append((owner_edge, _pack(body)))
        self._wake.set()

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        """Send an ephemeral event to the other edges that have this room."""
        data = _pack([kind, self.edge_id, room, *body])
        spawn(self._publish_live(room, data))

    async def _publish_live(self, room: str, data: bytes) -> None:
        try:
            await self.r.publish(K.room_live(room), data)
        except RedisError as exc:
            log.debug("live publish failed: %s", exc)

    async def add_member(self, room: str, session_id: str, member: list[str]) -> None:
        """Record a presence member in Redis (best effort)."""
        with contextlib.suppress(RedisError):
            await self.r.hset(K.room_members(room), session_id,
                              _pack([*member, self.edge_id]))

    async def remove_member(self, room: str, session_id: str) -> None:
        """Remove a presence member from Redis (best effort)."""
        with contextlib.suppress(RedisError):
            await self.r.hdel(K.room_members(room), session_id)

    async def members(self, room: str) -> list[list[str]]:
        """Members on every live edge: ``[session_id, subject, kind, edge_id]``."""
        try:
            raw: Any = await self.r.hgetall(K.room_members(room))
            ids: Any = await self.r.zrangebyscore(K.EDGES, time.time() - self.edge_ttl, "+inf")
            live = {e.decode() for e in ids} | {self.edge_id}
        except RedisError as exc:
            raise SyncUnavailable(str(exc)) from exc
        out = []
        for v in raw.values():
            m = msgpack.unpackb(v, raw=False)
            if m[3] in live:
                out.append(m)
        return out

    # -- background tasks ----------------------------------------------------

    def _wake_reader(self) -> None:
        spawn(self._poke_inbox())

    async def _poke_inbox(self) -> None:
        with contextlib.suppress(RedisError):
            await self.r.xadd(self._inbox, {"w": b"1"}, maxlen=10_000, approximate=True)

    async def flush(self) -> None:
        """Send every queued append and forward now (one pipeline)."""
        appends, self._appends = self._appends, {}
        forwards, self._forwards = self._forwards, []
        if not appends and not forwards:
            return
        pipe = self.r.pipeline(transaction=False)
        rooms: list[tuple[str, int]] = []
        for room, items in appends.items():
            tok = self._owned.get(room)
            n = len(items) // 2
            if tok is None:  # lost the lease meanwhile: the listener was told
                self.stats.stream_backlog -= n
                continue
            for i in range(0, len(items), 2 * self.append_batch):
                chunk = items[i : i + 2 * self.append_batch]
                pipe.evalsha(self._sha["append"], 2, K.room_owner(room), K.room_log(room),
                             tok, self.maxlen, *chunk)
                rooms.append((room, len(chunk) // 2))
        for owner, data in forwards:
            pipe.xadd(K.edge_inbox(owner), {"p": data}, maxlen=10_000, approximate=True)
        try:
            results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            self.stats.stream_errors += 1
            self.stats.stream_backlog -= sum(n for _, n in rooms)
            log.warning("append round trip failed", extra={"error": str(exc)})
            return
        self.stats.stream_batches += 1
        for (room, n), res in zip(rooms, results, strict=False):
            self.stats.stream_backlog -= n
            if isinstance(res, ResponseError):
                self.stats.stream_errors += 1
                if "FENCED" in str(res) and room in self._owned:
                    del self._owned[room]
                    self.listener.on_lease_lost(room)
            else:
                self.stats.stream_appended += n
        self.stats.forwarded_publishes += len(forwards)

    async def _append_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("append loop error")
                await asyncio.sleep(0.1)

    async def _read_loop(self) -> None:
        backoff = 0.1
        while True:
            streams: dict[Any, Any] = {self._inbox: self._inbox_last}
            for room, last in self._tails.items():
                streams[K.room_log(room)] = last
            try:
                res: Any = await self.blocking.xread(streams, count=1000, block=1000)
                backoff = 0.1
            except RedisError as exc:
                log.warning("stream read failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for key, entries in res or ():
                skey = key.decode()
                if skey == self._inbox:
                    for eid, fields in entries:
                        self._inbox_last = eid
                        data = fields.get(b"p")
                        if data is not None:
                            self._on_inbox(data)
                    continue
                room = skey[len(K.PREFIX) + 6 : -5]  # "er:{room:" ... "}:log"
                if room not in self._tails:
                    continue
                for eid, fields in entries:
                    self._tails[room] = eid
                    epoch, seq = _split_id(eid)
                    sender, payload, origin, req_id = msgpack.unpackb(fields[b"d"], raw=False)
                    self.stats.remote_deliveries += 1
                    self.listener.on_remote_message(room, epoch, seq, sender, payload,
                                                    origin, req_id)

    def _on_inbox(self, data: bytes) -> None:
        try:
            room, sender, payload, origin, req_id, idem = msgpack.unpackb(data, raw=False)
        except Exception:
            log.warning("bad inbox entry dropped")
            return
        self.listener.on_forwarded_publish(room, sender, payload, origin, req_id, idem)

    async def _lease_loop(self) -> None:
        period = self.lease_ms / 3000.0
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
        if owned:
            pipe = self.r.pipeline(transaction=False)
            for room, tok in owned:
                pipe.evalsha(self._sha["renew"], 1, K.room_owner(room), tok, self.lease_ms)
            for (room, tok), ok in zip(owned, await pipe.execute(), strict=True):
                if not ok and self._owned.get(room) == tok:
                    del self._owned[room]
                    self.listener.on_lease_lost(room)
        # Mirror rooms whose owner is gone: catch up on the stream, then take over.
        for room in list(self._tails):
            if await self.r.exists(K.room_owner(room)):
                continue
            await self._catch_up(room)
            acq: Any = await self.r.evalsha(
                self._sha["acquire"], 2, K.room_owner(room), K.room_epoch(room),
                self.edge_id, self.lease_ms,
            )
            ok, tok = acq
            if ok and room in self._tails:
                await self._catch_up(room)
                last = self._tails.pop(room)
                token = tok.decode()
                self._owned[room] = token
                le, ls = _split_id(last)
                epoch = int(token.rpartition(":")[2])
                self.listener.on_lease_acquired(
                    room, Lease(self.edge_id, epoch, True, token, le, ls))

    async def _catch_up(self, room: str) -> None:
        last = self._tails.get(room)
        if last is None:
            return
        entries: Any = await self.r.xrange(K.room_log(room), min=b"(" + last, count=10_000)
        for eid, fields in entries:
            if self._tails.get(room) is None:
                return
            self._tails[room] = eid
            epoch, seq = _split_id(eid)
            sender, payload, origin, req_id = msgpack.unpackb(fields[b"d"], raw=False)
            self.listener.on_remote_message(room, epoch, seq, sender, payload, origin, req_id)

    async def _subscribe(self, room: str) -> None:
        ch = K.room_live(room)
        if ch not in self._subscribed:
            self._subscribed.add(ch)
            await self.pubsub.subscribe(ch)

    async def _unsubscribe(self, room: str) -> None:
        ch = K.room_live(room)
        if ch in self._subscribed:
            self._subscribed.discard(ch)
            await self.pubsub.unsubscribe(ch)

    async def _live_loop(self) -> None:
        while True:
            try:
                msg = await self.pubsub.get_message(timeout=1.0)
            except RedisError as exc:
                log.warning("live channel failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                continue
            except asyncio.CancelledError:
                raise
            if msg is None or msg.get("type") != "message":
                continue
            try:
                kind, edge, room, *body = msgpack.unpackb(msg["data"], raw=False)
            except Exception:
                continue
            if edge != self.edge_id:
                self.listener.on_live(room, kind, body)
