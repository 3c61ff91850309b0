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
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from . import history
from . import lua_scripts as lua
from . import redis_keys as K
from .history import Entry, split_id
from .liveness import probe_edge
from .resp_writer import RespWriter
from .tasks import spawn

__all__ = ["RoomSync", "SyncListener", "Lease", "SyncUnavailable",
           "LIVE_PRESENCE_JOIN", "LIVE_PRESENCE_LEAVE", "LIVE_UNRELIABLE",
           "LIVE_OWNER"]

log = logging.getLogger("edge_node.sync")

_pack = msgpack.Packer(use_bin_type=True).pack

_SCRIPTS = {"acquire": lua.ACQUIRE, "renew": lua.RENEW, "release": lua.RELEASE,
            "append": lua.APPEND, "steal": lua.STEAL, "handover": lua.HANDOVER}

LIVE_PRESENCE_JOIN = 1
LIVE_PRESENCE_LEAVE = 2
LIVE_UNRELIABLE = 3
#: The room's lease was handed to another edge (drain): ``[new owner edge id]``.
LIVE_OWNER = 4


class SyncUnavailable(RuntimeError):
    """Redis could not be reached for an operation that needs it."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Result of activating a room: who owns it and where its history ends."""

    owner_edge: str
    epoch: int
    mine: bool
    token: str
    last_epoch: int
    last_seq: int


class SyncListener(Protocol):
    """Upcalls from :class:`RoomSync` into the hub."""

    def on_remote_message(self, room: str, e: Entry) -> None: ...

    def on_forwarded_publish(self, room: str, sender: str, payload: bytes, origin_edge: str,
                             req_id: int, idem: int) -> None: ...

    def on_remote_ack(self, sender: str, req_id: int, epoch: int, seq: int) -> None: ...

    def on_durable(self, room: str, epoch: int, seq: int) -> None: ...

    def on_live(self, room: str, kind: int, body: list[Any]) -> None: ...

    def on_lease_lost(self, room: str) -> None: ...

    def on_lease_acquired(self, room: str, lease: Lease) -> None: ...

    def on_owner_changed(self, room: str, owner_edge: str) -> None: ...


