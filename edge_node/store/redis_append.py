"""The append/flush pipeline of :class:`~edge_node.store.redis_sync.RoomSync`: queued
room-stream appends and forwarded publishes, sent to Redis in batches by one task.

Contract:

- :meth:`AppendPipeline.append` and :meth:`AppendPipeline.queue_forward` only queue
  and wake the flusher (:meth:`AppendPipeline.run`); they never block or touch Redis.
- :meth:`AppendPipeline.flush` sends everything queued in one round trip (the lean
  :class:`~edge_node.redis_io.resp_writer.RespWriter`, or redis-py for TLS URLs): each
  room's appends as ``APPEND`` script calls of at most ``batch`` entries, fenced by
  the room's lease token from ``owned``, then the forwards (``XADD`` to the owner's
  inbox).  Flushes never overlap.
- A stored batch leaves the queue in order; its last position goes into ``durable``
  and to ``listener.on_durable`` (publishers get their ACK).  A refused batch stays
  queued for the next round, except after ``FENCED`` when the lease cannot be
  reclaimed: then the room leaves ``owned``, its queue is dropped and
  ``listener.on_lease_lost`` is called (unless the lease loop already did).
- Loss detection (:mod:`edge_node.store.redis_loss`) is called back, never owned:
  after connection trouble or a lost lease the next flush first runs ``check_tails``;
  a ``GAP`` refusal goes to ``lost``.

``owned``, ``durable`` and ``sha`` are the room store's own tables, shared by
reference: this class reads ``owned`` (and removes a room whose lease it finds lost),
writes ``durable`` after each stored batch, and only reads ``sha``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io import keys as K
from edge_node.redis_io.resp_cluster import ClusterRespWriter
from edge_node.redis_io.resp_writer import RespWriter
from edge_node.store import lua_scripts as lua
from edge_node.store.records import LIVE_APPENDED, LiveEvent
from edge_node.store.types import SyncListener, SyncUnavailable

__all__ = ["AppendPipeline"]

log = logging.getLogger("edge_node.sync")


class AppendPipeline:
    """Queues and flushes one edge's appends and forwards (see the module docstring).
    Call :meth:`connect` before :meth:`flush`, and :meth:`close` last."""

    def __init__(
        self, r: aioredis.Redis, *, edge_id: str, listener: SyncListener, stats: Any,
        lease_ms: int, maxlen: int, batch: int, linger: float,
        owned: dict[str, str], durable: dict[str, tuple[int, int]], sha: dict[str, str],
        script: Callable[..., Awaitable[Any]], check_tails: Callable[[], Awaitable[None]],
        lost: Callable[[str, str], bool],
    ) -> None:
        self.r = r
        self.edge_id = edge_id
        self.listener = listener
        self.stats = stats
        self.lease_ms = lease_ms
        self.maxlen = maxlen
        self.batch = batch
        self.linger = linger
        self._owned = owned
        self._durable = durable
        self._sha = sha
        self._script = script
        self._check_tails = check_tails
        self._lost = lost
        # room -> queued (epoch, seq, data, assigned at); kept until Redis has them.
        self._queues: dict[str, deque[tuple[int, int, bytes, float]]] = {}
        self._forwards: list[tuple[str, bytes]] = []  # (owner edge, packed Forwarded)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._verify = False  # check stream ends against durable before the next flush
        #: The append path's own lean connection (resp_writer); None: redis-py (TLS URLs).
        self.writer: RespWriter | ClusterRespWriter | None = None
        self.lag_observer: Any = None  # callable(seconds) for the sync-lag histogram

    async def connect(self, url: str, *, cluster: bool, wait_replicas: int,
                      wait_ms: int) -> None:
        """Open the lean writer (none for TLS URLs: redis-py carries the appends)."""
        if cluster:
            seeds, opts = redis_conn.cluster_seeds(url)
            self.writer = None if opts.get("ssl") else ClusterRespWriter(
                seeds, username=opts.get("username"), password=opts.get("password"),
                connect_timeout=2.0, timeout=5.0, scripts=[lua.APPEND],
                wait_replicas=wait_replicas, wait_ms=wait_ms)
        else:
            self.writer = RespWriter.from_url(url, connect_timeout=2.0, timeout=5.0,
                                              scripts=[lua.APPEND])
        if self.writer is not None:
            await self.writer.connect()

    async def close(self) -> None:
        """Close the lean writer (the redis-py client is the room store's)."""
        if self.writer is not None:
            await self.writer.close()

    # -- queueing -----------------------------------------------------------

    def append(self, room: str, epoch: int, seq: int, data: bytes) -> None:
        """Queue one message for the room stream (owner only; never blocks)."""
        buf = self._queues.get(room)
        if buf is None:
            buf = self._queues[room] = deque()
        buf.append((epoch, seq, data, time.monotonic()))
        self.stats.stream_backlog += 1
        self._wake.set()

    def queue_forward(self, owner_edge: str, data: bytes) -> None:
        """Queue a packed :class:`~edge_node.store.records.Forwarded` for the owner's inbox."""
        self._forwards.append((owner_edge, data))
        self._wake.set()

    def queue_forwards(self, forwards: list[tuple[str, bytes]]) -> None:
        """Queue forwards held back meanwhile (``(owner edge, packed body)``, in order)."""
        self._forwards.extend(forwards)
        self._wake.set()

    def last_queued(self, room: str) -> tuple[int, int] | None:
        """Position of the newest append still waiting for Redis, if any."""
        q = self._queues.get(room)
        return (q[-1][0], q[-1][1]) if q else None

    def pending(self, room: str) -> bool:
        """True while the room has appends waiting for Redis."""
        return bool(self._queues.get(room))

    def drop(self, room: str) -> None:
        """Forget the room's queued appends (they will never be durable here)."""
        q = self._queues.pop(room, None)
        if q:
            self.stats.stream_backlog -= len(q)
            self.stats.stream_dropped += len(q)

    # -- flushing -----------------------------------------------------------

    async def run(self) -> None:
        """The flusher task: flush whenever something is queued, backing off while
        Redis cannot be reached or refuses batches."""
        backoff = 0.05
        while True:
            await self._wake.wait()
            if self.linger > 0:
                # Gather a few more messages per round trip: acks wait a little,
                # local fan-out never does.
                await asyncio.sleep(self.linger)
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
                if any(self._queues.values()) or self._forwards:
                    self._wake.set()

    async def flush(self) -> bool:
        """Send queued appends and forwards (one pipeline).  Failed appends stay queued.

        Returns True if Redis refused a batch (an error other than FENCED).  Raises
        :class:`~edge_node.store.types.SyncUnavailable` on connection trouble (the
        forwards are queued again).
        """
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        if self._verify:
            await self._check_tails()
            self._verify = False
        forwards, self._forwards = self._forwards, []
        batches: list[tuple[str, int, int, int]] = []  # room, last epoch, last seq, count
        commands: list[tuple[Any, ...]] = []
        for room, q in list(self._queues.items()):
            tok = self._owned.get(room)
            if tok is None:  # fenced meanwhile: these will never be durable here
                self.drop(room)
                continue
            items = list(q)
            for i in range(0, len(items), self.batch):
                chunk = items[i : i + self.batch]
                args: list[int | bytes] = []
                for epoch, seq, data, _t in chunk:
                    args += (epoch, seq, data)
                commands.append(("EVALSHA", self._sha["append"], 2, K.room_owner(room),
                                 K.room_log(room), tok, self.maxlen, *args))
                batches.append((room, chunk[-1][0], chunk[-1][1], len(chunk)))
        if isinstance(self.writer, ClusterRespWriter):  # after the appends, same node
            for room in dict.fromkeys(b[0] for b in batches):
                commands.append(("PUBLISH", K.room_live(room),
                                 LiveEvent(LIVE_APPENDED, self.edge_id, room).pack()))
        for owner, data in forwards:
            commands.append(("XADD", K.edge_inbox(owner), "MAXLEN", "~", 10_000, "*", "p", data))
        if not commands:
            return False
        try:
            results = await self.execute(commands)
        except (RedisError, OSError) as exc:
            self.stats.stream_errors += 1
            self._forwards[:0] = forwards
            self._verify = bool(self._durable)  # a failover? check the tails first
            raise SyncUnavailable(str(exc)) from exc
        self.stats.stream_batches += 1
        refused = await self._settle(batches, results)
        self.stats.forwarded_publishes += len(forwards)
        return refused

    async def _settle(self, batches: list[tuple[str, int, int, int]],
                      results: list[Any]) -> bool:
        """Apply the replies of one flush's batches; True if Redis refused one."""
        now = time.monotonic()
        refused = False
        reclaimed: set[str] = set()
        for (room, epoch, seq, n), res in zip(batches, results, strict=False):
            rq = self._queues.get(room)
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
                    if rq is not None and self._queues.get(room) is rq:
                        self.drop(room)
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
                del self._queues[room]
            self.stats.stream_backlog -= n
            self.stats.stream_appended += n
            self._durable[room] = (epoch, seq)
            self.listener.on_durable(room, epoch, seq)
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

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one round trip; errors come back as values, not raised.

        The dedicated :class:`RespWriter` costs a fraction of redis-py's CPU per
        round trip (at game publish rates most flushes carry one room's batch);
        it raises an ``OSError`` on connection trouble and re-loads the append
        script on ``NOSCRIPT``.  Without it (TLS URLs), a single command skips
        redis-py's pipeline machinery, which costs more than a direct call.
        """
        if self.writer is not None:
            return await self.writer.execute(commands)
        if len(commands) == 1:
            try:
                return [await self.r.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                return [exc]
        pipe = self.r.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd)
        return list(await pipe.execute(raise_on_error=False))
