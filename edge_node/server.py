"""The edge's composition root: WebSocket listener, QUIC/WebTransport listener,
sessions, hub, Redis sync, registry, ``/metrics`` and ``/healthz`` on the
WebSocket port (no helper thread).

The session loop (:meth:`EdgeServer.serve_conn`: HELLO, resume, checkpoint,
frames, cleanup) is written once over :class:`~edge_node.transports.connection.SessionConn`;
WebSocket and QUIC connections are adapted to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Decoder,
    ErrorCode,
    Neighbours,
    Resumed,
    Welcome,
    encode,
)
from edge_node.config import EdgeSettings
from edge_node.fanout.hub import Hub, HubSettings
from edge_node.iot.downlink import DownlinkConsumer
from edge_node.iot.service import IotService, iot_settings
from edge_node.neighbours.geo import rank_edges
from edge_node.neighbours.registry import Registry, is_draining, live_edges
from edge_node.redis_io import conn as redis_conn
from edge_node.runtime.fd_limits import default_max_connections
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.runtime.tasks import spawn
from edge_node.sessions.handshake import parse_resume, read_hello
from edge_node.sessions.session import ClientSession, SessionClose, new_session_id
from edge_node.sessions.session_store import (
    CheckpointUnavailable,
    SessionStore,
    resume_token,
    verify_resume_token,
)
from edge_node.store.memory import MemoryBackend, MemoryRoomStore
from edge_node.store.redis_sync import RoomSync
from edge_node.transports.connection import ConnectionGone, SessionConn, WsConn
from edge_node.transports.outbound import Flusher
from edge_node.uplink import ShardCountMismatch, Uplink, UplinkSettings, claim_shard_count

if TYPE_CHECKING:
    from edge_node.transports.quic import QuicListener

__all__ = ["EdgeServer"]

log = logging.getLogger("edge_node.server")

_PROM_CT = "text/plain; version=0.0.4; charset=utf-8"


class EdgeServer:
    """One edge node.  ``await start()``, then ``await stop()`` (or ``run()``)."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.metrics = EdgeMetrics(settings.edge_id)
        self.stats = self.metrics.stats
        self.hub = Hub(settings.edge_id, self.metrics, HubSettings(
            ring_size=settings.ring_size, max_replay=settings.max_replay))
        self.store: SessionStore | None = None
        self.uplink: Uplink | None = None
        self.decoder = Decoder(settings.limits)
        self.sessions: dict[str, tuple[ClientSession, SessionConn]] = {}
        self.server: Server | None = None
        self.sync: RoomSync | None = None
        self.registry: Registry | None = None
        self._redis: aioredis.Redis | None = None
        self._flusher: Flusher | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopping = False
        self.draining = False
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self.neighbours: list[tuple[str, str]] = []  # (edge id, url), best first
        #: Draining: session id -> wall-clock time of its HANDOFF (in its checkpoint as
        #: "ho", so the neighbour it resumes on measures the handover time).
        self.handoff_at: dict[str, float] = {}
        self._conn_tokens = settings.connect_rate
        self._conn_last = time.monotonic()
        #: Sessions admitted at most (503 + retry hint past it): set, or from the
        #: descriptor limit this process has now.
        self.max_connections = settings.max_connections or default_max_connections(
            resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self._cpu_mark = (time.monotonic(), time.process_time())
        #: Set when an operator asked for a drain through the origin (admin API); the
        #: runner then drains exactly as on SIGTERM.
        self.drain_requested = asyncio.Event()
        self.port = settings.port
        self.iot = IotService(iot_settings(settings), self.hub, settings.edge_id)
        self.iot.register_metrics(self.metrics.registry)
        self.downlink: DownlinkConsumer | None = None
        self.quic: QuicListener | None = None
        self.quic_handshakes = 0

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis (if configured), then listen."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._flusher = Flusher(loop, s.write_delay, s.write_interval)
        if s.redis_url:
            try:
                self.sync = RoomSync(
                    s.redis_url, s.edge_id, self.hub, lease_ms=s.lease_ms,
                    stream_maxlen=s.stream_maxlen, append_batch=s.append_batch,
                    stats=self.stats, edge_ttl=s.heartbeat_ttl, append_linger=s.append_linger,
                    wait_replicas=s.redis_wait_replicas,
                )
            except redis_conn.ClusterURLError as exc:
                raise RuntimeError(f"bad Redis URL {s.redis_url!r}: {exc}") from exc
            try:
                await self.sync.start()
            except (RedisError, OSError) as exc:
                raise RuntimeError(f"cannot reach Redis at {s.redis_url}: {exc} (start it, or "
                                   "point --redis-url / REDIS_URL at a running one)") from exc
            try:
                await claim_shard_count(self.sync.r, s.uplink_shards, "--uplink-shards")
            except ShardCountMismatch as exc:
                await self.sync.stop()
                raise RuntimeError(str(exc)) from None
            self.hub.store = self.sync
            self.sync.lag_observer = self.metrics.sync_lag_seconds.observe
            self.sync.failover_observer = self.metrics.failover_detection_seconds.observe
            self.uplink = Uplink(UplinkSettings(
                redis_url=s.redis_url, edge_id=s.edge_id, shards=s.uplink_shards,
                spool_path=s.uplink_spool or ":memory:", spool_max_entries=s.uplink_spool_max,
                overflow=s.uplink_overflow, fsync=s.uplink_fsync))
            await self.uplink.start()  # works with Redis down; drains an old spool first
            self.hub.uplink = self.uplink
            self.hub.uplink_rooms = s.uplink_rooms
            self.metrics.uplink = self.uplink
            self.iot.start(self.uplink)  # right after uplink.start(): see IotService.start
            self.downlink = self.iot.downlink = DownlinkConsumer(
                s.redis_url, s.edge_id, self.iot.deliver_command)
            self.downlink.start()
        else:
            # No Redis: rooms live in this process (leases, history up to stream_maxlen).
            self.hub.store = MemoryRoomStore(MemoryBackend(s.stream_maxlen), s.edge_id,
                                             self.hub, self.stats)
            self.iot.start(None)
        if s.quic_port is not None:
            # Before the WebSocket port: once /healthz answers, QUIC is up too.
            from edge_node.transports.quic import (
                QuicListener,  # aioquic is only imported when QUIC is on
            )

            self.quic = QuicListener(self)
            await self.quic.start()
        try:
            self.server = await self._serve_ws()
        except BaseException:
            if self.quic is not None:
                self.quic.stop()
            raise
        sock = next(iter(self.server.sockets))
        self.port = sock.getsockname()[1]
        if s.redis_url:
            # Bounded and blocking (see RoomSync): storms queue instead of failing.
            self._redis = redis_conn.connect(s.redis_url, max_connections=64,
                                             blocking_pool=True, socket_timeout=5.0)
            self.store = SessionStore(self._redis, s.resume_window)
            url = s.public_url or f"ws://{s.host}:{self.port}"
            self.registry = Registry(
                self._redis, s.edge_id, url=url, region=s.region,
                interval=s.heartbeat_interval, ttl=s.heartbeat_ttl, load=self._load,
                on_control=self._on_control,
            )
            self.registry.start()
        self._housekeeping = loop.create_task(self._housekeep(), name="housekeeping")
        log.info("edge listening", extra={"edge_id": s.edge_id, "port": self.port,
                                          "redis": bool(s.redis_url),
                                          "max_connections": self.max_connections})

    async def _serve_ws(self) -> Server:
        s = self.settings
        return await serve(
            self._handle,
            s.host,
            s.port,
            process_request=self._process_request,
            compression=None,
            max_size=s.limits.max_frame_bytes + 1024,
            max_queue=64,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            open_timeout=s.handshake_timeout,
            close_timeout=1.0,
            backlog=s.backlog,
            server_header=None,
        )

    async def stop(self) -> None:
        """Close every client with 4100 (go to a neighbour), flush, deregister."""
        self._stopping = True
        if self.server is not None:
            self.server.close(close_connections=False)
        conns = [conn for _, conn in list(self.sessions.values())]

        async def close_one(conn: SessionConn) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(ErrorCode.SHUTTING_DOWN, "edge shutting down"),
                                       1.5)
            conn.abort()  # a client that does not answer the close

        # All at once, under one deadline: a slow client must not delay the others.
        await asyncio.gather(*(close_one(ws) for ws in conns))
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 3.0)
        if self.quic is not None:
            self.quic.stop()
        if self._housekeeping:
            self._housekeeping.cancel()
        if self.downlink is not None:
            await self.downlink.stop()
        await self.iot.stop()  # closes open windows: their rollups go to the uplink
        if self.uplink:
            up, self.uplink, self.hub.uplink = self.uplink, None, None  # no submit after stop
            up.submit("edge_status", self.settings.edge_id,
                      {"connections": 0, "rooms": 0, "stopped": True})
            await up.stop()
        if self.registry:
            await self.registry.stop()
        if self.sync:
            await self.sync.stop()
        if self._redis:
            await self._redis.aclose()

    def _load(self) -> dict[str, float]:
        """Registry heartbeat fields: load (connections, rooms, CPU % of one core since the
        last beat, bytes queued to clients, messages delivered so far), draining flag, and
        position if known."""
        now, cpu = time.monotonic(), time.process_time()
        t0, c0 = self._cpu_mark
        self._cpu_mark = (now, cpu)
        queued = 0
        for session, _ws in self.sessions.values():
            queued += session.out.queued_bytes()
        load: dict[str, float] = {
            "connections": self.stats.connections, "rooms": self.stats.rooms,
            "draining": int(self.draining or self._stopping),
            "cpu": round(100.0 * (cpu - c0) / max(now - t0, 1e-3), 1),
            "send_queue_bytes": queued,
            # Messages delivered so far: the origin's demand forecast takes its rate.
            "msgs_out": self.stats.deliveries,
        }
        if self.settings.position is not None:
            load["lat"], load["lon"] = self.settings.position
        return load

    async def wait_no_sessions(self, timeout: float) -> bool:
        """Wait until no client is connected (at most ``timeout`` s); True if so."""
        try:
            await asyncio.wait_for(self._no_sessions.wait(), max(0.0, timeout))
        except TimeoutError:
            return False
        return True

    async def live_neighbours(self) -> list[tuple[str, str]]:
        """Other live, non-draining edges as ``(edge id, url)``: nearest first when edges
        registered positions, then least loaded (:func:`~edge_node.neighbours.geo.rank_edges`)."""
        if self._redis is None:
            return []
        try:
            infos = await live_edges(self._redis, self.settings.heartbeat_ttl)
        except RedisError:
            return self.neighbours
        others = [i for i in infos if i.get("id") != self.settings.edge_id
                  and not is_draining(i) and i.get("url")]
        return [(i["id"], i["url"]) for i in rank_edges(others, self.settings.position)]

    async def _refresh_neighbours(self) -> None:
        fresh = await self.live_neighbours()
        if fresh != self.neighbours:
            self.neighbours = fresh
            frame = encode(Neighbours(tuple(url for _, url in fresh)))
            for session, _ws in list(self.sessions.values()):
                session.send(frame)

    def _on_control(self, request: bytes) -> None:
        """An operator request left by the origin (``drain``), read with the heartbeat."""
        if request == b"drain" and not self.drain_requested.is_set():
            log.warning("drain requested through the origin")
            self.drain_requested.set()

    def admit(self) -> float:
        """0 to admit a new connection (any transport), else seconds the client should
        wait (counted in ``edge_connects_rejected_total``): while draining, when
        ``max_connections`` sessions are open, or over the connect rate."""
        if self.draining or self._stopping:
            self.stats.connects_rejected += 1
            return 1.0
        if self.stats.connections >= self.max_connections:
            self.stats.connects_rejected += 1
            return 1.0  # full: the client tries a neighbour, or here again in a second
        rate = self.settings.connect_rate
        now = time.monotonic()
        self._conn_tokens = min(rate, self._conn_tokens + (now - self._conn_last) * rate)
        self._conn_last = now
        if self._conn_tokens >= 1.0:
            self._conn_tokens -= 1.0
            return 0.0
        self.stats.connects_rejected += 1
        return (1.0 - self._conn_tokens) / rate

    async def _housekeep(self) -> None:
        last_cp = last_nb = last_st = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            self.hub.tick(now)
            if self.uplink is not None and now - last_st >= 5.0:
                last_st = now
                self.uplink.submit("edge_status", self.settings.edge_id, {
                    "connections": self.stats.connections, "rooms": self.stats.rooms,
                    "uplink_backlog": self.uplink.backlog, "breaker": self.uplink.breaker_state,
                    "draining": self.draining})
            if now - last_nb >= self.settings.heartbeat_interval:
                last_nb = now
                try:
                    await self._refresh_neighbours()
                except Exception:
                    log.exception("neighbour refresh failed")
            if now - last_cp >= self.settings.checkpoint_interval:
                last_cp = now
                try:
                    await self._checkpoint_all()
                except Exception:
                    log.exception("checkpointing failed")

    # -- HTTP on the WebSocket port -----------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            body = (
                f'{{"status":"ok","edge_id":"{self.settings.edge_id}",'
                f'"connections":{self.stats.connections},'
                f'"max_connections":{self.max_connections},"pid":{os.getpid()}}}'
            ).encode()
            if self._stopping or self.draining:
                return self._response(503, b'{"status":"draining"}', "application/json")
            return self._response(200, body, "application/json")
        if path == "/metrics":
            return self._response(200, self.metrics.render(), _PROM_CT)
        if self.quic is not None and path in self.quic.pages:
            status, ctype, page = self.quic.page(path)
            return self._response(status, page, ctype)
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return self._response(404, b"not found: try /healthz, /metrics or a WebSocket\n",
                                  "text/plain")
        wait = self.admit()
        if wait:
            resp = self._response(503, b"edge busy or draining: retry later\n", "text/plain")
            resp.headers["Retry-After"] = str(max(1, round(wait)))
            resp.headers["X-Retry-After-Ms"] = str(max(1, int(wait * 1000)))
            return resp
        return None

    @staticmethod
    def _response(status: int, body: bytes, ctype: str) -> Response:
        reasons = {200: "OK", 404: "Not Found", 409: "Conflict", 503: "Service Unavailable"}
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store")])
        return Response(status, reasons.get(status, ""), headers, body)

    # -- WebSocket sessions -------------------------------------------------

    async def _resume(self, session: ClientSession, rooms: dict[str, Any], invalid: str) -> None:
        """Re-join the rooms of a resumed session; one RESUMED frame per room."""
        for room, (flags, epoch, seq) in rooms.items():
            if not session.claims.may_join(room):
                session.send(encode(Resumed(room, False, epoch, seq, 0, "forbidden", {})))
                self.stats.recoveries["not_recovered"] += 1
                continue
            session.rooms.add(room)
            session.room_flags[room] = flags
            await self.hub.resume_join(session, room, flags, (epoch, seq), invalid)
            if session.closed:
                return

    def _checkpoint_data(self, s: ClientSession) -> dict[str, Any]:
        return {
            "sub": s.claims.subject, "kind": s.claims.kind, "edge": self.settings.edge_id,
            "rooms": {r: [s.room_flags.get(r, 0), *self.hub.position(r)] for r in s.rooms},
            **({"ho": self.handoff_at[s.session_id]} if s.session_id in self.handoff_at
               else {}),
        }

    async def _checkpoint_all(self) -> None:
        if self.store is None:
            return
        # Only sessions whose first (taking-over) write is done: before it, the
        # checkpoint may still name the previous connection.
        live = [(s, conn) for s, conn in self.sessions.values() if not s.closed]
        # Connections whose first (taking-over) write has not succeeded yet write
        # with force; the others only while they still hold the checkpoint.
        for force in (True, False):
            entries = [(s, ws) for s, ws in live if s.holding != force]
            if not entries:
                continue
            result = await self.store.save_many(
                [(s.session_id, s.holder, s.attempt, self._checkpoint_data(s))
                 for s, _ws in entries], force=force)
            if result is None:
                return  # Redis unreachable: try again next round
            written, stale = result
            self.stats.checkpoints += written
            stale_ids = set(stale)
            for s, ws in entries:
                if s.session_id not in stale_ids:
                    s.holding = True
                elif not s.closed:
                    # The client resumed on another connection (a half-open link
                    # here): this one must not speak for the session any more.
                    # (Match the very connection written for: the sid may belong
                    # to a newer one by now.)
                    s.moving = True
                    spawn(ws.close(ErrorCode.SESSION_TAKEN_OVER,
                                   "session resumed on another connection"))

    async def _handle(self, ws: ServerConnection) -> None:
        await self.serve_conn(WsConn(ws))

    async def serve_conn(self, conn: SessionConn) -> None:
        """Run one client connection (any transport) from HELLO to cleanup."""
        stats = self.stats
        session: ClientSession | None = None
        clean = False
        try:
            try:
                hello, claims = await read_hello(conn, self.decoder, self.settings.secrets,
                                                 self.settings.handshake_timeout)
                sid, resumed, invalid = new_session_id(), False, ""
                attempt = 0
                rooms: dict[str, Any] = {}
                if hello.resume is not None:
                    req = parse_resume(hello.resume,
                                       self.settings.limits.max_rooms_per_connection)
                    rooms = dict(req.rooms)
                    if verify_resume_token(self.settings.secrets, req.sid, claims.subject,
                                           req.rt):
                        sid, resumed = req.sid, True
                        attempt = req.attempt
                        try:
                            cp = await self.store.load(sid) if self.store is not None else None
                        except CheckpointUnavailable:
                            # Cannot tell whether the session may resume: never guess
                            # "expired" (that would skip the replay); have it retry.
                            stats.resumes["retry_later"] += 1
                            raise SessionClose(ErrorCode.OVERLOADED,
                                               "session store busy: retry") from None
                        if cp is None or cp.get("sub") != claims.subject:
                            invalid = "session_expired"
                        else:
                            ts = cp.get("ts")
                            if isinstance(ts, (int, float)):
                                self.metrics.resume_gap_seconds.observe(
                                    max(0.0, time.time() - ts))
                            ho = cp.get("ho")
                            if isinstance(ho, (int, float)):
                                self.metrics.handoff_seconds.observe(
                                    max(0.0, time.time() - ho))
                        if (cp is not None and self.sync is not None
                                and isinstance(cp.get("edge"), str)):
                            # The client left its previous edge: if that edge is dead,
                            # move its rooms now rather than when its leases lapse.
                            self.sync.suspect(cp["edge"])
                    else:
                        invalid = "resume_rejected"
                    stats.resumes[invalid or "resumed"] += 1
            except SessionClose as exc:
                stats.errors[exc.code] += 1
                await conn.close(exc.code, exc.reason)
                return
            assert self._flusher is not None
            old = self.sessions.get(sid)
            if old is not None and old[0].attempt > attempt:
                # A late, abandoned connection attempt: the client is already on a
                # newer connection here; refuse this one instead of the live one.
                stats.errors[ErrorCode.SESSION_TAKEN_OVER] += 1
                await conn.close(ErrorCode.SESSION_TAKEN_OVER, "a newer connection holds it")
                return
            if old is not None:  # the same session on a connection that is now stale
                old[0].closed = True
                old[0].moving = True
                spawn(old[1].close(ErrorCode.SESSION_TAKEN_OVER,
                                   "session resumed on a newer connection here"))

            def slow() -> None:
                spawn(conn.close(ErrorCode.SLOW_CONSUMER, "send queue full: slow consumer"))

            session = ClientSession(
                session_id=sid, claims=claims, conn=conn, flusher=self._flusher,
                hub=self.hub, settings=self.settings, decoder=self.decoder, stats=stats,
                on_slow=slow,
            )
            session.attempt = attempt
            session.iot = self.iot
            if old is not None:
                old[0].cleanup()
            self.sessions[sid] = (session, conn)
            self._no_sessions.clear()
            stats.connections += 1
            stats.connections_total += 1
            lim = self.settings.limits
            session.send(encode(Welcome(sid, self.settings.edge_id, {
                "version": PROTOCOL_VERSION,
                "ping_interval": self.settings.ping_interval,
                "max_frame_bytes": lim.max_frame_bytes,
                "max_rooms": lim.max_rooms_per_connection,
                "neighbours": [url for _, url in self.neighbours],
                "region": self.settings.region,
                "resume_token": resume_token(self.settings.secrets[0], sid, claims.subject),
                "resume_window": self.settings.resume_window,
                "resumed": resumed and not invalid,
                "transport": conn.transport_name,
                **({"quic_url": self.quic.url} if self.quic is not None else {}),
                "ws_url": self.settings.public_url or f"ws://{self.settings.host}:{self.port}",
            })))
            if self.uplink is not None:
                self.uplink.submit("session", claims.subject, {
                    "online": True, "kind": claims.kind, "sid": sid})
            self.iot.attach(session)
            if hello.resume is not None:
                await self._resume(session, rooms, invalid)
            if self.store is not None:
                result = await self.store.save_many(
                    [(sid, session.holder, attempt, self._checkpoint_data(session))], force=True)
                if result is not None and result[1]:  # a newer connection holds it
                    session.moving = True
                    await conn.close(ErrorCode.SESSION_TAKEN_OVER, "a newer connection holds it")
                    return
                # On a Redis error the periodic checkpoint retries the take-over.
                session.holding = result is not None
            try:
                async for raw in conn.messages():
                    await session.handle(raw)
                clean = conn.clean
            except SessionClose as exc:
                stats.errors[exc.code] += 1
                session.out.flush()
                await conn.close(exc.code, exc.reason)
        except (ConnectionClosed, ConnectionGone):
            pass
        except Exception:
            log.exception("session failed")
            stats.errors[ErrorCode.INTERNAL] += 1
            with contextlib.suppress(Exception):
                await conn.close(ErrorCode.INTERNAL, "internal error")
        finally:
            if session is not None:
                current = self.sessions.get(session.session_id)
                self.iot.detach(session)
                if current is not None and current[0] is session:
                    del self.sessions[session.session_id]
                    if self.uplink is not None and not session.moving:
                        self.uplink.submit("session", session.claims.subject, {
                            "online": False, "kind": session.claims.kind,
                            "sid": session.session_id})
                    if not self.sessions:
                        self._no_sessions.set()
                    if clean and self.store is not None:
                        spawn(self.store.delete(session.session_id))
                if not session.closed:
                    if not session.moving and not clean and self.store is not None:
                        # Half-open link: the client may already have resumed on
                        # another edge; then its rooms must not see it leave.
                        with contextlib.suppress(Exception):
                            async with asyncio.timeout(1.0):
                                cp = await self.store.load(session.session_id)
                            if cp is not None and cp.get("edge") != self.settings.edge_id:
                                session.moving = True
                    session.cleanup()
                stats.connections -= 1
