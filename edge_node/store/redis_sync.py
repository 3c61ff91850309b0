"""Room state in Redis: owner leases with fencing, batched durable appends,
tailing rooms owned elsewhere, forwarding publishes to owners, cross-edge
presence and unreliable traffic.

Nothing here sits on the local fan-out path: :meth:`RoomSync.append` and
:meth:`RoomSync.forward` only queue; background tasks do the round trips and
report back through a :class:`SyncListener` (the hub):
``on_durable`` once a batch is in Redis (that is when publishers get their
ACK), ``on_remote_message`` for entries of rooms owned elsewhere, and the
lease events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as K
from edge_node.redis_io.resp_cluster import ClusterRespWriter
from edge_node.redis_io.resp_writer import RespWriter
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
    Handover,
    LiveEvent,
    RecordError,
)
from edge_node.store.redis_handover import RoomHandover
from edge_node.store.redis_leases import LeaseKeeper
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
            "epoch_floor": lua.EPOCH_FLOOR}



class RoomSync(LeaseKeeper, LossGuard, ClusterReading, RoomHandover):
    """All of one edge's Redis traffic for rooms.  Call :meth:`start` first."""

    def __init__(
        self, url: str, edge_id: str, listener: SyncListener, *, lease_ms: int,
        stream_maxlen: int, append_batch: int, stats: Any, edge_ttl: float = 5.0,
        max_backlog: int = 1_000_000, append_linger: float = 0.0,
        wait_replicas: int | None = None, wait_ms: int = 200, tail_poll: float = 0.25,
    ) -> None:
        self.append_linger = append_linger
        self.url = url
        self.edge_id = edge_id
        self.listener = listener
        self.lease_ms = lease_ms
        self.maxlen = stream_maxlen
        self.append_batch = append_batch
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
        self._inbox = K.edge_inbox(edge_id)
        self._inbox_last: bytes = b"0-0"
        self._tails: dict[str, bytes] = {}  # room -> last stream id read (mirror rooms)
        self._owners: dict[str, str] = {}  # mirror room -> owner edge last seen
        self._owned: dict[str, str] = {}  # room -> lease token
        # room -> queued (epoch, seq, data, assigned at); kept until Redis has them.
        self._appends: dict[str, deque[tuple[int, int, bytes, float]]] = {}
        self._flush_lock = asyncio.Lock()
        self._forwards: list[tuple[str, bytes]] = []
        self._handing: dict[str, list[tuple[str, bytes]]] = {}
        self._wake = asyncio.Event()
        self._tail_wake = asyncio.Event()  # cluster mode: an owner appended (LIVE_APPENDED)
        self._tasks: list[asyncio.Task[None]] = []
        self._sha: dict[str, str] = {}
        # The append path's own lean connection (resp_writer); None: redis-py (TLS URLs).
        self._writer: RespWriter | ClusterRespWriter | None = None
        self._subscribed: set[str] = set()
        self.lag_observer: Any = None  # callable(seconds) for the sync-lag histogram
        #: callable(seconds): time from a dead owner's last heartbeat to this edge
        #: taking its rooms (failover detection), once per dead edge.
        self.failover_observer: Any = None
        self._failed_over: dict[str, float] = {}  # dead edge id -> when observed
        self._suspected: dict[str, float] = {}  # edge id -> when we last probed it
        # room -> last position Redis confirmed (acked to publishers) while we own it.
        self._durable: dict[str, tuple[int, int]] = {}
        self._verify = False  # check stream ends against _durable before the next flush

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Load scripts, create the inbox, start background tasks.  Raises a
        :class:`~redis.exceptions.RedisError` (or ``OSError``) if Redis cannot be reached."""
        try:
            await self._load_scripts()
        except RedisClusterException as exc:  # not a RedisError: no node answered
            raise RedisError(str(exc)) from exc
        if self.cluster:
            seeds, opts = redis_conn.cluster_seeds(self.url)
            self._writer = None if opts.get("ssl") else ClusterRespWriter(
                seeds, username=opts.get("username"), password=opts.get("password"),
                connect_timeout=2.0, timeout=5.0, scripts=[lua.APPEND],
                wait_replicas=self.wait_replicas, wait_ms=self.wait_ms)
        else:
            self._writer = RespWriter.from_url(self.url, connect_timeout=2.0, timeout=5.0,
                                               scripts=[lua.APPEND])
        if self._writer is not None:
            await self._writer.connect()
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
        """Flush appends, release leases, stop tasks, close connections."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        for room, tok in list(self._owned.items()):
            with contextlib.suppress(Exception):
                await self._script("release", 1, K.room_owner(room), tok)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        if self._writer is not None:
            await self._writer.close()
        await self.r.aclose()
        await self.blocking.aclose()

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
            self._wake_reader()
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
            if not self._appends.get(room) and self._owned.get(room) == tok:
                del self._owned[room]
                self._durable.pop(room, None)
                await self._script("release", 1, K.room_owner(room), tok)
        except (RedisError, RedisClusterException, SyncUnavailable) as exc:
            log.warning("deactivate failed", extra={"room": room, "error": str(exc)})

    def last_queued(self, room: str) -> tuple[int, int] | None:
        """Position of the newest append still waiting for Redis, if any."""
        q = self._appends.get(room)
        return (q[-1][0], q[-1][1]) if q else None

    def owns(self, room: str) -> bool:
        """True while this edge holds the room's lease."""
        return room in self._owned

    def append(self, room: str, epoch: int, seq: int, data: bytes) -> None:
        """Queue one message for the room stream (owner only; never blocks)."""
        buf = self._appends.get(room)
        if buf is None:
            buf = self._appends[room] = deque()
        buf.append((epoch, seq, data, time.monotonic()))
        self.stats.stream_backlog += 1
        self._wake.set()

    def forward(self, owner_edge: str, fwd: Forwarded) -> None:
        """Queue a publish for the owner edge's inbox; held back while this edge hands
        the room's lease over (see room_handover)."""
        data = fwd.pack()
        if self._handing and self._hold_forward(owner_edge, fwd.room, data):
            return
        self._forwards.append((owner_edge, data))
        self._wake.set()

    def forward_ack(self, origin_edge: str, sender: str, req_id: int, epoch: int,
                    seq: int) -> None:
        """Tell ``origin_edge`` that a forwarded publish was a duplicate of ``(epoch, seq)``."""
        spawn(self._xadd_quiet(K.edge_inbox(origin_edge),
                               {"a": ForwardAck(sender, req_id, (epoch, seq)).pack()}))

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        """Send an ephemeral event to the other edges that have this room."""
        data = LiveEvent(kind, self.edge_id, room, tuple(body)).pack()
        spawn(self._publish_live(room, data))

    async def _publish_live(self, room: str, data: bytes) -> None:
        try:
            await self.r.publish(K.room_live(room), data)
        except RedisError as exc:
            log.debug("live publish failed: %s", exc)

    async def _xadd_quiet(self, key: str, fields: dict[str, bytes]) -> None:
        with contextlib.suppress(RedisError):
            await self.r.xadd(key, fields, maxlen=10_000, approximate=True)  # type: ignore[arg-type]

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

    # -- background tasks ----------------------------------------------------

    def _wake_reader(self) -> None:
        spawn(self._xadd_quiet(self._inbox, {"w": b"1"}))

    async def flush(self) -> bool:
        """Send queued appends and forwards (one pipeline).  Failed appends stay queued.

        Returns True if Redis refused a batch (an error other than FENCED).
        """
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> bool:
        if self._verify:
            await self._check_tails()
        forwards, self._forwards = self._forwards, []
        batches: list[tuple[str, int, int, int]] = []  # room, last epoch, last seq, count
        commands: list[tuple[Any, ...]] = []
        for room, q in list(self._appends.items()):
            tok = self._owned.get(room)
            if tok is None:  # fenced meanwhile: these will never be durable here
                self.stats.stream_backlog -= len(q)
                self.stats.stream_dropped += len(q)
                del self._appends[room]
                continue
            items = list(q)
            for i in range(0, len(items), self.append_batch):
                chunk = items[i : i + self.append_batch]
                args: list[int | bytes] = []
                for epoch, seq, data, _t in chunk:
                    args += (epoch, seq, data)
                commands.append(("EVALSHA", self._sha["append"], 2, K.room_owner(room),
                                 K.room_log(room), tok, self.maxlen, *args))
                batches.append((room, chunk[-1][0], chunk[-1][1], len(chunk)))
        if isinstance(self._writer, ClusterRespWriter):  # after the appends, same node
            for room in dict.fromkeys(b[0] for b in batches):
                commands.append(("PUBLISH", K.room_live(room),
                                 LiveEvent(LIVE_APPENDED, self.edge_id, room).pack()))
        for owner, data in forwards:
            commands.append(("XADD", K.edge_inbox(owner), "MAXLEN", "~", 10_000, "*", "p", data))
        if not commands:
            return False
        try:
            results = await self._execute(commands)
        except (RedisError, OSError) as exc:
            self.stats.stream_errors += 1
            self._forwards[:0] = forwards
            self._verify = bool(self._durable)  # a failover? check the tails first
            raise SyncUnavailable(str(exc)) from exc
        self.stats.stream_batches += 1
        now = time.monotonic()
        refused = False
        reclaimed: set[str] = set()
        for (room, epoch, seq, n), res in zip(batches, results, strict=False):
            rq = self._appends.get(room)
            if isinstance(res, ResponseError):
                self.stats.stream_errors += 1
                if "FENCED" in str(res) and room in self._owned:
                    if room in reclaimed or await self._reclaim(room):
                        reclaimed.add(room)  # one check per room, not per batch
                        refused = True  # same epoch again: the batch goes next round
                        continue
                    # The lease loop may have noticed the loss during the await above
                    # (and told the hub already): only one of them reports it.
                    lost = self._owned.pop(room, None) is not None
                    # A lost lease: lost entries too (a failover)?  Check before next flush.
                    self._verify = self._verify or room in self._durable
                    if rq is not None and self._appends.get(room) is rq:
                        self.stats.stream_backlog -= len(rq)
                        self.stats.stream_dropped += len(rq)
                        del self._appends[room]
                    if lost:
                        self.listener.on_lease_lost(room)
                elif str(res).startswith("UNREPLICATED"):
                    # In Redis, not yet on a replica: no ack yet; re-sent (idempotent).
                    refused = True
                    self.stats.stream_unreplicated += 1
                elif str(res).startswith("GAP") and self._lost(room, str(res)):
                    refused = True
                else:
                    refused = True
                    log.error("append refused", extra={"room": room, "error": str(res)})
                continue
            if rq is None:
                continue
            for _ in range(n):
                if not rq:
                    break
                t = rq.popleft()[3]
                if self.lag_observer is not None:
                    self.lag_observer(now - t)
            if not rq:
                del self._appends[room]
            self.stats.stream_backlog -= n
            self.stats.stream_appended += n
            self._durable[room] = (epoch, seq)
            self.listener.on_durable(room, epoch, seq)
        self.stats.forwarded_publishes += len(forwards)
        return refused

    async def _reclaim(self, room: str) -> bool:
        """After FENCED: take a lapsed lease back with the same epoch if nobody took the
        room meanwhile (see ``RENEW``); True if the lease is ours again."""
        tok = self._owned.get(room)
        if tok is None:
            return False
        try:
            res = await self._script("renew", 2, K.room_owner(room), K.room_epoch(room), tok,
                                     self.lease_ms)
        except RedisError:
            return True  # cannot tell: keep the batch, the next round decides
        if res == 2:
            log.info("lease reclaimed after an outage", extra={"room": room})
        return bool(res)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one round trip; errors come back as values, not raised.

        The dedicated :class:`RespWriter` costs a fraction of redis-py's CPU per
        round trip (at game publish rates most flushes carry one room's batch);
        it raises an ``OSError`` on connection trouble and re-loads the append
        script on ``NOSCRIPT``.  Without it (TLS URLs), a single command skips
        redis-py's pipeline machinery, which costs more than a direct call.
        """
        if self._writer is not None:
            return await self._writer.execute(commands)
        if len(commands) == 1:
            try:
                return [await self.r.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                return [exc]
        pipe = self.r.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd)
        return list(await pipe.execute(raise_on_error=False))

    async def _append_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            if self.append_linger > 0:
                # Gather a few more messages per round trip: acks wait a little,
                # local fan-out never does.
                await asyncio.sleep(self.append_linger)
            self._wake.clear()
            try:
                refused = await self.flush()
                backoff = 0.05
            except SyncUnavailable as exc:
                log.warning("append round trip failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()
            except Exception:
                log.exception("append loop error")
                await asyncio.sleep(0.1)
                self._wake.set()
            else:
                if refused:  # e.g. OOM: pause rather than re-send in a tight loop
                    await asyncio.sleep(0.05)
                if any(self._appends.values()) or self._forwards:
                    self._wake.set()

    async def _read_loop(self) -> None:
        backoff = 0.1
        while True:
            streams: dict[Any, Any] = {self._inbox: self._inbox_last}
            if not self.cluster:  # one slot per room: a cluster polls them (_tail_loop)
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
                        handed = self._on_inbox(fields)
                        if handed is not None:
                            # A handover: own the room before handling the publishes
                            # forwarded to us after it (their order is the room's).
                            await self._adopt_quiet(handed, fields)
                    continue
                self._deliver(K.room_of_log(skey), entries)

    def _on_inbox(self, fields: dict[bytes, bytes]) -> str | None:
        """Handle one inbox entry; returns the room of a handover notice (to adopt)."""
        try:
            if b"p" in fields:
                f = Forwarded.unpack(fields[b"p"])
                self.listener.on_forwarded_publish(f.room, f.sender, f.payload, f.origin,
                                                   f.req_id, f.idem)
            elif b"a" in fields:
                a = ForwardAck.unpack(fields[b"a"])
                self.listener.on_remote_ack(a.sender, a.req_id, a.pos[0], a.pos[1])
            elif b"h" in fields:
                h = Handover.unpack(fields[b"h"])
                if h.room in self._tails:
                    return h.room
        except (RecordError, ValueError, TypeError):
            log.warning("bad inbox entry dropped")
        return None

    async def _adopt_quiet(self, room: str, fields: dict[bytes, bytes]) -> None:
        token = Handover.unpack(fields[b"h"]).token
        try:
            await self._adopt(room, token)
        except RedisError as exc:  # the lease poll adopts it later
            log.warning("adopting a handed-over room failed",
                        extra={"room": room, "error": str(exc)})

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
