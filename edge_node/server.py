"""The edge's composition root: WebSocket listener, QUIC/WebTransport listener,
sessions, hub, Redis sync, registry, uplink, IoT, and the collaborators it owns:
:class:`~edge_node.transports.http.HttpEndpoints` (``/metrics`` and ``/healthz`` on the
WebSocket port, no helper thread), :class:`~edge_node.sessions.admission.Admission`,
:class:`~edge_node.sessions.checkpoints.Checkpointer` and
:class:`~edge_node.runtime.housekeeping.Housekeeper` (the periodic work).

The session loop (:meth:`EdgeServer.serve_conn`: HELLO, resume
(:mod:`edge_node.sessions.resume`), checkpoint, frames, cleanup) is written once over
:class:`~edge_node.transports.connection.SessionConn`; WebSocket and QUIC connections
are adapted to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Decoder,
    Delivery,
    ErrorCode,
    Neighbours,
    Welcome,
    encode,
)
from edge_node.config import EdgeSettings
from edge_node.fanout.game_metrics import register_game_metrics
from edge_node.fanout.games import GameHost
from edge_node.fanout.hub import Hub, HubSettings
from edge_node.functions.wiring import attach_functions
from edge_node.games.loader import HandlerRegistry, parse_specs
from edge_node.iot.downlink import DownlinkConsumer
from edge_node.iot.service import IotService, iot_settings
from edge_node.neighbours.geo import rank_edges
from edge_node.neighbours.registry import Registry, is_draining, live_edges
from edge_node.redis_io import conn as redis_conn
from edge_node.runtime.housekeeping import Housekeeper
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.runtime.tasks import spawn
from edge_node.sessions.admission import Admission
from edge_node.sessions.checkpoints import Checkpointer
from edge_node.sessions.handshake import read_hello
from edge_node.sessions.resume import check_resume, rejoin
from edge_node.sessions.session import ClientSession, SessionClose
from edge_node.sessions.session_store import SessionStore, resume_token
from edge_node.sessions.sweep import SessionSweep
from edge_node.store.memory import MemoryBackend, MemoryRoomStore
from edge_node.store.redis_sync import RoomSync
from edge_node.transports.connection import ConnectionGone, SessionConn, WsConn
from edge_node.transports.http import HttpEndpoints
from edge_node.transports.outbound import Flusher
from edge_node.transports.tls import CertReloader, ws_tls
from edge_node.uplink import ShardCountMismatch, Uplink, UplinkSettings, claim_shard_count

if TYPE_CHECKING:
    from edge_node.transports.quic import QuicListener

__all__ = ["EdgeServer"]

log = logging.getLogger("edge_node.server")


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
        self._stopping = False
        self.draining = False
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self.neighbours: list[tuple[str, str]] = []  # (edge id, url), best first
        self.checkpoints = Checkpointer(settings.edge_id, self.hub, self.stats, self.sessions)
        self.admission = Admission(self.stats, settings.connect_rate, settings.max_connections,
                                   self.closing)
        self.http = HttpEndpoints(settings.edge_id, self.metrics, self.admission)
        self.sweep = SessionSweep(settings.message_timeout)
        self.housekeeper = Housekeeper(
            self._tick, self._send_status, self._refresh_neighbours,
            self.checkpoints.save_all, settings.heartbeat_interval, settings.checkpoint_interval)
        self._cpu_mark = (time.monotonic(), time.process_time())
        #: Set when an operator asked for a drain through the origin (admin API); the
        #: runner then drains exactly as on SIGTERM.
        self.drain_requested = asyncio.Event()
        self.port = settings.port
        self.hub.room_delivery = tuple((p, Delivery(v)) for p, v in settings.room_delivery)
        self.hub.presence_news.grace.grace = settings.presence_grace
        if settings.room_handlers:
            self.hub.games = GameHost(self.hub, HandlerRegistry(parse_specs(
                list(settings.room_handlers))), secrets=settings.secrets,
                snapshot_ttl=max(600.0, 2 * settings.resume_window))
            register_game_metrics(self.metrics, self.hub.games)
        self.iot = IotService(iot_settings(settings), self.hub, settings.edge_id)
        self.iot.register_metrics(self.metrics.registry)
        self.functions = attach_functions(settings, self.hub, self.iot, self.metrics.registry)
        self.downlink: DownlinkConsumer | None = None
        self.quic: QuicListener | None = None
        self.quic_handshakes = 0
        self.tls: CertReloader | None = None  # TLS of the WebSocket port (wss://)

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis (if configured), then listen."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._flusher = Flusher(loop, s.write_delay, s.write_interval, self.metrics.stats)
        self.tls = ws_tls(s, self.metrics.registry)  # first: a bad certificate fails fast
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
            self.http.add_pages(self.quic.pages, self.quic.page)
        try:
            self.server = await self._serve_ws()
        except BaseException:
            if self.quic is not None:
                self.quic.stop()
            raise
        sock = next(iter(self.server.sockets))
        self.port = sock.getsockname()[1]
        self.ws_url = s.public_url or f"{s.ws_scheme}://{s.host}:{self.port}"
        if s.redis_url:
            # Bounded and blocking (see RoomSync): storms queue instead of failing.
            self._redis = redis_conn.connect(s.redis_url, max_connections=64,
                                             blocking_pool=True, socket_timeout=5.0)
            self.store = self.checkpoints.store = SessionStore(self._redis, s.resume_window)
            self.registry = Registry(
                self._redis, s.edge_id, url=self.ws_url, region=s.region,
                interval=s.heartbeat_interval, ttl=s.heartbeat_ttl, load=self._load,
                on_control=self._on_control,
            )
            self.registry.start()
        self.housekeeper.start()
        log.info("edge listening", extra={"edge_id": s.edge_id, "port": self.port,
                                          "redis": bool(s.redis_url),
                                          "max_connections": self.admission.max_connections})

    async def _serve_ws(self) -> Server:
        s = self.settings
        return await serve(
            self._handle,
            s.host,
            s.port,
            process_request=self.http.process_request, compression=None,
            ssl=self.tls.context if self.tls is not None else None,
            max_size=s.limits.max_frame_bytes + 1024, max_queue=64,
            ping_interval=s.ping_interval, ping_timeout=s.ping_timeout,
            open_timeout=s.handshake_timeout, close_timeout=1.0, backlog=s.backlog,
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
        self.housekeeper.stop()
        if self.downlink is not None:
            await self.downlink.stop()
        if self.hub.games is not None:
            self.hub.games.close()
        if self.functions is not None:
            self.functions.close()
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
            "draining": int(self.closing()),
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

    def _tick(self, now: float) -> None:
        """The housekeeper's frequent turn: rooms and games, and (once a second) the
        connections that trickle a message (closed with 4008) and those whose token
        expired without a REFRESH (closed with 4402)."""
        self.hub.tick(now)
        for certs in (self.tls, self.quic):  # a changed certificate: new handshakes use it
            if certs is not None:
                certs.poll(now)
        for sid, code, reason in self.sweep.due(self.sessions, now, time.time()):
            _session, conn = self.sessions[sid]
            self.stats.errors[code] += 1
            log.warning("closing a connection: %s", reason,
                        extra={"session": sid, "code": code})
            spawn(self._close_conn(conn, code, reason))

    @staticmethod
    async def _close_conn(conn: SessionConn, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(code, reason), 2.0)
        conn.abort()

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

    def closing(self) -> bool:
        """Draining or stopping: new connections are refused, ``/healthz`` says draining."""
        return self.draining or self._stopping

    def admit(self) -> float:
        """0 to admit a new connection (any transport), else seconds the client should
        wait: see :class:`~edge_node.sessions.admission.Admission`."""
        return self.admission.admit()

    def _send_status(self) -> None:
        """The edge's periodic status record for the origin (while the uplink runs)."""
        if self.uplink is not None:
            self.uplink.submit("edge_status", self.settings.edge_id, {
                "connections": self.stats.connections, "rooms": self.stats.rooms,
                "uplink_backlog": self.uplink.backlog, "breaker": self.uplink.breaker_state,
                "draining": self.draining})

    # -- sessions ---------------------------------------------------------

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
                resume = await check_resume(hello.resume, claims, self.settings, self.store,
                                            self.sync, self.metrics)
                sid, attempt = resume.sid, resume.attempt
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
                "resumed": resume.resumed and not resume.invalid,
                "transport": conn.transport_name,
                **({"quic_url": self.quic.url} if self.quic is not None else {}),
                "ws_url": self.ws_url,
            })))
            if self.uplink is not None:
                self.uplink.submit("session", claims.subject, {
                    "online": True, "kind": claims.kind, "sid": sid})
            self.iot.attach(session)
            if hello.resume is not None:
                await rejoin(session, resume.rooms, resume.invalid, self.hub, stats)
            if not await self.checkpoints.claim(session):  # a newer connection holds it
                session.moving = True
                await conn.close(ErrorCode.SESSION_TAKEN_OVER, "a newer connection holds it")
                return
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
                    session.cleanup(lost=not clean)
                stats.connections -= 1