class RoomSync:
    """All of one edge's Redis traffic for rooms.  Call :meth:`start` first."""

    def __init__(
        self, url: str, edge_id: str, listener: SyncListener, *, lease_ms: int,
        stream_maxlen: int, append_batch: int, stats: Any, edge_ttl: float = 5.0,
        max_backlog: int = 1_000_000, append_linger: float = 0.0,
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
        # A bounded pool that makes callers wait for a connection: a reconnect
        # storm must queue its Redis calls, not fail with "too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=10, socket_timeout=5.0, socket_connect_timeout=2.0,
            health_check_interval=0)
        self.r: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        # Blocking reads need a connection without a short socket timeout (PITFALLS).
        self.blocking: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=2.0
        )
        self.pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        self._inbox = K.edge_inbox(edge_id)
        self._inbox_last: bytes = b"0-0"
        self._tails: dict[str, bytes] = {}  # room -> last stream id read (mirror rooms)
        self._owners: dict[str, str] = {}  # mirror room -> owner edge last seen
        self._owned: dict[str, str] = {}  # room -> lease token
        # room -> queued (epoch, seq, data, assigned at); kept until Redis has them.
        self._appends: dict[str, deque[tuple[int, int, bytes, float]]] = {}
        self._flush_lock = asyncio.Lock()
        self._forwards: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sha: dict[str, str] = {}
        # The append path's own lean connection (resp_writer); None: redis-py (TLS URLs).
        self._writer: RespWriter | None = None
        self._subscribed: set[str] = set()
        self.lag_observer: Any = None  # callable(seconds) for the sync-lag histogram
        #: callable(seconds): time from a dead owner's last heartbeat to this edge
        #: taking its rooms (failover detection), once per dead edge.
        self.failover_observer: Any = None
        self._failed_over: dict[str, float] = {}  # dead edge id -> when observed
        self._suspected: dict[str, float] = {}  # edge id -> when we last probed it

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Load scripts, create the inbox, start background tasks."""
        await self._load_scripts()
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
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
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
        the room without waiting for its lease poll.
        """
        self._tails.pop(room, None)
        self._owners.pop(room, None)
        tok = self._owned.get(room)
        try:
            await self._unsubscribe(room)
            if tok is not None:
                await self.flush()
                if not self._appends.get(room) and self._owned.get(room) == tok:
                    del self._owned[room]
                    if hand_to:
                        new: Any = await self._script(
                            "handover", 1, K.room_owner(room), tok, hand_to,
                            self.lease_ms)
                        if new:
                            self.stats.handovers += 1
                            token = new.decode() if isinstance(new, bytes) else str(new)
                            await self.r.xadd(K.edge_inbox(hand_to),
                                              {"h": _pack([room, token])},
                                              maxlen=10_000, approximate=True)
                            # Mirrors learn the new owner now, not at their next
                            # lease poll: their publishes must not go to an inbox
                            # nobody reads once this edge has exited.
                            await self._publish_live(room, _pack(
                                [LIVE_OWNER, self.edge_id, room, hand_to]))
                            return
                    await self._script("release", 1, K.room_owner(room), tok)
        except (RedisError, SyncUnavailable) as exc:
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

    def forward(self, owner_edge: str, body: list[Any]) -> None:
        """Queue a publish for the owner edge's inbox."""
        self._forwards.append((owner_edge, _pack(body)))
        self._wake.set()

    def forward_ack(self, origin_edge: str, sender: str, req_id: int, epoch: int,
                    seq: int) -> None:
        """Tell ``origin_edge`` that a forwarded publish was a duplicate of ``(epoch, seq)``."""
        spawn(self._xadd_quiet(K.edge_inbox(origin_edge),
                               {"a": _pack([sender, req_id, epoch, seq])}))

    def publish_live(self, room: str, kind: int, body: list[Any]) -> None:
        """Send an ephemeral event to the other edges that have this room."""
        data = _pack([kind, self.edge_id, room, *body])
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
        for owner, data in forwards:
            commands.append(("XADD", K.edge_inbox(owner), "MAXLEN", "~", 10_000, "*", "p", data))
        if not commands:
            return False
        try:
            results = await self._execute(commands)
        except (RedisError, OSError) as exc:
            self.stats.stream_errors += 1
            self._forwards[:0] = forwards
            raise SyncUnavailable(str(exc)) from exc
        self.stats.stream_batches += 1
        now = time.monotonic()
        refused = False
        for (room, epoch, seq, n), res in zip(batches, results, strict=False):
            rq = self._appends.get(room)
            if isinstance(res, ResponseError):
                self.stats.stream_errors += 1
                if "FENCED" in str(res) and room in self._owned:
                    if await self._reclaim(room):
                        refused = True  # same epoch again: the batch goes next round
                        continue
                    del self._owned[room]
                    if rq is not None:
                        self.stats.stream_backlog -= len(rq)
                        self.stats.stream_dropped += len(rq)
                        del self._appends[room]
                    self.listener.on_lease_lost(room)
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
                        self._on_inbox(fields)
                    continue
                room = skey[len(K.PREFIX) + 6 : -5]  # "er:{room:" ... "}:log"
                for eid, fields in entries:
                    if room not in self._tails:
                        break
                    self._tails[room] = eid
                    self.stats.remote_deliveries += 1
                    self.listener.on_remote_message(room, history.parse_entry(eid, fields))

    def _on_inbox(self, fields: dict[bytes, bytes]) -> None:
        try:
            if b"p" in fields:
                room, sender, payload, origin, req_id, idem = msgpack.unpackb(
                    fields[b"p"], raw=False)
                self.listener.on_forwarded_publish(room, sender, payload, origin, req_id, idem)
            elif b"a" in fields:
                sender, req_id, epoch, seq = msgpack.unpackb(fields[b"a"], raw=False)
                self.listener.on_remote_ack(sender, req_id, epoch, seq)
            elif b"h" in fields:
                room, token = msgpack.unpackb(fields[b"h"], raw=False)
                if room in self._tails and isinstance(token, str):
                    spawn(self._adopt(room, token))
        except (ValueError, TypeError, msgpack.UnpackException):
            log.warning("bad inbox entry dropped")

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
            pipe.evalsha(self._sha["renew"], 2, K.room_owner(room), K.room_epoch(room), tok,
                         self.lease_ms)
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
        if room not in self._tails or not token.startswith(self.edge_id + ":"):
            return
        await self._catch_up(room)
        cur: Any = await self.r.get(K.room_owner(room))
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
        for eid, fields in entries:
            if self._tails.get(room) is None:
                return
            self._tails[room] = eid
            self.listener.on_remote_message(room, history.parse_entry(eid, fields))

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
            if msg is None or msg.get("type") != "message":
                continue
            try:
                kind, edge, room, *body = msgpack.unpackb(msg["data"], raw=False)
            except (ValueError, TypeError, msgpack.UnpackException):
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
