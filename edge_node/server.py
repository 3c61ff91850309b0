"""The edge's composition root: WebSocket listener, sessions, hub, Redis sync,
registry, ``/metrics`` and ``/healthz`` on the same port (no helper thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

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
    Hello,
    ProtocolError,
    Resumed,
    Welcome,
    encode,
    verify_token,
)

from .config import EdgeSettings
from .hub import Hub, HubSettings
from .metrics import EdgeMetrics
from .outbound import Flusher
from .registry import Registry
from .room_sync import RoomSync
from .session import ClientSession, SessionClose, new_session_id
from .session_store import SessionStore, resume_token, verify_resume_token
from .tasks import spawn

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
        self.decoder = Decoder(settings.limits)
        self.sessions: dict[str, tuple[ClientSession, ServerConnection]] = {}
        self.server: Server | None = None
        self.sync: RoomSync | None = None
        self.registry: Registry | None = None
        self._redis: aioredis.Redis | None = None
        self._flusher: Flusher | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopping = False
        self.port = settings.port

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis (if configured), then listen."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._flusher = Flusher(loop)
        if s.redis_url:
            self.sync = RoomSync(
                s.redis_url, s.edge_id, self.hub, lease_ms=s.lease_ms,
                stream_maxlen=s.stream_maxlen, append_batch=s.append_batch, stats=self.stats,
                edge_ttl=s.heartbeat_ttl, append_linger=s.append_linger,
            )
            try:
                await self.sync.start()
            except (RedisError, OSError) as exc:
                raise RuntimeError(f"cannot reach Redis at {s.redis_url}: {exc}") from exc
            self.hub.sync = self.sync
            self.sync.lag_observer = self.metrics.sync_lag_seconds.observe
        self.server = await serve(
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
        sock = next(iter(self.server.sockets))
        self.port = sock.getsockname()[1]
        if s.redis_url:
            self._redis = aioredis.Redis.from_url(s.redis_url, socket_timeout=5.0)
            self.store = SessionStore(self._redis, s.resume_window)
            url = s.public_url or f"ws://{s.host}:{self.port}"
            self.registry = Registry(
                self._redis, s.edge_id, url=url, region=s.region,
                interval=s.heartbeat_interval, ttl=s.heartbeat_ttl, load=self._load,
            )
            self.registry.start()
        self._housekeeping = loop.create_task(self._housekeep(), name="housekeeping")
        log.info("edge listening", extra={"edge_id": s.edge_id, "port": self.port,
                                          "redis": bool(s.redis_url)})

    async def stop(self) -> None:
        """Close every client with 4100 (go to a neighbour), flush, deregister."""
        self._stopping = True
        if self.server is not None:
            self.server.close(close_connections=False)
        conns = [ws for _, ws in list(self.sessions.values())]

        async def close_one(ws: ServerConnection) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(ErrorCode.SHUTTING_DOWN, "edge shutting down"),
                                       1.5)
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()  # a client that does not answer the close

        # All at once, under one deadline: a slow client must not delay the others.
        await asyncio.gather(*(close_one(ws) for ws in conns))
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 3.0)
        if self._housekeeping:
            self._housekeeping.cancel()
        if self.registry:
            await self.registry.stop()
        if self.sync:
            await self.sync.stop()
        if self._redis:
            await self._redis.aclose()

    def _load(self) -> dict[str, float]:
        return {"connections": self.stats.connections, "rooms": self.stats.rooms}

    async def _housekeep(self) -> None:
        last_cp = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            self.hub.expire_forwarded(now)
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
                f'"connections":{self.stats.connections},"pid":{os.getpid()}}}'
            ).encode()
            if self._stopping:
                return self._response(503, b'{"status":"draining"}', "application/json")
            return self._response(200, body, "application/json")
        if path == "/metrics":
            return self._response(200, self.metrics.render(), _PROM_CT)
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return self._response(404, b"not found: try /healthz, /metrics or a WebSocket\n",
                                  "text/plain")
        return None

    @staticmethod
    def _response(status: int, body: bytes, ctype: str) -> Response:
        reasons = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store")])
        return Response(status, reasons.get(status, ""), headers, body)

    # -- WebSocket sessions -------------------------------------------------

    async def _handshake(self, ws: ServerConnection) -> tuple[Hello, Any]:
        s = self.settings
        try:
            raw = await asyncio.wait_for(ws.recv(), s.handshake_timeout)
        except TimeoutError:
            raise SessionClose(ErrorCode.HANDSHAKE_TIMEOUT, "no HELLO in time") from None
        if isinstance(raw, str):
            raise SessionClose(ErrorCode.BAD_REQUEST, "first frame must be a binary HELLO")
        try:
            frame = self.decoder.decode(raw)
        except ProtocolError as exc:
            raise SessionClose(exc.code, str(exc)) from exc
        if not isinstance(frame, Hello):
            raise SessionClose(ErrorCode.BAD_REQUEST, "first frame must be HELLO")
        if frame.version != PROTOCOL_VERSION:
            raise SessionClose(ErrorCode.UNSUPPORTED_VERSION,
                               f"protocol version {frame.version} not supported; "
                               f"this edge speaks {PROTOCOL_VERSION}")
        try:
            claims = verify_token(frame.token, s.secrets, now=time.time())
        except ProtocolError as exc:
            raise SessionClose(exc.code, str(exc)) from exc
        return frame, claims

    def _parse_resume(self, resume: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        sid, rt, rooms = resume.get("sid"), resume.get("rt"), resume.get("rooms", {})
        if not isinstance(sid, str) or not isinstance(rt, str) or not isinstance(rooms, dict):
            raise SessionClose(ErrorCode.BAD_REQUEST, "resume must be {sid, rt, rooms}")
        out: dict[str, Any] = {}
        for room, v in rooms.items():
            if (not isinstance(room, str) or not room or not isinstance(v, list) or len(v) != 3
                    or not all(type(x) is int and x >= 0 for x in v)):
                raise SessionClose(ErrorCode.BAD_REQUEST,
                                   "resume rooms must map room -> [flags, epoch, seq]")
            out[room] = v
        if len(out) > self.settings.limits.max_rooms_per_connection:
            raise SessionClose(ErrorCode.TOO_MANY_ROOMS, "too many rooms to resume")
        return sid, rt, out

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
        }

    async def _checkpoint_all(self) -> None:
        if self.store is None:
            return
        items = [(sid, self._checkpoint_data(s)) for sid, (s, _ws) in self.sessions.items()
                 if not s.closed]
        self.stats.checkpoints += await self.store.save_many(items)

    async def _handle(self, ws: ServerConnection) -> None:
        stats = self.stats
        session: ClientSession | None = None
        clean = False
        try:
            try:
                hello, claims = await self._handshake(ws)
                sid, resumed, invalid = new_session_id(), False, ""
                rooms: dict[str, Any] = {}
                if hello.resume is not None:
                    rsid, rt, rooms = self._parse_resume(hello.resume)
                    if verify_resume_token(self.settings.secrets, rsid, claims.subject, rt):
                        sid, resumed = rsid, True
                        cp = await self.store.load(sid) if self.store is not None else None
                        if cp is None or cp.get("sub") != claims.subject:
                            invalid = "session_expired"
                        elif self.sync is not None and isinstance(cp.get("edge"), str):
                            # The client left its previous edge: if that edge is dead,
                            # move its rooms now rather than when its leases lapse.
                            self.sync.suspect(cp["edge"])
                    else:
                        invalid = "resume_rejected"
            except SessionClose as exc:
                stats.errors[exc.code] += 1
                await ws.close(exc.code, exc.reason)
                return
            assert self._flusher is not None and ws.transport is not None
            old = self.sessions.get(sid)
            if old is not None:  # the same session on a connection that is now stale
                old[0].closed = True
                spawn(old[1].close(ErrorCode.SESSION_TAKEN_OVER, "session resumed elsewhere"))

            def slow() -> None:
                spawn(ws.close(ErrorCode.SLOW_CONSUMER, "send queue full: slow consumer"))

            session = ClientSession(
                session_id=sid, claims=claims, transport=ws.transport, flusher=self._flusher,
                hub=self.hub, settings=self.settings, decoder=self.decoder, stats=stats,
                on_slow=slow,
            )
            if old is not None:
                old[0].cleanup()
            self.sessions[sid] = (session, ws)
            stats.connections += 1
            stats.connections_total += 1
            lim = self.settings.limits
            session.send(encode(Welcome(sid, self.settings.edge_id, {
                "version": PROTOCOL_VERSION,
                "ping_interval": self.settings.ping_interval,
                "max_frame_bytes": lim.max_frame_bytes,
                "max_rooms": lim.max_rooms_per_connection,
                "neighbours": [],
                "region": self.settings.region,
                "resume_token": resume_token(self.settings.secrets[0], sid, claims.subject),
                "resume_window": self.settings.resume_window,
                "resumed": resumed and not invalid,
            })))
            if hello.resume is not None:
                await self._resume(session, rooms, invalid)
            if self.store is not None:
                await self.store.save_many([(sid, self._checkpoint_data(session))])
            try:
                async for raw in ws:
                    await session.handle(raw)
                clean = ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
            except SessionClose as exc:
                stats.errors[exc.code] += 1
                session.out.flush()
                await ws.close(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("session failed")
            stats.errors[ErrorCode.INTERNAL] += 1
            with contextlib.suppress(Exception):
                await ws.close(ErrorCode.INTERNAL, "internal error")
        finally:
            if session is not None:
                current = self.sessions.get(session.session_id)
                if current is not None and current[0] is session:
                    del self.sessions[session.session_id]
                    if clean and self.store is not None:
                        spawn(self.store.delete(session.session_id))
                if not session.closed:
                    session.cleanup()
                stats.connections -= 1
