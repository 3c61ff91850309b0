"""The edge -> origin uplink: batched XADDs behind a circuit breaker, spooled to disk.

Usage (one per edge process)::

    up = Uplink(UplinkSettings(redis_url=..., edge_id="edge-1", spool_path="/var/lib/er/up.db"))
    await up.start()                 # opens the spool; drains it if it is not empty
    up.submit("telemetry", "dev-7", {"temp": 21.5})   # never blocks, never raises on Redis
    ...
    await up.stop()                  # sends what it can within stop_timeout, spools the rest

Order: entries of one shard (one room or device always maps to one shard) reach Redis
in submit order.  While the breaker is open or the spool is not empty, every entry goes
through the spool (FIFO), so live traffic resumes only after the spool has drained.

Delivery is at least once: a batch whose XADD timed out is re-sent (it may have
landed), so the origin deduplicates by ``(edge_id, seq)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from edge_node.redis_io import conn as redis_conn
from edge_node.redis_io.resp_writer import RespWriter
from edge_node.uplink.breaker import BreakerState, CircuitBreaker
from edge_node.uplink.spool import OVERFLOW_POLICIES, Spool
from edge_node.uplink.wire import pack_batch, pack_entry, shard_of, stream_key

__all__ = ["Uplink", "UplinkSettings"]

log = logging.getLogger("edge_node.uplink")
T = TypeVar("T")

#: Idempotency ids are reserved from the spool in blocks of this size.
SEQ_BLOCK = 1 << 22


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """Uplink settings; every limit has a safe default."""

    redis_url: str
    edge_id: str
    #: Number of uplink streams ``er:{up:0..shards-1}:stream`` (must match the origin's).
    shards: int = 4
    #: SQLite file of the spool; ``":memory:"`` = volatile (lost on a crash).
    spool_path: str = ":memory:"
    #: Spool bound (entries) and what to do past it: ``drop_oldest`` or ``reject_new``.
    spool_max_entries: int = 1_000_000
    overflow: str = "drop_oldest"
    #: SQLite ``synchronous``: ``FULL`` (fsync every commit), ``NORMAL``, ``OFF``.
    fsync: str = "NORMAL"
    #: Entries held in memory before they must be sent or spooled (same overflow policy).
    max_memory_entries: int = 200_000
    #: Entries per XADD (one stream entry) and how long to wait for more, seconds: a
    #: send goes out once the oldest waiting entry has waited ``linger`` (or a full
    #: batch is waiting), so an entry waits at most ``linger`` plus the send before it.
    batch_max: int = 500
    linger: float = 0.002
    #: Most entries one round trip sends (one pipeline of XADDs of ``batch_max`` each).
    #: A busy edge loop makes each round trip long; a small cap would then bound the
    #: uplink's rate and let the backlog (and the lag) grow.
    send_max: int = 20_000
    #: Rows read from the spool per drain round trip.
    drain_rows: int = 5_000
    #: A Redis round trip slower than this counts as a failure, seconds.
    call_timeout: float = 2.0
    #: Breaker: consecutive failures to open, first open period, longest open period.
    failure_threshold: int = 3
    reset_timeout: float = 0.5
    max_reset_timeout: float = 5.0
    #: Approximate cap of each uplink stream, in batches (bounds an origin outage).
    stream_maxlen: int = 100_000
    #: Seconds :meth:`Uplink.stop` keeps trying to send before spooling the rest.
    stop_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.shards < 1 or self.batch_max < 1 or self.max_memory_entries < 1 \
                or self.send_max < 1:
            raise ValueError("shards, batch_max, send_max and max_memory_entries must be >= 1")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}")


class Uplink:
    """Sends entries to the uplink streams.  Counters are plain attributes, read them
    at scrape time: ``submitted``, ``sent``, ``spooled``, ``drained``, ``dropped_overflow``,
    ``batches``, ``errors``; gauges: :attr:`spool_size`, :attr:`backlog`,
    :attr:`breaker_state`."""

    def __init__(self, settings: UplinkSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.breaker = CircuitBreaker(settings.failure_threshold, settings.reset_timeout,
                                      settings.max_reset_timeout)
        self.submitted = 0
        self.sent = 0
        self.spooled = 0
        self.drained = 0
        self.dropped_overflow = 0
        self.batches = 0
        self.errors = 0
        self._queue: deque[tuple[int, bytes]] = deque()
        #: Monotonic time the oldest entry of the memory queue was submitted.
        self._first_at = 0.0
        self._inflight: list[tuple[int, bytes]] = []
        self._spool: Spool | None = None
        self._spool_count = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uplink-spool")
        self._redis: aioredis.Redis | None = None
        #: The lean pipelined connection for the XADDs (plain ``redis://``/``unix://``
        #: URLs); None: redis-py's pipeline (Redis Cluster, TLS).
        self._writer: RespWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._seq = 0
        self._seq_hi = 0
        self._reserving = False

    # -- gauges ---------------------------------------------------------------

    @property
    def spool_size(self) -> int:
        """Entries waiting in the on-disk spool."""
        return self._spool_count

    @property
    def backlog(self) -> int:
        """Entries accepted but not yet in Redis (memory + in flight + spool)."""
        return len(self._queue) + len(self._inflight) + self._spool_count

    @property
    def breaker_state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        return self.breaker.state.value

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool, reserve idempotency ids, start sending (a non-empty spool drains
        first).  Does not need Redis to be reachable."""
        s = self.settings
        self._spool = await self._db(Spool, s.spool_path, max_entries=s.spool_max_entries,
                                     overflow=s.overflow, synchronous=s.fsync)
        spool = self._spool
        self._spool_count = spool.count
        # Time floor (µs) as well as the stored reservation: ids stay unique even if the
        # spool file was lost, as long as fewer than 10^6 entries/s are submitted.
        self._seq, self._seq_hi = await self._db(spool.reserve_seq, time.time_ns() // 1000,
                                                 SEQ_BLOCK)
        if not redis_conn.is_cluster(s.redis_url):
            self._writer = RespWriter.from_url(s.redis_url, connect_timeout=s.call_timeout,
                                               timeout=s.call_timeout)
        self._redis = redis_conn.connect(
            s.redis_url, socket_timeout=s.call_timeout, socket_connect_timeout=s.call_timeout,
            retry=Retry(NoBackoff(), 0))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="uplink")
        if self._spool_count:
            log.info("uplink draining spool", extra={"spool": self._spool_count})

    async def stop(self) -> None:
        """Send what can be sent within ``stop_timeout``; spool the rest; close."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.settings.stop_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        rest = self._inflight + list(self._queue)
        self._inflight, self._queue = [], deque()
        if rest and self._spool is not None:
            await self._to_spool(rest)
        if self._spool is not None:
            await self._db(self._spool.close)
        self._pool.shutdown(wait=True)
        if self._writer is not None:
            await self._writer.close()
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()

    # -- the hot path ---------------------------------------------------------

    def submit(self, kind: str, key: str, body: dict[str, Any] | bytes) -> None:
        """Queue one entry for the origin.  Never blocks; never raises because of Redis.
        Raises :class:`~edge_node.uplink.wire.WireError` (a ``ValueError``) if ``body``
        cannot be packed, ``RuntimeError`` if called before :meth:`start` or after
        :meth:`stop`."""
        if self._spool is None or self._closing:
            raise RuntimeError("Uplink.submit() before start() or after stop()")
        seq = self._seq
        data = pack_entry(seq, kind, key, time.time_ns() // 1_000_000, body)
        self._seq = seq + 1
        if seq + 1 >= self._seq_hi - SEQ_BLOCK // 2 and not self._reserving:
            self._reserving = True
            asyncio.get_running_loop().create_task(self._reserve())
        self.submitted += 1
        q = self._queue
        if len(q) >= self.settings.max_memory_entries:
            self.dropped_overflow += 1
            if self.settings.overflow == "reject_new":
                return
            q.popleft()
        q.append((shard_of(key, self.settings.shards), data))
        if len(q) == 1:
            self._first_at = time.monotonic()
            self._wake.set()
        elif len(q) >= self.settings.batch_max:
            self._wake.set()

    async def _reserve(self) -> None:
        assert self._spool is not None
        try:
            _, hi = await self._db(self._spool.reserve_seq, self._seq, SEQ_BLOCK)
            self._seq_hi = hi
        finally:
            self._reserving = False

    # -- the sender -----------------------------------------------------------

    async def _run(self) -> None:
        s = self.settings
        while True:
            if not self._queue and not self._spool_count:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._spool_count or not self.breaker.allow(self.clock()):
                if not await self._spool_mode():
                    return
                continue
            if s.linger and len(self._queue) < s.batch_max and not self._closing:
                # Entries that came in while the last send was in flight have waited
                # already: linger only for what is left of the oldest one's wait.
                wait = self._first_at + s.linger - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            n = min(len(self._queue), s.send_max)
            self._inflight = [self._queue.popleft() for _ in range(n)]
            if self._queue:
                self._first_at = time.monotonic()
            if await self._send(self._inflight):
                self.sent += n
            else:
                # The spool is empty here, so the failed batch goes in ahead of the queue.
                await self._to_spool(self._inflight)
            self._inflight = []

    async def _spool_mode(self) -> bool:
        """One step while the spool is in use: spill memory to it, then drain a chunk.
        False when closing with Redis unavailable (the spool keeps the rest)."""
        assert self._spool is not None
        if self._queue:
            rows = list(self._queue)
            self._queue.clear()
            self._inflight = rows
            await self._to_spool(rows)
            self._inflight = []
        now = self.clock()
        if self._spool_count and self.breaker.allow(now):
            rows3 = await self._db(self._spool.peek, self.settings.drain_rows)
            if not rows3:
                self._spool_count = 0
                return True
            if await self._send([(sh, d) for _, sh, d in rows3]):
                await self._db(self._spool.delete_upto, rows3[-1][0])
                self._spool_count = self._spool.count
                self.sent += len(rows3)
                self.drained += len(rows3)
            return True
        if self._closing:
            return False  # everything is on disk; a later start() drains it
        wait = max(min(self.breaker.retry_at() - now, 0.05), 0.001)
        await asyncio.sleep(wait)
        return True

    async def _send(self, rows: list[tuple[int, bytes]]) -> bool:
        """XADD ``rows`` (in order per shard) in one pipeline; feed the breaker."""
        assert self._redis is not None
        s = self.settings
        by_shard: dict[int, list[bytes]] = {}
        for shard, data in rows:
            by_shard.setdefault(shard, []).append(data)
        adds: list[tuple[str, dict[str, bytes]]] = []
        for shard, datas in by_shard.items():
            key = stream_key(shard)
            for i in range(0, len(datas), s.batch_max):
                adds.append((key, pack_batch(s.edge_id, datas[i:i + s.batch_max])))
        try:
            if self._writer is not None:
                # One write and one reply future: fewer event-loop turns per round trip
                # than redis-py's pipeline (they are long on a busy edge) and a fraction
                # of its CPU.  The writer's own timeout is call_timeout.
                replies = await self._writer.execute([
                    ("XADD", key, "MAXLEN", "~", s.stream_maxlen, "*",
                     *(x for kv in fields.items() for x in kv)) for key, fields in adds])
                bad = next((r for r in replies if isinstance(r, ResponseError)), None)
                if bad is not None:
                    raise bad
            else:
                pipe = self._redis.pipeline(transaction=False)
                for key, fields in adds:
                    pipe.xadd(key, cast(Any, fields), maxlen=s.stream_maxlen,
                              approximate=True)
                await asyncio.wait_for(pipe.execute(), s.call_timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            if self._writer is None:
                with contextlib.suppress(RedisError, OSError):
                    await redis_conn.rediscover(self._redis)  # a cluster failover? re-map
            self.breaker.record_failure(self.clock())
            if self.breaker.state is BreakerState.OPEN:
                log.warning("uplink breaker open", extra={"error": repr(exc)})
            return False
        self.batches += len(adds)
        self.breaker.record_success(self.clock())
        return True

    async def _to_spool(self, rows: list[tuple[int, bytes]]) -> None:
        assert self._spool is not None
        res = await self._db(self._spool.append, rows)
        self.spooled += res.stored
        self.dropped_overflow += res.dropped_oldest + res.rejected
        self._spool_count = self._spool.count

    async def _db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a spool call on the spool's own thread (serialised, off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kw))
