"""Room state in Redis: owner leases with fencing, batched durable appends,
tailing rooms owned elsewhere, forwarding publishes to owners, cross-edge
presence and unreliable traffic.

Nothing here sits on the local fan-out path: :meth:`RoomSync.append` and
:meth:`RoomSync.forward` only queue; background tasks do the round trips and
report back through a :class:`SyncListener` (the hub):
``on_durable`` once a batch is in Redis (that is when publishers get their
ACK), ``on_remote_message`` for entries of rooms owned elsewhere, and the
lease events.

RoomSync owns the room tables (leases held, rooms mirrored, durable positions) and
the connections, and delegates to collaborators that each own their state:
:class:`~edge_node.store.redis_append.AppendPipeline` (queued appends and forwards,
the flusher task) and :class:`~edge_node.store.redis_inbox.InboxReader` (this edge's
inbox and, on one server, the mirrored rooms' streams).  Lease upkeep, loss detection,
cluster tailing and handover are still mixins over RoomSync's tables
(:mod:`~edge_node.store.redis_leases`, :mod:`~edge_node.store.redis_loss`,
:mod:`~edge_node.store.redis_tail`, :mod:`~edge_node.store.redis_handover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as K
from edge_node.runtime.tasks import spawn
from edge_node.store import history
from edge_node.store import lua_scripts as lua
from edge_node.store.history import Entry, split_id
from edge_node.store.records import (
    LIVE_APPENDED,
    LIVE_OWNER,
    LIVE_PRESENCE_JOIN,
    LIVE_PRESENCE_LEAVE,
    LIVE_UNRELIABLE,
    ForwardAck,
    Forwarded,
    LiveEvent,
    RecordError,
)
from edge_node.store.redis_append import AppendPipeline
from edge_node.store.redis_handover import RoomHandover
from edge_node.store.redis_inbox import InboxReader, xadd_quiet
from edge_node.store.redis_leases import LeaseKeeper
from edge_node.store.redis_live import LivePublisher
from edge_node.store.redis_loss import LossGuard
from edge_node.store.redis_tail import ClusterReading
from edge_node.store.types import Lease, SyncListener, SyncUnavailable

__all__ = ["RoomSync", "SyncListener", "Lease", "SyncUnavailable",
           "LIVE_PRESENCE_JOIN", "LIVE_PRESENCE_LEAVE", "LIVE_UNRELIABLE",
           "LIVE_OWNER"]

log = logging.getLogger("edge_node.sync")

_pack = msgpack.Packer(use_bin_type=True).pack

_SCRIPTS = {"acquire": lua.ACQUIRE, "renew": lua.RENEW, "release": lua.RELEASE,
            "append": lua.APPEND, "steal": lua.STEAL, "handover": lua.HANDOVER,
            "epoch_floor": lua.EPOCH_FLOOR, "snapshot": lua.SNAPSHOT,
            "drop_snapshot": lua.DROP_SNAPSHOT, "drop_member": lua.DROP_MEMBER}



class RoomSync(LeaseKeeper, LossGuard, ClusterReading, RoomHandover):
    """All of one edge's Redis traffic for rooms.  Call :meth:`start` first."""

    def __init__(
        self, url: str, edge_id: str, listener: SyncListener, *, lease_ms: int,
        stream_maxlen: int, append_batch: int, stats: Any, edge_ttl: float = 5.0,
        max_backlog: int = 1_000_000, append_linger: float = 0.0,
        wait_replicas: int | None = None, wait_ms: int = 200, tail_poll: float = 0.25,
    ) -> None:
        self.url = url
        self.edge_id = edge_id
        self.listener = listener
        self.lease_ms = lease_ms
        self.stats = stats
        self.edge_ttl = edge_ttl
        self.max_backlog = max_backlog
        #: On a Redis Cluster (``redis+cluster://``) room streams live on different slots:
        #: mirrored rooms are read when their owner announces an append (and every
        #: ``tail_poll`` s) instead of by one blocking XREAD over all of them.  Durable
        #: acks wait for ``wait_replicas`` replicas (``WAIT``; env ``REDIS_WAIT_REPLICAS``,
        #: default 1 on a cluster, 0 on one server): a failover cannot lose them.
        self.cluster = redis_conn.is_cluster(url)
        if wait_replicas is None:
            wait_replicas = int(os.environ.get("REDIS_WAIT_REPLICAS",
                                               "1" if self.cluster else "0"))
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self.tail_poll = tail_poll
        # A bounded pool that makes callers wait for a connection: a reconnect
        # storm must queue its Redis calls, not fail with "too many connections".
        self.r: aioredis.Redis = redis_conn.connect(
            url, max_connections=64, blocking_pool=True, socket_timeout=5.0)
        # Blocking reads need a connection without a short socket timeout (PITFALLS).
        self.blocking: aioredis.Redis = redis_conn.connect(url, socket_timeout=None)
        self.pubsub = self._new_pubsub()
        self.live = LivePublisher(self.r, cluster=self.cluster)
        self._tails: dict[str, bytes] = {}  # room -> last stream id read (mirror rooms)
        self._owners: dict[str, str] = {}  # mirror room -> owner edge last seen
        self._owned: dict[str, str] = {}  # room -> lease token
        self._handing: dict[str, list[tuple[str, bytes]]] = {}
        self._tail_wake = asyncio.Event()  # cluster mode: an owner appended (LIVE_APPENDED)
        self._tasks: list[asyncio.Task[None]] = []
        self._sha: dict[str, str] = {}
        self._subscribed: set[str] = set()
        #: callable(seconds): time from a dead owner's last heartbeat to this edge
        #: taking its rooms (failover detection), once per dead edge.
        self.failover_observer: Any = None
        self._failed_over: dict[str, float] = {}  # dead edge id -> when observed
        self._suspected: dict[str, float] = {}  # edge id -> when we last probed it
        # room -> last position Redis confirmed (acked to publishers) while we own it.
        self._durable: dict[str, tuple[int, int]] = {}
        #: Queued appends and forwards, flushed by the "sync-append" task.
        self.appends = AppendPipeline(
            self.r, edge_id=edge_id, listener=listener, stats=stats, lease_ms=lease_ms,
            maxlen=stream_maxlen, batch=append_batch, linger=append_linger,
            owned=self._owned, durable=self._durable, sha=self._sha, script=self._script,
            check_tails=self._check_tails, lost=self._lost)
        #: This edge's inbox (and, on one server, the mirrored rooms): the "sync-read" task.
        self.inbox = InboxReader(self.r, self.blocking, edge_id, listener, tails=self._tails,
                                 read_tails=not self.cluster, deliver=self._deliver,
                                 adopt=self._adopt)

    @property
    def lag_observer(self) -> Any:
        """callable(seconds) for the sync-lag histogram (queued append -> durable)."""
        return self.appends.lag_observer

    @lag_observer.setter
    def lag_observer(self, observe: Any) -> None:
        self.appends.lag_observer = observe

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Load scripts, create the inbox, start background tasks.  Raises a
        :class:`~redis.exceptions.RedisError` (or ``OSError``) if Redis cannot be reached."""
        try:
            await self._load_scripts()
        except RedisClusterException as exc:  # not a RedisError: no node answered
            raise RedisError(str(exc)) from exc
        await self.appends.connect(self.url, cluster=self.cluster,
                                   wait_replicas=self.wait_replicas, wait_ms=self.wait_ms)
        await self.inbox.open()
        await self.pubsub.subscribe(K.room_live("\x00none"))  # keep the pubsub connection open
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.appends.run(), name="sync-append"),
            loop.create_task(self.inbox.run(), name="sync-read"),
            loop.create_task(self._lease_loop(), name="sync-lease"),
            loop.create_task(self._live_loop(), name="sync-live"),
            loop.create_task(self.live.run(), name="sync-live-out"),
        ]
        if self.cluster:
            self._tasks.append(loop.create_task(self._tail_loop(), name="sync-tail"))

    async def _load_scripts(self) -> None:
        for name, src in _SCRIPTS.items():
            self._sha[name] = await self.r.script_load(src)

    async def _script(self, name: str, numkeys: int, *args: Any) -> Any:
        """EVALSHA, reloading the scripts once if Redis lost them (restart,
        failover to a replica, SCRIPT FLUSH)."""
        try:
            return await self.r.evalsha(self._sha[name], numkeys, *args)
        except NoScriptError:
            await self._load_scripts()
            return await self.r.evalsha(self._sha[name], numkeys, *args)

    async def stop(self) -> None:
        """Flush appends, release leases, stop tasks, close connections; each step is
        bounded (a few seconds at most in all when Redis or a connection hangs)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        for room, tok in list(self._owned.items()):
            with contextlib.suppress(Exception):
                await self._script("release", 1, K.room_owner(room), tok)
        for t in self._tasks:
            t.cancel()
        if self._tasks:  # bounded: a task stuck in a connection must not hold the stop
            await asyncio.wait(self._tasks, timeout=2.0)
        for close in (self.pubsub.aclose, self.appends.close, self.r.aclose,
                      self.blocking.aclose):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), 2.0)

    # -- rooms --------------------------------------------------------------

    async def activate(self, room: str, since: tuple[int, int] | None = None) -> Lease:
        """Take the room's lease if free, otherwise start tailing its stream: from its
        end, or from just after position ``since`` (a fenced owner re-reads what it did
        not store itself)."""
        try:
            acq: Any = await self._script(
                "acquire", 2, K.room_owner(room), K.room_epoch(room),
                self.edge_id, self.lease_ms,
            )
            ok, tok = acq
            last: Any = await self.r.xrevrange(K.room_log(room), count=1)
            await self._subscribe(room)
        except RedisError as exc:
            raise SyncUnavailable(str(exc)) from exc
        token = tok.decode()
        owner, _, epoch_s = token.rpartition(":")
        last_id: bytes = last[0][0] if last else b"0-0"
        le, ls = split_id(last_id)
        lease = Lease(owner, int(epoch_s), bool(ok) or owner == self.edge_id, token, le, ls)
        if lease.mine:
            self._owned[room] = token
        else:
            if since is not None and since < (le, ls):
                last_id = f"{since[0]}-{since[1]}".encode()
            self._tails[room] = last_id
            self._owners[room] = owner
            self.inbox.wake()
        return lease

    async def deactivate(self, room: str, hand_to: str | None = None) -> None:
        """No local member is left: stop tailing, release a lease we hold.

        With ``hand_to`` (draining), the lease goes to that edge with the same
        epoch instead, and it is told at once through its inbox so it adopts
        the room without waiting for its lease poll (see room_handover).
        """
        self._tails.pop(room, None)
        self._owners.pop(room, None)
        tok = self._owned.get(room)
        try:
            await self._unsubscribe(room)
            if tok is None:
                return
            if hand_to:
                self._handing.setdefault(room, [])
                try:
                    token = await self._pass_lease(room, tok, hand_to)
                    if token is not None:
                        await self._announce(room, hand_to, token)
                        return
                finally:
                    self._release_forwards(room)
            await self.flush()
            if not self.appends.pending(room) and self._owned.get(room) == tok:
                del self._owned[room]
                self._durable.pop(room, None)
                await self._script("release", 1, K.room_owner(room), tok)
        except (RedisError, RedisClusterException, SyncUnavailable) as exc:
            log.warning("deactivate failed", extra={"room": room, "error": str(exc)})

    def last_queued(self, room: str) -> tuple[int, int] | None:
        """Position of the newest append still waiting for Redis, if any."""
        return self.appends.last_queued(room)

    def owns(self, room: str) -> bool:
        """True while this edge holds the room's lease."""
        return room in self._owned

    def append(self, room: str, epoch: int, seq: int, data: bytes) -> None:
        """Queue one message for the room stream (owner only; never blocks)."""
        self.appends.append(room, epoch, seq, data)

    def forward(self, owner_edge: str, fwd: Forwarded) -> None:
        """Queue a publish for the owner edge's inbox; held back while this edge hands
        the room's lease over (see room_handover)."""
        data = fwd.pack()
        if self._handing and self._hold_forward(owner_edge, fwd.room, data):
            return
        self.appends.queue_forward(owner_edge, data)

    def forward_ack(self, origin_edge: str, sender: str, req_id: int, epoch: int,
                    seq: int) -> None:
        """Tell ``origin_edge`` that a forwarded publish was a duplicate of ``(epoch, seq)``."""
        spawn(xadd_quiet(self.r, K.edge_inbox(origin_edge),
                         {"a": ForwardAck(sender, req_id, (epoch, seq)).pack()}))

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        """Send an ephemeral event to the other edges that have this room (in order)."""
        self.live.publish(K.room_live(room), LiveEvent(kind, self.edge_id, room,
                                                       tuple(body)).pack())

    async def _publish_live(self, room: str, data: bytes) -> None:
        """Publish now, awaited (the handover's notice, which must be out before it goes
        on)."""
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
        """Remove a presence member this edge recorded from Redis (best effort; one
        that resumed on another edge stays, as that edge recorded it)."""
        with contextlib.suppress(RedisError):
            await self._script("drop_member", 1, K.room_members(room), session_id,
                               self.edge_id)

    def put_listing(self, room: str, entry: bytes | None) -> None:
        """Publish (None: withdraw) a game room's listing (best effort, not awaited)."""
        spawn(self._put_listing(room, entry))

    async def _put_listing(self, room: str, entry: bytes | None) -> None:
        with contextlib.suppress(RedisError):
            if entry is None:
                await self.r.hdel(K.game_listings(), room)
            else:
                await self.r.hset(K.game_listings(), room, entry)

    async def listings(self) -> dict[str, bytes]:
        """Every published game-room listing (room -> entry)."""
        try:
            raw: Any = await self.r.hgetall(K.game_listings())
        except RedisError as exc:
            raise SyncUnavailable(str(exc)) from exc
        return {k.decode(): bytes(v) for k, v in raw.items()}

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

    # -- history ------------------------------------------------------------

    async def history_after(self, room: str, epoch: int, seq: int,
                            limit: int) -> tuple[list[Entry], bool, tuple[int, int] | None]:
        """Entries after a position, whether trimming left a gap, first available."""
        try:
            gap, first = await history.gap_after(self.r, room, epoch, seq)
            if not gap:  # entries acked once, gone since a failover (room_loss)
                gap = await self.lost_gap(room, epoch, seq)
            entries = [] if gap else await history.range_after(self.r, room, epoch, seq, limit)
        except RedisError as exc:
            raise SyncUnavailable(str(exc)) from exc
        return entries, gap, first

    async def recent(self, room: str, count: int) -> list[Entry]:
        """Newest entries of a room (dedupe state for a new owner)."""
        try:
            return await history.recent(self.r, room, count)
        except RedisError as exc:
            raise SyncUnavailable(str(exc)) from exc

    # -- game-room snapshots --------------------------------------------------

    async def put_snapshot(self, room: str, pos: tuple[int, int], data: bytes,
                           ttl_ms: int) -> bool:
        """Store a game-room snapshot covering the stream up to ``pos`` (the SNAPSHOT
        script: fenced by our lease token, refused until the stream holds ``pos``; trims
        the stream behind the previous snapshot).  False without a round trip when this
        edge holds no lease on the room."""
        tok = self._owned.get(room)
        if tok is None:
            return False
        try:
            ok: Any = await self._script(
                "snapshot", 3, K.room_owner(room), K.room_log(room), K.room_snapshot(room),
                tok, pos[0], pos[1], data, ttl_ms)
        except (RedisError, RedisClusterException) as exc:
            raise SyncUnavailable(str(exc)) from exc
        return bool(ok)

    async def get_snapshot(self, room: str) -> tuple[tuple[int, int], bytes] | None:
        """The room's newest snapshot (position, data), or None."""
        try:
            raw: Any = await self.r.hmget(K.room_snapshot(room), ["pos", "data"])
        except (RedisError, RedisClusterException) as exc:
            raise SyncUnavailable(str(exc)) from exc
        pos, data = raw
        if pos is None or data is None:
            return None
        return split_id(pos), bytes(data)

    async def drop_snapshot(self, room: str) -> None:
        """Delete the room's snapshot while we hold its lease (best effort)."""
        tok = self._owned.get(room)
        if tok is None:
            return
        try:
            await self._script("drop_snapshot", 2, K.room_owner(room),
                               K.room_snapshot(room), tok)
        except (RedisError, RedisClusterException, OSError) as exc:
            log.warning("snapshot drop failed", extra={"room": room, "error": str(exc)})

    # -- background tasks ----------------------------------------------------

    async def flush(self) -> bool:
        """Send queued appends and forwards (one pipeline).  Failed appends stay queued.

        Returns True if Redis refused a batch (an error other than FENCED).
        """
        return await self.appends.flush()

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
            except (RedisError, OSError, RuntimeError) as exc:
                # RuntimeError: a re-subscription failed, the pubsub has no connection.
                log.warning("live channel failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                if self.cluster:  # its node may be gone for good: subscribe elsewhere
                    await self._resubscribe()
                continue
            if msg is None or msg.get("type") != "message":
                continue
            try:
                live = LiveEvent.unpack(msg["data"])
            except (RecordError, ValueError, TypeError):
                continue
            kind, edge, room, body = live.kind, live.edge, live.room, list(live.body)
            if kind == LIVE_APPENDED:
                if room in self._tails:
                    self._tail_wake.set()
                continue
            if edge == self.edge_id:
                continue
            if kind == LIVE_OWNER:
                owner = body[0] if body and isinstance(body[0], str) else None
                if owner is None or room not in self._tails:
                    continue
                if owner == self.edge_id:
                    continue  # the inbox notice makes us adopt it
                if self._owners.get(room) != owner:
                    self._owners[room] = owner
                    self.listener.on_owner_changed(room, owner)
                continue
            self.listener.on_live(room, kind, body)
